"""SAM's resize-and-pad geometry, between an original image, the 1024 x 1024 input and the H x W grid.

An original image of H0 x W0 pixels is resized so that its longest side is 1024 (the other side
``int(side * scale + 0.5)``), placed at the top-left of a 1024 x 1024 input and padded with zeros
at the right and bottom. The image encoder turns that input into the H x W = 64 x 64 grid, one cell
per 16 x 16 input pixels, so a grid cell may lie partly or wholly in the padding.

``ResizeLongestSide`` has the arithmetic of ``segment_anything.utils.transforms.ResizeLongestSide``
without torchvision: the official ``apply_image`` goes through torchvision's ``to_pil_image`` and
``resize`` on a PIL image, which is PIL's bilinear (antialiased) ``Image.resize``; here we call
Pillow directly.

  image   H0 x W0 x 3 uint8 -> Hr x Wr x 3 uint8, max(Hr, Wr) = target_length
  coords  ... x 2 (x, y) in original pixels -> the same points in resized pixels
  boxes   ... x 4 (x0, y0, x1, y1) likewise

The functions after it use the same geometry: ``postprocess_masks`` (the path of
``Sam.postprocess_masks``) brings a grid or low-res map back onto the original image,
``grid_to_image`` draws a 64 x 64 map over a photo that way, and ``to_input_frame`` /
``to_original_frame`` move prompts between the photo and the input frame.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
from torch.nn import functional as F

from ..shapes.check import ShapeError


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


# --- the same geometry, for maps and prompts ------------------------------------------------------

IMAGE_SIZE = 1024  # the padded input of SAM's image encoder

ArrayLike = Union[np.ndarray, torch.Tensor]


def postprocess_masks(masks: torch.Tensor, input_size: Tuple[int, int], original_size: Tuple[int, int],
                      img_size: int = IMAGE_SIZE) -> torch.Tensor:
    """... x h x w maps over the padded square input (low-res mask logits, or an H x W attention map)
    -> ... x H0 x W0 over the original image: bilinear to img_size x img_size, crop to the resized
    image ``input_size`` = (Hr, Wr) (the rest was padding), bilinear to ``original_size`` = (H0, W0)."""
    lead = masks.shape[:-2]
    x = masks.reshape(-1, 1, *masks.shape[-2:]) if masks.dim() != 4 else masks  # K x 1 x h x w, or B x k x h x w
    x = F.interpolate(x, (img_size, img_size), mode="bilinear", align_corners=False)  # ... x 1024 x 1024
    x = x[..., : input_size[0], : input_size[1]]  # ... x Hr x Wr
    x = F.interpolate(x, tuple(int(v) for v in original_size), mode="bilinear", align_corners=False)  # ... x H0 x W0
    return x.reshape(*lead, *x.shape[-2:])


def resized_shape(original_size: Tuple[int, int], long_side: int = IMAGE_SIZE) -> Tuple[int, int]:
    """(Hr, Wr) of an (H0, W0) image resized so that its longest side is ``long_side``."""
    h0, w0 = original_size
    if h0 <= 0 or w0 <= 0:
        raise ValueError(f"an image size must be positive, got h0 x w0 = {h0} x {w0}")
    return ResizeLongestSide.get_preprocess_shape(h0, w0, long_side)


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


def grid_to_image(heatmap: ArrayLike, original_size: Tuple[int, int], input_size: int = IMAGE_SIZE) -> np.ndarray:
    """An H x W grid map (or ... x H x W) -> ... x H0 x W0 over the original image's pixels, by
    ``postprocess_masks``. Returns float32 numpy."""
    t = torch.as_tensor(np.asarray(heatmap) if not isinstance(heatmap, torch.Tensor) else heatmap)
    t = t.detach().to("cpu", torch.float32)
    if t.dim() < 2:
        raise ValueError(f"grid_to_image: heatmap must be ... x H x W, got shape {tuple(t.shape)}")
    lead = t.shape[:-2]
    flat = t.reshape(-1, 1, *t.shape[-2:])  # K x 1 x H x W
    out = postprocess_masks(flat, resized_shape(original_size, input_size), original_size, input_size)
    return out.reshape(*lead, *original_size).numpy()  # ... x H0 x W0


def as_float_image(image: ArrayLike) -> np.ndarray:
    """H0 x W0 x 3 (or x 4, or H0 x W0) uint8 / float image -> H0 x W0 x 3 float32 in [0, 1]."""
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
    a = torch.from_numpy(as_float_image(image)).permute(2, 0, 1)[None]  # 1 x 3 x H0 x W0
    h, w = resized_shape(a.shape[-2:], input_size)
    a = F.interpolate(a, (h, w), mode="bilinear", align_corners=False, antialias=True)  # 1 x 3 x Hr x Wr
    a = F.pad(a, (0, input_size - w, 0, input_size - h))  # 1 x 3 x 1024 x 1024
    return a[0].permute(1, 2, 0).numpy()
