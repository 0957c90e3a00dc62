"""The decoder's masks at sampled pixels only, for a cheaper training loss.

Why this is exact: the upscaling path is two transposed convolutions with kernel 2 and stride 2,
with a per-pixel LayerNorm and GELU between them. So mask pixel (y, x) of the 4H x 4W output
depends on one image token only, cell (y // 4, x // 4) of the H x W grid, and on its place
inside that cell: the first convolution uses kernel tap ((y // 2) % 2, (x // 2) % 2) and the
second tap (y % 2, x % 2). Computing a mask at L pixels therefore needs L tokens and never the
B x C/8 x 4H x 4W map, which at 256 x 256 is most of the elementwise work of a CPU training step.

The pixels are drawn stratified by their place in the cell: for each of the G = 16 places (sy, sx)
in the 4 x 4 cell, ``n`` cells uniformly at random, so every pixel is equally likely and each group
uses one pair of kernel taps (a plain matrix product instead of a per-pixel weight).
"""

from __future__ import annotations

from typing import Tuple

import torch
from einops import einsum, rearrange
from torch import nn
from torch.nn import functional as F

from ..modeling.mask_decoder import MaskDecoder

UPSCALE = 4  # each grid cell becomes UPSCALE x UPSCALE mask pixels
PLACES = UPSCALE * UPSCALE  # G = 16 places of a pixel inside its cell


def sample_cells(B: int, H: int, W: int, n: int, gen: torch.Generator, device) -> torch.Tensor:
    """B x G x n cell indices into the H x W grid, drawn uniformly: n cells for each of the G places."""
    return torch.randint(0, H * W, (B, PLACES, n), generator=gen, device=device)


def pixel_index(cells: torch.Tensor, W: int) -> torch.Tensor:
    """B x G x n cells -> B x L (L = G n) flat indices into the 4H x 4W mask, of the pixel at place g."""
    place = torch.arange(PLACES, device=cells.device)[None, :, None]  # 1 x G x 1
    y = (cells // W) * UPSCALE + place // UPSCALE  # B x G x n
    x = (cells % W) * UPSCALE + place % UPSCALE  # B x G x n
    return (y * (UPSCALE * W) + x).flatten(1)  # B x L


def upscaled_at(upscaling: nn.Sequential, src: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """The decoder's ``output_upscaling(src)`` at the sampled pixels only: B x C x H x W -> B x L x C/8.

    Equal to ``output_upscaling(src)`` gathered at ``pixel_index(cells, W)`` (tests/test_toy.py)."""
    conv1, norm, act1, conv2, act2 = upscaling
    B, G, n = cells.shape
    tokens = rearrange(src, "b c h w -> b (h w) c")  # B x HW x C
    tokens = torch.gather(tokens, 1, cells.flatten(1)[..., None].expand(-1, -1, tokens.shape[-1]))  # B x L x C
    tokens = rearrange(tokens, "b (g n) c -> b g n c", g=G)  # B x G x n x C
    place = torch.arange(G, device=cells.device)
    sy, sx = place // UPSCALE, place % UPSCALE  # G, G
    tap1 = rearrange(conv1.weight[:, :, sy // 2, sx // 2], "c c4 g -> g c c4")  # G x C x C/4
    x = einsum(tokens, tap1, "b g n c, g c c4 -> b g n c4") + conv1.bias  # B x G x n x C/4
    x = act1(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))  # LayerNorm2d per pixel
    tap2 = rearrange(conv2.weight[:, :, sy % 2, sx % 2], "c4 c8 g -> g c4 c8")  # G x C/4 x C/8
    x = act2(einsum(x, tap2, "b g n c4, g c4 c8 -> b g n c8") + conv2.bias)  # B x G x n x C/8
    return rearrange(x, "b g n c8 -> b (g n) c8")  # B x L x C/8


def predict_masks_at(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    cells: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``decoder.predict_masks`` with the masks at the sampled pixels only.

    Returns masks_at (B x M x L logits, at ``pixel_index(cells, W)``), iou_pred (B x M), and, for
    a later full-size mask (``full_mask``), hyper_in (B x M x C/8) and src (B x C x H x W)."""
    iou_token_out, mask_tokens_out, src = decoder.attend(
        image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
    )  # B x C, B x M x C, B x C x H x W
    hyper_in = decoder.hypernetwork_weights(mask_tokens_out)  # B x M x C/8
    features = upscaled_at(decoder.output_upscaling, src, cells)  # B x L x C/8
    masks_at = einsum(hyper_in, features, "b m c8, b l c8 -> b m l")  # B x M x L
    iou_pred = decoder.iou_prediction_head(iou_token_out)  # B x M
    return masks_at, iou_pred, hyper_in, src


def full_mask(decoder: MaskDecoder, src: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
    """One whole mask per prompt set: B x C x H x W and B x C/8 -> B x 4H x 4W logits."""
    upscaled = decoder.output_upscaling(src)  # B x C/8 x 4H x 4W
    return einsum(hyper_in, upscaled, "b c8, b c8 h4 w4 -> b h4 w4")  # B x 4H x 4W
