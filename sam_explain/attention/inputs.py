"""Stand-in inputs for the attention figures: a synthetic image, an embedding made from it,
and random-weight models. Swap ``build_models`` / ``embed_image`` for trained ones (the toy
model, or a checkpoint plus real image embeddings) without changing the figures."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from einops import rearrange
from torch.nn import functional as F

from ..modeling import MaskDecoder, PromptEncoder
from ..modeling.build import build_mask_decoder, build_prompt_encoder, randomize_
from ..utils.transforms import image_to_input, resized_shape


def placeholder_image(height: int = 480, width: int = 640) -> np.ndarray:
    """h0 x w0 x 3 uint8: a grey background with a red disc, a blue square and a green bar."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.full((height, width, 3), 200, np.uint8)
    disc = (xx - 0.3 * width) ** 2 + (yy - 0.4 * height) ** 2 < (0.18 * min(height, width)) ** 2
    square = (abs(xx - 0.7 * width) < 0.12 * width) & (abs(yy - 0.35 * height) < 0.12 * width)
    bar = (abs(yy - 0.8 * height) < 0.05 * height) & (abs(xx - 0.5 * width) < 0.4 * width)
    img[disc] = (220, 40, 40)
    img[square] = (40, 70, 220)
    img[bar] = (40, 170, 60)
    return img


def placeholder_embedding(
    image, channels: int = 256, grid: int = 64, seed: int = 0, input_size: int = 1024
) -> torch.Tensor:
    """1 x C x H x W from an image, by SAM's geometry but with no learned encoder: the padded input,
    plus an "inside the image" channel, is averaged over each patch (16 x 16 pixels in SAM) and
    projected to C channels by a fixed random matrix, so regions of one colour get one embedding."""
    padded = torch.from_numpy(image_to_input(image, input_size))  # input_size x input_size x 3
    h, w = resized_shape(np.asarray(image).shape[:2], input_size)
    inside = torch.zeros(input_size, input_size, 1)
    inside[:h, :w] = 1.0  # the image, not the padding
    x = rearrange(torch.cat([padded, inside], -1), "y x c -> 1 c y x")  # 1 x 4 x input_size x input_size
    x = F.adaptive_avg_pool2d(x, grid)  # 1 x 4 x H x W
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(channels, 4, generator=gen)  # C x 4
    emb = torch.einsum("ck,bkhw->bchw", proj, x - 0.5)  # 1 x C x H x W
    return emb


def build_models(seed: int = 0) -> Tuple[PromptEncoder, MaskDecoder]:
    """(prompt_encoder, decoder) with SAM's configuration and seeded random weights."""
    torch.manual_seed(seed)
    prompt_encoder, decoder = build_prompt_encoder(), build_mask_decoder()
    randomize_(decoder, seed)
    randomize_(prompt_encoder, seed + 1)
    return prompt_encoder.eval(), decoder.eval()
