"""Resize an image so that its longer side is 1024, and move prompts with it.

The same arithmetic as ``segment_anything.utils.transforms.ResizeLongestSide`` without
torchvision: the official ``apply_image`` goes through torchvision's ``to_pil_image`` and
``resize`` on a PIL image, which is PIL's bilinear (antialiased) ``Image.resize``; here we
call Pillow directly.

  image   H0 x W0 x 3 uint8 -> Hr x Wr x 3 uint8, max(Hr, Wr) = target_length
  coords  ... x 2 (x, y) in original pixels -> the same points in resized pixels
  boxes   ... x 4 (x0, y0, x1, y1) likewise
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch.nn import functional as F

from .shapes_check import ShapeError


class ResizeLongestSide:
    """Resizes images to longest side ``target_length`` and moves coordinates and boxes to match."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(Hr, Wr): the size with the longer side ``long_side_length``, each side rounded half up."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        return int(oldh * scale + 0.5), int(oldw * scale + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H0 x W0 x 3 uint8 -> Hr x Wr x 3 uint8 (PIL bilinear, as the official predictor)."""
        from PIL import Image

        check_image(image, "ResizeLongestSide.apply_image")
        height, width = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        pil = Image.fromarray(np.ascontiguousarray(image))  # an H0 x W0 x 3 uint8 array is RGB
        return np.array(pil.resize((width, height), Image.BILINEAR))  # PIL sizes are (W, H)

    def apply_coords(self, coords: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """... x 2 (x, y) in an H0 x W0 image -> float64 coordinates in the Hr x Wr image."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=float)  # a copy
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """... x 4 (x0, y0, x1, y1) -> K x 4 in resized pixels (two corner points each)."""
        boxes = self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size)  # K x 2 x 2
        return boxes.reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H0 x W0 float -> B x 3 x Hr x Wr (bilinear, antialiased; close to but
        not bit-equal with ``apply_image``, which is what the model expects).

        The official method reads the size from axes 0 and 1 of the B x C x H x W input
        (B and C); here it is read from H and W.
        """
        height, width = self.get_preprocess_shape(image.shape[-2], image.shape[-1], self.target_length)
        return F.interpolate(image, (height, width), mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: Tuple[int, ...]) -> torch.Tensor:
        """... x 2 (x, y) -> float32 coordinates in the resized image (a new tensor)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = coords.detach().clone().to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: Tuple[int, ...]) -> torch.Tensor:
        """... x 4 -> K x 4, float32, in resized pixels."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def check_image(image: object, where: str) -> None:
    """An image is an H0 x W0 x 3 uint8 numpy array; raise ShapeError otherwise."""
    if not isinstance(image, np.ndarray):
        raise ShapeError(f"{where}: image must be a numpy array H0 x W0 x 3 uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ShapeError(
            f"{where}: image must be H0 x W0 x 3 (RGB), got {' x '.join(str(s) for s in image.shape)}"
        )
    if image.dtype != np.uint8:
        raise ShapeError(f"{where}: image must be uint8 (0..255), got {image.dtype}")
