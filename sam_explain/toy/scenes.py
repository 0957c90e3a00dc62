"""Synthetic scenes: a few coloured shapes on a plain background, with ground-truth masks.

Every scene is drawn by the same vectorised code on whatever device it is asked for
(no per-pixel Python), so a batch of S scenes costs a handful of tensor ops.

A scene has K = 4 object slots. Object k is a base shape (a disc or a rectangle,
possibly rotated), and, with some probability, a smaller part nested inside it (a
disc, rectangle, triangle or ring). Objects are painted in order, base then part,
so a later object may hide part of an earlier one. Two kinds of ground truth:

  object_masks  S x K x H0 x W0  the whole object: its base and its part, where visible
  part_masks    S x K x H0 x W0  the nested part alone (empty if the object has none)

A click on a nested part is ambiguous: the part, or the whole object. That is what
SAM's three multimask outputs are for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from torch.nn import functional as F

IMAGE_SIZE = 256  # H0 = W0: the toy image, in pixels
NUM_OBJECTS = 4  # K slots per scene
SHAPE_KINDS = ("disc", "rectangle", "triangle", "ring")
MIN_AREA = 64  # pixels at H0 = 256: smaller visible masks are not used as targets


@dataclass
class SceneBatch:
    """S scenes. Images are float in [0, 1]; masks are bool."""

    images: torch.Tensor  # S x 3 x H0 x W0
    object_masks: torch.Tensor  # S x K x H0 x W0
    part_masks: torch.Tensor  # S x K x H0 x W0
    object_valid: torch.Tensor  # S x K, the object is present with at least MIN_AREA pixels
    part_valid: torch.Tensor  # S x K, the object has a nested part with at least MIN_AREA pixels

    @property
    def targets(self) -> torch.Tensor:
        """Every candidate target mask: S x 2K x H0 x W0 (objects, then parts)."""
        return torch.cat([self.object_masks, self.part_masks], dim=1)

    @property
    def targets_valid(self) -> torch.Tensor:
        return torch.cat([self.object_valid, self.part_valid], dim=1)  # S x 2K

    def to(self, device) -> "SceneBatch":
        return SceneBatch(*(getattr(self, f).to(device) for f in
                            ("images", "object_masks", "part_masks", "object_valid", "part_valid")))


def _shape_masks(
    kind: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, size: torch.Tensor,
    aspect: torch.Tensor, angle: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
) -> torch.Tensor:
    """Rasterise one shape per scene. kind, cx, cy, size, aspect, angle: S; xs, ys: H0 x W0
    pixel centres. Returns S x H0 x W0 bool."""
    dx = xs[None] - cx[:, None, None]  # S x H0 x W0
    dy = ys[None] - cy[:, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = cos * dx + sin * dy  # rotated coordinates
    v = -sin * dx + cos * dy
    r = size[:, None, None]  # the shape's radius (half-width)
    a = aspect[:, None, None]
    rho2 = dx * dx + dy * dy
    disc = rho2 <= r * r
    rectangle = (u.abs() <= r) & (v.abs() <= r * a)
    ring = disc & (rho2 >= (0.55 * r) ** 2)
    # An equilateral triangle with circumradius r: three half-planes at 120 degrees.
    triangle = torch.ones_like(disc)
    for t in range(3):
        phi = 2 * math.pi * t / 3
        triangle &= (u * math.cos(phi) + v * math.sin(phi)) <= 0.5 * r
    k = kind[:, None, None]
    return torch.where(k == 0, disc, torch.where(k == 1, rectangle, torch.where(k == 2, triangle, ring)))


def _distinct_colour(reference: torch.Tensor, colour: torch.Tensor, min_dist: float = 0.35) -> torch.Tensor:
    """Push ``colour`` (S x 3) away from ``reference`` (S x 3) where they are too close."""
    close = (colour - reference).norm(dim=-1, keepdim=True) < min_dist  # S x 1
    return torch.where(close, (reference + 0.5) % 1.0, colour)


def generate_scenes(
    num_scenes: int,
    seed: int,
    device: torch.device | str = "cpu",
    image_size: int = IMAGE_SIZE,
    nest_prob: float = 0.5,
    noise: float = 0.02,
) -> SceneBatch:
    """Draw ``num_scenes`` scenes from ``seed`` on ``device``; the same seed gives the same scenes
    on the same device."""
    S, K, H0 = num_scenes, NUM_OBJECTS, image_size
    gen = torch.Generator(device=device).manual_seed(int(seed))

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=device)

    centres = (torch.arange(H0, device=device, dtype=torch.float32) + 0.5)
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")  # H0 x W0 each

    background = 0.25 + 0.5 * rand(S, 3)  # S x 3
    images = background[:, :, None, None].expand(S, 3, H0, H0).clone()  # S x 3 x H0 x W0
    label = torch.full((S, H0, H0), -1, dtype=torch.int64, device=device)  # who is visible: 2k base, 2k+1 part
    present = rand(S, K) < torch.tensor([1.0, 0.9, 0.7, 0.5], device=device)  # S x K: 1 to 4 objects
    nested = rand(S, K) < nest_prob
    for k in range(K):
        size = H0 * (0.09 + 0.13 * rand(S))  # radius, about 23 to 56 px at H0 = 256
        margin = size * 0.8
        cx = margin + (H0 - 2 * margin) * rand(S)
        cy = margin + (H0 - 2 * margin) * rand(S)
        base_kind = (rand(S) < 0.5).long()  # 0 disc or 1 rectangle
        aspect = 0.6 + 0.4 * rand(S)
        angle = math.pi * rand(S)
        base = _shape_masks(base_kind, cx, cy, size, aspect, angle, xs, ys) & present[:, k, None, None]
        colour = _distinct_colour(background, rand(S, 3))  # S x 3
        images = torch.where(base[:, None], colour[:, :, None, None], images)
        label = torch.where(base, 2 * k, label)

        # The nested part: smaller, well inside the base, another colour.
        part_size = size * (0.3 + 0.2 * rand(S))
        room = (size * torch.minimum(torch.ones_like(aspect), aspect) * (base_kind == 1) + size * (base_kind == 0)) - part_size
        room = room.clamp(min=0) * 0.6
        offset_angle = 2 * math.pi * rand(S)
        pcx = cx + room * rand(S) * torch.cos(offset_angle)
        pcy = cy + room * rand(S) * torch.sin(offset_angle)
        part_kind = (rand(S) * 4).long().clamp(max=3)
        part = _shape_masks(part_kind, pcx, pcy, part_size, 0.6 + 0.4 * rand(S), math.pi * rand(S), xs, ys)
        part = part & base & (present[:, k] & nested[:, k])[:, None, None]
        part_colour = _distinct_colour(colour, _distinct_colour(background, rand(S, 3)))
        images = torch.where(part[:, None], part_colour[:, :, None, None], images)
        label = torch.where(part, 2 * k + 1, label)

    if noise > 0:
        images = images + noise * torch.randn(images.shape, generator=gen, device=device)
    images = images.clamp(0, 1)

    ids = torch.arange(K, device=device)[None, :, None, None]  # 1 x K x 1 x 1
    lab = label[:, None]  # S x 1 x H0 x W0
    part_masks = lab == 2 * ids + 1  # S x K x H0 x W0
    object_masks = (lab == 2 * ids) | part_masks
    min_area = MIN_AREA * (H0 / IMAGE_SIZE) ** 2  # the same fraction of the image at any size
    object_area = object_masks.flatten(2).sum(-1)  # S x K
    part_area = part_masks.flatten(2).sum(-1)
    # A part is a separate reading only if the object also shows some of its base.
    part_valid = (part_area >= min_area) & (object_area - part_area >= min_area)
    object_valid = object_area >= min_area
    return SceneBatch(images, object_masks, part_masks, object_valid, part_valid)


@dataclass
class Scene:
    """One scene, as a user sees it."""

    image: np.ndarray  # H0 x W0 x 3 uint8
    object_masks: np.ndarray  # K x H0 x W0 bool (only valid objects kept)
    part_masks: np.ndarray  # K x H0 x W0 bool (all False where an object has no part)
    has_part: np.ndarray  # K bool


def make_scene(seed: int = 0, image_size: int = IMAGE_SIZE) -> Scene:
    """One toy scene from ``seed``: the image (H0 x W0 x 3 uint8) and its ground-truth masks."""
    batch = generate_scenes(1, seed=seed, image_size=image_size)
    keep = batch.object_valid[0]
    image = (batch.images[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # H0 x W0 x 3
    return Scene(
        image=image,
        object_masks=batch.object_masks[0][keep].numpy(),
        part_masks=(batch.part_masks[0] & batch.part_valid[0][:, None, None])[keep].numpy(),
        has_part=batch.part_valid[0][keep].numpy(),
    )


def click_inside(mask: np.ndarray) -> Tuple[float, float]:
    """A click (x, y) deep inside a H0 x W0 boolean mask: among the pixels farthest from the
    mask's edge (found by eroding it until one more step would empty it), the one nearest
    their centroid. A click at the centroid itself can fall outside a ring or a half-hidden disc."""
    region = torch.from_numpy(np.ascontiguousarray(mask)).bool()
    if not region.any():
        raise ValueError("click_inside: the mask is empty")
    inner = region
    while True:
        # 3 x 3 erosion: a pixel stays if none of its neighbours is outside the mask
        eroded = -F.max_pool2d(-inner[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0.5
        if not eroded.any():
            break
        inner = eroded
    ys, xs = torch.nonzero(inner, as_tuple=True)
    i = int(torch.argmin((xs - xs.float().mean()) ** 2 + (ys - ys.float().mean()) ** 2))
    return float(xs[i]), float(ys[i])


def mask_iou(mask, truth) -> float:
    """The IoU of two H0 x W0 boolean masks (numpy arrays or tensors, on any device): |A and B| / |A or B|,
    0 when both are empty."""
    a, b = (torch.as_tensor(m).bool().cpu() for m in (mask, truth))
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0
