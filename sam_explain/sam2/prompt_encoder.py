"""SAM 2's prompt encoder: SAM's, whose point path also takes the box corners (labels 2 and 3).

  points   coords B x N x 2 (x, y in input-image pixels), labels B x N:
           1 foreground, 0 background, -1 padding, 2 box top-left, 3 box bottom-right
  boxes    B x 4 (x0, y0, x1, y1), two corner tokens each (as in SAM)
  masks    B x 1 x 4H x 4W low-res mask logits

  sparse   B x N' x C, with SAM's rule: N' = N + 1 without boxes (a padding point is appended),
           N + 2 with points and boxes, 2 with a box alone, 0 with neither
  dense    B x C x H x W

SAM 2's image predictor never uses ``boxes``: it passes a box as two points labelled 2 and 3,
before the clicks, and ``boxes=None``; so the padding point is appended even with a box, and one
box and N clicks give N' = 2 + N + 1 (SAM: N + 2). A corner given as a point (label 2 or 3) and a
corner given through ``boxes`` are embedded the same way: position encoding + point_embeddings[2]
or [3]. Weights, keys and everything else are SAM's.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from einops import rearrange

from ..modeling.prompt_encoder import PositionEmbeddingRandom
from ..modeling.prompt_encoder import PromptEncoder as SamPromptEncoder
from ..shapes.check import expect_labels

__all__ = ["PositionEmbeddingRandom", "PromptEncoder", "POINT_LABELS"]

POINT_LABELS = {-1: "padding", 0: "background", 1: "foreground", 2: "box top-left", 3: "box bottom-right"}


class PromptEncoder(SamPromptEncoder):
    """SAM's PromptEncoder (same arguments and weights) with SAM 2's point labels 2 and 3."""

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """B x N x 2 coords, B x N labels in {-1, 0, 1, 2, 3} -> B x (N + pad) x C."""
        pe = super()._embed_points(points, labels, pad)  # labels -1, 0, 1 as in SAM: B x (N + pad) x C
        if pad:  # the label of the appended padding point, -1, as SAM's code appends it
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)  # B x (N+1)
        labels = rearrange(labels, "b n -> b n 1")  # B x (N + pad) x 1, against pe's B x (N + pad) x C
        pe = torch.where(labels == 2, pe + self.point_embeddings[2].weight.float(), pe)  # box top-left
        pe = torch.where(labels == 3, pe + self.point_embeddings[3].weight.float(), pe)  # box bottom-right
        return pe

    def check_inputs(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> int:
        """SAM's checks, with SAM 2's labels: -1, 0, 1, 2 or 3. Returns B. Raises ShapeError."""
        if isinstance(points, (tuple, list)) and len(points) == 2 and isinstance(points[1], torch.Tensor):
            coords, labels = points
            expect_labels("PromptEncoder", "point labels", labels, tuple(POINT_LABELS),
                          "1 (foreground), 0 (background), -1 (padding), 2 (box top-left) or 3 (box bottom-right)")
            # SAM's checks (shapes, devices, finite values) know labels -1, 0 and 1 only: show them the
            # corners as foreground points
            points = (coords, labels.clamp(max=1))
        return super().check_inputs(points, boxes, masks)
