"""Prompts: B prompt sets of points, boxes and masks (``Prompts``), a deterministic example of
them (``example_prompts``), and one call through the prompt encoder and the decoder (``run_decoder``).

The command line, the notebooks and the tests share these, so that "one click on the default
inputs" means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn


@dataclass
class Prompts:
    """B prompt sets, in the input-image pixels of the prompt encoder."""

    points: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # (B x N x 2, B x N)
    boxes: Optional[torch.Tensor] = None  # B x 4
    masks: Optional[torch.Tensor] = None  # B x 1 x 4H x 4W

    @property
    def batch(self) -> int:
        for t in (self.points[0] if self.points else None, self.boxes, self.masks):
            if t is not None:
                return t.shape[0]
        return 1

    def to(self, device: torch.device | str) -> "Prompts":
        pts = None if self.points is None else tuple(t.to(device) for t in self.points)
        return Prompts(
            points=pts,
            boxes=None if self.boxes is None else self.boxes.to(device),
            masks=None if self.masks is None else self.masks.to(device),
        )


def example_prompts(
    points: int = 1,
    box: bool = False,
    mask: bool = False,
    batch: int = 1,
    image_size: Tuple[int, int] = (1024, 1024),
    mask_size: Tuple[int, int] = (256, 256),
    seed: int = 0,
) -> Prompts:
    """A deterministic example: ``batch`` prompt sets, each with ``points`` clicks
    (the first foreground, then alternating background/foreground), an optional box
    around them, and an optional mask prompt (a disc of positive logits)."""
    if points < 0 or batch < 1:
        raise ValueError(f"need points >= 0 and batch B >= 1, got points = {points}, B = {batch}")
    gen = torch.Generator().manual_seed(seed)
    height, width = image_size
    pts = None
    if points:
        coords = torch.rand(batch, points, 2, generator=gen) * 0.5 + 0.25  # the middle of the image
        coords = coords * torch.tensor([width, height])  # B x N x 2, (x, y) pixels
        labels = torch.ones(batch, points, dtype=torch.int64)
        labels[:, 1::2] = 0  # B x N: 1, 0, 1, 0, ...
        pts = (coords, labels)
    boxes = None
    if box:
        centre = torch.rand(batch, 2, generator=gen) * 0.4 + 0.3
        half = torch.rand(batch, 2, generator=gen) * 0.15 + 0.1
        boxes = torch.cat([centre - half, centre + half], dim=1) * torch.tensor([width, height] * 2)  # B x 4
    masks = None
    if mask:
        mh, mw = mask_size
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, mh), torch.linspace(-1, 1, mw), indexing="ij")
        disc = 8.0 * (0.25 - (xx**2 + yy**2)).clamp(min=-1.0)  # positive inside radius 0.5
        masks = disc.expand(batch, 1, mh, mw).clone()  # B x 1 x 4H x 4W
    return Prompts(points=pts, boxes=boxes, masks=masks)


@torch.no_grad()
def run_decoder(
    prompt_encoder: nn.Module,
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    prompts: Prompts,
    multimask_output: bool = True,
):
    """Prompt encoder, then decoder: returns (masks, iou_pred, sparse, dense)."""
    sparse, dense = prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=prompts.masks)
    masks, iou_pred = decoder(
        image_embeddings=image_embeddings,
        image_pe=prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
    )
    return masks, iou_pred, sparse, dense
