"""A small image encoder for the toy scenes: H0 x W0 x 3 pixels -> SAM's image embedding, C x H x W.

SAM's encoder is a ViT-H/L/B on 1024 x 1024 images (hundreds of MB). The toy scenes are flat
colours and straight or round edges, so a few convolutions are enough:

  image        S x 3 x 256 x 256            pixels in [0, 1]
  patchify     4 x 4 patches, stride 4      S x D x 64 x 64   (D = 96; like ViT's patch embedding, no information lost)
  blocks       4 residual 3 x 3 convs, dilation 1, 2, 4, 8   S x D x 64 x 64   (receptive field about 120 px)
  neck         1 x 1 conv, LayerNorm2d      S x C x 64 x 64   (C = 256, H = W = 64: SAM's shape)

Optionally (``context_size`` = h0, the ``quick`` schedule's encoder) a context branch sees the whole
image at one fixed size, whatever H0 is, and is added to the patches before the blocks:

  resize       area average to h0 x h0      S x 3 x 64 x 64   (h0 = 64)
  patchify     4 x 4 patches, stride 4      S x D x 16 x 16
  blocks       4 residual 3 x 3 convs, dilation 1, 2, 4, 8   S x D x 16 x 16   (the whole image)
  upsample     bilinear to H x W            S x D x 64 x 64   (added to the patchified image)

Training runs on small images first; without the branch, an encoder trained at 64 px sees a whole
64 px image through its dilated convs, but only half of a 256 px one, and what it learnt carries
over to 256 px only in part (docs/toy_model.md measures it). The branch sees the same picture at
every size, so the blocks after it can stay local (``quick``: dilations 1, 2).

Only the shape of its output is SAM's; everything downstream (prompt encoder, decoder) is SAM's
architecture at SAM's sizes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.common import LayerNorm2d

PATCH_SIZE = 4  # pixels per embedding cell: an H0 x W0 image gives an H0/4 x W0/4 grid
DILATIONS = (1, 2, 4, 8)  # the residual convs' dilations: receptive field 31 cells


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
        dilations: tuple = DILATIONS,
        context_size: int = 0,
    ) -> None:
        """Arguments:
          image_size: H0 = W0, the toy image's side in pixels (256).
          patch_size: pixels per embedding cell; H = image_size / patch_size (64).
          dim: D, the hidden channels.
          out_chans: C, the embedding channels (256, as SAM).
          dilations: one residual 3 x 3 conv per entry.
          context_size: 0, or h0: a context branch that sees the image resized to h0 x h0 pixels
            whatever H0 is, so that it computes the same features at every image size (its residual
            convs, on an h0/4 x h0/4 grid, have the default dilations 1, 2, 4, 8).
        """
        super().__init__()
        if context_size and (context_size < patch_size or context_size % patch_size):
            raise ValueError(f"context_size: expected 0 (no context branch) or h0, a multiple of the patch "
                             f"({patch_size} px), got {context_size}")
        self.image_size = image_size
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.Sequential(*(ResidualConv(dim, d) for d in dilations))
        self.context_size = context_size
        if context_size:
            self.context_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
            self.context_blocks = nn.Sequential(*(ResidualConv(dim, d) for d in DILATIONS))
        self.neck = nn.Sequential(nn.Conv2d(dim, out_chans, kernel_size=1), LayerNorm2d(out_chans))
        self.register_buffer("pixel_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: S x 3 x H0 x W0, float in [0, 1] -> S x C x H x W."""
        pixels = (images - self.pixel_mean) / self.pixel_std  # S x 3 x H0 x W0
        x = self.patch_embed(pixels)  # S x D x H x W
        if self.context_size:
            h0 = self.context_size
            small = F.interpolate(pixels, size=(h0, h0), mode="area")  # S x 3 x h0 x h0 (unchanged when H0 = h0)
            context = self.context_blocks(self.context_embed(small))  # S x D x h0/4 x h0/4
            x = x + F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False)  # S x D x H x W
        x = self.blocks(x)  # S x D x H x W
        return self.neck(x)  # S x C x H x W
