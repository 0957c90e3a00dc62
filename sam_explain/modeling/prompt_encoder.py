"""SAM's prompt encoder: points, boxes and masks -> sparse and dense embeddings.

  points   coords B x N x 2 (x, y in input-image pixels), labels B x N (1 fg, 0 bg, -1 padding)
  boxes    B x 4 (x0, y0, x1, y1), two corner tokens each
  masks    B x 1 x 4H x 4W low-res mask logits (256 x 256 in SAM)

  sparse   B x N' x C, N' = N + 1 (points alone: a padding point is appended),
           N + 2 (points and a box), 2 (a box alone), 0 (neither)
  dense    B x C x H x W: the downscaled mask, or no_mask_embed at every position
  get_dense_pe()  1 x C x H x W, the positional encoding of every grid cell
"""

import math
from typing import Any, Optional, Tuple, Type

import torch
from einops import rearrange, repeat
from torch import nn

from ..shapes.check import ShapeError, expect_finite, expect_labels, expect_like_weights, expect_shape
from .common import HookPoint, LayerNorm2d


class PromptEncoder(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        """Encodes prompts for the mask decoder.

        Arguments:
          embed_dim: C, the channels of every prompt embedding.
          image_embedding_size: (H, W), the image-embedding grid (64, 64 in SAM).
          input_image_size: the padded input image, (1024, 1024) in SAM; point and
            box coordinates are in its pixels.
          mask_in_chans: hidden channels of the mask downscaling (16 in SAM).
          activation: activation of the mask downscaling (GELU in SAM).
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right
        self.num_point_embeddings: int = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),  # B x 1 x 4H x 4W -> B x 4 x 2H x 2W
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),  # -> B x 16 x H x W
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),  # -> B x C x H x W
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

        self.hook_sparse = HookPoint()
        self.hook_dense = HookPoint()

    def get_dense_pe(self) -> torch.Tensor:
        """The positional encoding of the H x W grid: 1 x C x H x W."""
        pe = self.pe_layer(self.image_embedding_size)  # C x H x W
        return rearrange(pe, "c h w -> 1 c h w").to(self._weight_dtype())

    def _weight_dtype(self) -> torch.dtype:
        return self.point_embeddings[0].weight.dtype

    def _get_device(self) -> torch.device:
        return self.point_embeddings[0].weight.device

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """B x N x 2 coords, B x N labels -> B x (N + pad) x C."""
        points = points + 0.5  # the centre of the pixel
        if pad:
            # A padding point (label -1) stands where a box would: the decoder always sees N' >= 1.
            padding_point = torch.zeros((points.shape[0], 1, 2), device=points.device)
            padding_label = -torch.ones((labels.shape[0], 1), device=labels.device)
            points = torch.cat([points, padding_point], dim=1)  # B x (N+1) x 2
            labels = torch.cat([labels, padding_label], dim=1)  # B x (N+1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)  # B x N x C
        labels = rearrange(labels, "b n -> b n 1")
        # padding: no position at all, only not_a_point_embed; otherwise position + label embedding
        pe = torch.where(labels == -1, self.not_a_point_embed.weight.float(), pe)
        pe = torch.where(labels == 0, pe + self.point_embeddings[0].weight.float(), pe)
        pe = torch.where(labels == 1, pe + self.point_embeddings[1].weight.float(), pe)
        return pe

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """B x 4 boxes -> B x 2 x C, one token per corner."""
        boxes = boxes + 0.5  # the centre of the pixel
        corners = rearrange(boxes, "b (corner xy) -> b corner xy", corner=2, xy=2)  # B x 2 x 2
        pe = self.pe_layer.forward_with_coords(corners, self.input_image_size)  # B x 2 x C
        corner_embed = torch.cat(
            [self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0
        ).float()  # 2 x C
        return pe + corner_embed

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """B x 1 x 4H x 4W -> B x C x H x W."""
        return self.mask_downscaling(masks)

    def check_inputs(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> int:
        """Validate the prompts; return B, the number of prompt sets. Raises ShapeError."""
        where = "PromptEncoder"
        B: Optional[int] = None
        source = ""
        if points is not None:
            if not (isinstance(points, (tuple, list)) and len(points) == 2):
                raise ShapeError(
                    f"{where}: points must be a pair (coords B x N x 2, labels B x N), "
                    f"got {type(points).__name__}"
                    + (f" of length {len(points)}" if isinstance(points, (tuple, list)) else "")
                )
            coords, labels = points
            if labels is None:
                raise ShapeError(f"{where}: points need labels B x N (1 foreground, 0 background, -1 padding), got None")
            sizes = expect_shape(where, "point coords", coords, "B N 2")
            B, N = sizes["B"], sizes["N"]
            source = "point coords"
            expect_shape(where, "point labels", labels, "B N", B=B, N=N,
                         hint="one label per point, from point coords")
            if labels.device != coords.device:
                raise ShapeError(f"{where}: point labels are on {labels.device}, point coords on {coords.device}")
            expect_finite(where, "point coords", coords)
            expect_labels(where, "point labels", labels, (-1, 0, 1),
                          "1 (foreground), 0 (background) or -1 (padding)")
        if boxes is not None:
            sizes = expect_shape(where, "boxes", boxes, "B 4", B=B,
                                 hint=f"B = {B} from {source}" if B is not None else "x0, y0, x1, y1 per prompt set")
            if B is None:
                B, source = sizes["B"], "boxes"
            expect_finite(where, "boxes", boxes)
        if masks is not None:
            h4, w4 = self.mask_input_size
            sizes = expect_shape(where, "masks", masks, "B 1 4H 4W", B=B, **{"4H": h4, "4W": w4},
                                 hint=f"B = {B} from {source}" if B is not None else "low-res mask logits")
            if B is None:
                B = sizes["B"]
            if not masks.is_floating_point():
                raise ShapeError(f"{where}: masks must be low-res mask logits, a floating-point tensor B x 1 x 4H x 4W "
                                 f"(a previous low_res output), got dtype {masks.dtype}")
            expect_like_weights(where, "masks", masks, self.mask_downscaling[0].weight, owner="prompt encoder")
            expect_finite(where, "masks", masks)
        for name, t in (("point coords", points[0] if points is not None else None),
                        ("boxes", boxes), ("masks", masks)):
            if t is not None and t.device != self._get_device():
                raise ShapeError(f"{where}: {name} is on {t.device}, the prompt encoder on {self._get_device()}")
        return 1 if B is None else B

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embed B prompt sets.

        Arguments:
          points: (coords B x N x 2, labels B x N) or None.
          boxes: B x 4 or None.
          masks: B x 1 x 4H x 4W or None.

        Returns:
          sparse: B x N' x C (N' = N + 1, N + 2, 2 or 0; see the module docstring).
          dense: B x C x H x W.
        """
        bs = self.check_inputs(points, boxes, masks)
        dtype = self._weight_dtype()
        sparse = torch.empty((bs, 0, self.embed_dim), device=self._get_device())  # B x 0 x C
        if points is not None:
            coords, labels = points
            point_embeddings = self._embed_points(coords, labels, pad=(boxes is None))  # B x (N [+1]) x C
            sparse = torch.cat([sparse, point_embeddings], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)  # + B x 2 x C
        sparse = self.hook_sparse(sparse.to(dtype))  # B x N' x C

        if masks is not None:
            dense = self._embed_masks(masks)  # B x C x H x W
        else:
            h, w = self.image_embedding_size
            dense = repeat(self.no_mask_embed.weight, "1 c -> b c h w", b=bs, h=h, w=w)  # B x C x H x W
        dense = self.hook_dense(dense)
        return sparse, dense


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of (x, y) through a fixed random 2 x C/2 Gaussian matrix.

    A point in [0, 1]^2 maps to [sin(2 pi (2p - 1) G), cos(2 pi (2p - 1) G)], C channels.
    The matrix is a buffer: it is saved in SAM's checkpoints and must be loaded.
    The encoding is computed in float32 whatever the module's dtype.
    """

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix",
            scale * torch.randn((2, num_pos_feats)),
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """... x 2 coordinates in [0, 1] -> ... x C."""
        coords = 2 * coords - 1  # [0, 1] -> [-1, 1]
        coords = coords @ self.positional_encoding_gaussian_matrix.float()  # ... x 2 -> ... x C/2
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)  # ... x C

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        """The encoding of every cell centre of an h x w grid: C x h x w."""
        h, w = size
        device: Any = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h  # h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w  # w
        grid = torch.stack(
            [repeat(x, "w -> h w", h=h), repeat(y, "h -> h w", w=w)], dim=-1
        )  # h x w x 2, (x, y) per cell
        return rearrange(self._pe_encoding(grid), "h w c -> c h w")  # C x h x w

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: Tuple[int, int]
    ) -> torch.Tensor:
        """B x N x 2 pixel coordinates (x, y) in an image of ``image_size`` = (height, width) -> B x N x C."""
        height, width = image_size
        coords = coords_input.to(torch.float)
        coords = torch.stack([coords[..., 0] / width, coords[..., 1] / height], dim=-1)  # to [0, 1]
        return self._pe_encoding(coords)  # B x N x C
