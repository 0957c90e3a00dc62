"""A small image encoder for the toy scenes: H0 x W0 x 3 pixels -> SAM's image embedding, C x H x W.

SAM's encoder is a ViT-H/L/B on 1024 x 1024 images (hundreds of MB). The toy scenes are flat
colours and straight or round edges, so a few convolutions are enough:

  image        S x 3 x 256 x 256            pixels in [0, 1]
  patchify     4 x 4 patches, stride 4      S x D x 64 x 64   (D = 96; like ViT's patch embedding, no information lost)
  blocks       4 residual 3 x 3 convs, dilation 1, 2, 4, 8   S x D x 64 x 64   (receptive field about 120 px)
  neck         1 x 1 conv, LayerNorm2d      S x C x 64 x 64   (C = 256, H = W = 64: SAM's shape)

Only the shape of its output is SAM's; everything downstream (prompt encoder, decoder) is SAM's
architecture at SAM's sizes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.common import LayerNorm2d

PATCH_SIZE = 4  # pixels per embedding cell: an H0 x W0 image gives an H0/4 x W0/4 grid


class ResidualConv(nn.Module):
    """x + conv(gelu(norm(x))): S x D x H x W -> S x D x H x W."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.gelu(self.norm(x)))


class ToyImageEncoder(nn.Module):
    def __init__(
        self,
        image_size: int = 256,
        patch_size: int = PATCH_SIZE,
        dim: int = 96,
        out_chans: int = 256,
        dilations: tuple = (1, 2, 4, 8),
    ) -> None:
        """Arguments:
          image_size: H0 = W0, the toy image's side in pixels (256).
          patch_size: pixels per embedding cell; H = image_size / patch_size (64).
          dim: D, the hidden channels.
          out_chans: C, the embedding channels (256, as SAM).
          dilations: one residual 3 x 3 conv per entry.
        """
        super().__init__()
        self.image_size = image_size
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.Sequential(*(ResidualConv(dim, d) for d in dilations))
        self.neck = nn.Sequential(nn.Conv2d(dim, out_chans, kernel_size=1), LayerNorm2d(out_chans))
        self.register_buffer("pixel_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: S x 3 x H0 x W0, float in [0, 1] -> S x C x H x W."""
        x = (images - self.pixel_mean) / self.pixel_std
        x = self.patch_embed(x)  # S x D x H x W
        x = self.blocks(x)  # S x D x H x W
        return self.neck(x)  # S x C x H x W
