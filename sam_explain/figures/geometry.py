"""SAM's resize-and-pad geometry, between an original image and the H x W embedding grid.

An original image of h0 x w0 pixels is resized so that its longest side is 1024
(the other side ``int(side * scale + 0.5)``), placed at the top-left of a 1024 x 1024
input and padded with zeros at the right/bottom. The image encoder turns that input
into the H x W = 64 x 64 grid, one cell per 16 x 16 input pixels. So a grid cell may
lie partly or wholly in the padding.

To draw a 64 x 64 map over the original image: upsample it to 1024 x 1024, crop the
resized h x w top-left part, resize that to h0 x w0 (the path SAM's own
``postprocess_masks`` takes for masks). Prompts go the other way: the prompt encoder
wants (x, y) in input-frame pixels, ``x * w / w0, y * h / h0``.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

IMAGE_SIZE = 1024  # the padded input of SAM's image encoder

ArrayLike = Union[np.ndarray, torch.Tensor]


def resized_shape(original_size: Tuple[int, int], long_side: int = IMAGE_SIZE) -> Tuple[int, int]:
    """(h, w) of an (h0, w0) image resized so that its longest side is ``long_side``."""
    h0, w0 = original_size
    if h0 <= 0 or w0 <= 0:
        raise ValueError(f"an image size must be positive, got h0 x w0 = {h0} x {w0}")
    scale = long_side / max(h0, w0)
    return int(h0 * scale + 0.5), int(w0 * scale + 0.5)


def to_input_frame(coords: ArrayLike, original_size: Tuple[int, int], long_side: int = IMAGE_SIZE):
    """... x 2 (x, y) original-image pixels -> the prompt encoder's input-frame pixels."""
    h0, w0 = original_size
    h, w = resized_shape(original_size, long_side)
    factor = torch.tensor([w / w0, h / h0]) if isinstance(coords, torch.Tensor) else np.array([w / w0, h / h0])
    return coords * factor


def to_original_frame(coords: ArrayLike, original_size: Tuple[int, int], long_side: int = IMAGE_SIZE):
    """... x 2 (x, y) input-frame pixels -> original-image pixels (the inverse of ``to_input_frame``)."""
    h0, w0 = original_size
    h, w = resized_shape(original_size, long_side)
    factor = torch.tensor([w0 / w, h0 / h]) if isinstance(coords, torch.Tensor) else np.array([w0 / w, h0 / h])
    return coords * factor


def grid_to_image(
    heatmap: ArrayLike, original_size: Tuple[int, int], input_size: int = IMAGE_SIZE
) -> np.ndarray:
    """An H x W grid map (or ... x H x W) -> ... x h0 x w0 over the original image's pixels.

    Bilinear upsampling to input_size x input_size, crop of the resized image, bilinear
    resize to (h0, w0). Returns float32 numpy.
    """
    t = torch.as_tensor(np.asarray(heatmap) if not isinstance(heatmap, torch.Tensor) else heatmap)
    t = t.detach().to("cpu", torch.float32)
    if t.dim() < 2:
        raise ValueError(f"grid_to_image: heatmap must be ... x H x W, got shape {tuple(t.shape)}")
    lead = t.shape[:-2]
    x = t.reshape(-1, 1, *t.shape[-2:])  # K x 1 x H x W
    x = F.interpolate(x, (input_size, input_size), mode="bilinear", align_corners=False)  # K x 1 x 1024 x 1024
    h, w = resized_shape(original_size, input_size)
    x = x[..., :h, :w]  # the resized image, without the padding
    x = F.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)  # K x 1 x h0 x w0
    return x.reshape(*lead, *original_size).numpy()


def as_float_image(image: ArrayLike) -> np.ndarray:
    """h0 x w0 x 3 (or x 4, or h0 x w0) uint8 / float image -> h0 x w0 x 3 float32 in [0, 1]."""
    a = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"an image must be h0 x w0 x 3 (RGB), got shape {' x '.join(map(str, a.shape))}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    return np.clip(a / 255.0 if a.max() > 1.0 else a, 0.0, 1.0)


def image_to_input(image: ArrayLike, input_size: int = IMAGE_SIZE) -> np.ndarray:
    """The original image as SAM's encoder sees it: resized, top-left, zero-padded, input_size^2 x 3."""
    a = torch.from_numpy(as_float_image(image)).permute(2, 0, 1)[None]  # 1 x 3 x h0 x w0
    h, w = resized_shape(a.shape[-2:], input_size)
    a = F.interpolate(a, (h, w), mode="bilinear", align_corners=False, antialias=True)  # 1 x 3 x h x w
    a = F.pad(a, (0, input_size - w, 0, input_size - h))  # 1 x 3 x 1024 x 1024
    return a[0].permute(1, 2, 0).numpy()
