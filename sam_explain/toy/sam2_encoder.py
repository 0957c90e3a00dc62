"""The toy SAM 2's image encoder: the toy SAM's encoder, plus the two high-resolution feature levels
that SAM 2's mask decoder adds to its upscaling.

SAM 2's image encoder is Hiera, a hierarchical ViT, with an FPN neck. For a 1024 x 1024 input it
gives the decoder three levels, each with C = 256 channels: the image embedding at stride 16 (64 x 64)
and two finer maps at stride 8 (128 x 128) and stride 4 (256 x 256). The two finer ones are a 1 x 1
lateral conv of Hiera's first two stages, with no top-down path from the coarser levels
(``fpn_top_down_levels`` leaves them out); the decoder takes them down to C/4 and C/8 channels with
its own 1 x 1 convs ``conv_s1`` / ``conv_s0`` and adds them inside its upscaling. The toy image is
256 x 256 pixels and its embedding grid 64 x 64, so the toy's "stride 4" level (4H x 4W) is the pixel
grid itself and its "stride 8" level (2H x 2W) half of it:

  image        S x 3 x H0 x W0 = S x 3 x 256 x 256        pixels in [0, 1], normalised
  trunk        the toy SAM's encoder (encoder.py): 4 x 4 patches, residual dilated convs, neck
               -> image embedding                         S x C x H x W    = S x 256 x 64 x 64
  level s0     3 x 3 conv 3 -> D0, stride 1               S x D0 x 4H x 4W = S x 32 x 256 x 256
               residual 3 x 3 conv (as the trunk's)      S x D0 x 4H x 4W
               1 x 1 conv D0 -> C (the FPN's lateral)     S x C x 4H x 4W  = S x 256 x 256 x 256
  level s1     2 x 2 conv D0 -> D1, stride 2 (from s0's residual features)
                                                          S x D1 x 2H x 2W = S x 64 x 128 x 128
               residual 3 x 3 conv                        S x D1 x 2H x 2W
               1 x 1 conv D1 -> C                         S x C x 2H x 2W  = S x 256 x 128 x 128

The two levels are local: receptive fields of 5 pixels (s0) and 10 pixels (s1), where Hiera's first
stages see a window of 8 x 8 tokens; what lies farther away reaches the masks through the decoder's
two-way transformer and its upscaling of the embedding. In Hiera the finer stages feed the coarser
ones; here the trunk is the toy SAM's, which computes the embedding from the pixels on its own, so
that its trained weights carry over unchanged: the high-resolution branch runs beside it and feeds
only the decoder's skips. The decoder's ``conv_s0`` (C -> C/8) and ``conv_s1`` (C -> C/4) then give
feat_s0 S x 32 x 256 x 256 and feat_s1 S x 64 x 128 x 128, SAM 2.1's shapes.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .encoder import DILATIONS, PATCH_SIZE, ResidualConv, ToyImageEncoder

HR_DIMS = (32, 64)  # D0, D1: the channels of the stride-4 and stride-8 branches (before the 1 x 1 convs to C)


class ToySam2ImageEncoder(ToyImageEncoder):
    """The toy SAM's image encoder (same modules, same state-dict keys) and a high-resolution branch
    (``hr_*``) giving SAM 2's stride-4 and stride-8 levels; see the module docstring."""

    def __init__(
        self,
        image_size: int = 256,
        patch_size: int = PATCH_SIZE,
        dim: int = 96,
        out_chans: int = 256,
        dilations: tuple = DILATIONS,
        context_size: int = 0,
        hr_dims: Tuple[int, int] = HR_DIMS,
    ) -> None:
        """Arguments: those of ``ToyImageEncoder`` (the trunk), and
          hr_dims: (D0, D1), the channels of the stride-4 (4H x 4W) and stride-8 (2H x 2W) branches.
        The branch needs the 4-pixel patch: its stride-4 level is then the pixel grid."""
        if patch_size != PATCH_SIZE:
            raise ValueError(f"patch_size: expected {PATCH_SIZE} (the stride-4 level 4H x 4W is then the pixel grid "
                             f"H0 x W0), got {patch_size}")
        if len(hr_dims) != 2 or min(hr_dims) < 1:
            raise ValueError(f"hr_dims: expected (D0, D1), two channel counts >= 1, got {hr_dims}")
        super().__init__(image_size=image_size, patch_size=patch_size, dim=dim, out_chans=out_chans,
                         dilations=dilations, context_size=context_size)
        d0, d1 = hr_dims
        self.hr_dims = (int(d0), int(d1))
        self.hr_stem = nn.Conv2d(3, d0, kernel_size=3, padding=1)
        self.hr_block0 = ResidualConv(d0, 1)
        self.hr_neck0 = nn.Conv2d(d0, out_chans, kernel_size=1)
        self.hr_down = nn.Conv2d(d0, d1, kernel_size=2, stride=2)
        self.hr_block1 = ResidualConv(d1, 1)
        self.hr_neck1 = nn.Conv2d(d1, out_chans, kernel_size=1)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """images: S x 3 x H0 x W0, float in [0, 1] -> (image embedding S x C x H x W,
        backbone_s0 S x C x 4H x 4W, backbone_s1 S x C x 2H x 2W), H = H0 / 4: the three levels SAM 2's
        decoder side takes, before ``conv_s0`` / ``conv_s1``."""
        embedding = super().forward(images)  # S x C x H x W, the toy SAM's trunk
        pixels = (images - self.pixel_mean) / self.pixel_std  # S x 3 x H0 x W0
        x0 = self.hr_block0(self.hr_stem(pixels))  # S x D0 x H0 x W0 = S x D0 x 4H x 4W
        x1 = self.hr_block1(self.hr_down(x0))  # S x D1 x 2H x 2W
        return embedding, self.hr_neck0(x0), self.hr_neck1(x1)  # S x C x H x W, S x C x 4H x 4W, S x C x 2H x 2W
