"""Prompts for training and evaluation, drawn from the scenes' ground truth: clicks uniformly inside a
mask, boxes around it with noise, the prompt sets of one training step (``sample_prompts``), and clicks
where no object is (``sample_background``, for the toy SAM 2's object score)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .scenes import SceneBatch


def sample_in_masks(masks: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One pixel drawn uniformly from each mask (B x H0 x W0 bool): B x 2 integer (x, y).
    An empty mask gives a uniform pixel."""
    B, H0, W0 = masks.shape
    weights = masks.flatten(1).float() + 1e-12  # B x H0W0
    flat = torch.multinomial(weights, 1, generator=gen)[:, 0]  # B
    return torch.stack([flat % W0, flat // W0], dim=-1).float()  # B x 2, (x, y)


def sample_background(scenes: SceneBatch, scene: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One click where no object is (no pixel of any object, valid as a target or not) in each scene of
    ``scene`` (B indices into the S scenes): B x 2 (x, y), uniform over the background."""
    background = ~scenes.object_masks.any(dim=1)  # S x H0 x W0
    return sample_in_masks(background[scene], gen)  # B x 2


def bounding_boxes(masks: torch.Tensor) -> torch.Tensor:
    """B x H0 x W0 bool -> B x 4 (x0, y0, x1, y1), inclusive pixel indices."""
    B, H0, W0 = masks.shape
    rows = masks.any(dim=2).float()  # B x H0
    cols = masks.any(dim=1).float()  # B x W0
    y0 = rows.argmax(dim=1)
    y1 = H0 - 1 - rows.flip(1).argmax(dim=1)
    x0 = cols.argmax(dim=1)
    x1 = W0 - 1 - cols.flip(1).argmax(dim=1)
    return torch.stack([x0, y0, x1, y1], dim=-1).float()  # B x 4


def noisy_boxes(masks: torch.Tensor, gen: torch.Generator, max_noise: float) -> torch.Tensor:
    """Bounding boxes with Gaussian noise on each coordinate: std 10% of the side, at most ``max_noise``."""
    box = bounding_boxes(masks)  # B x 4
    side = torch.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], dim=-1).repeat(1, 2) + 1  # B x 4
    std = (0.1 * side).clamp(max=max_noise)
    box = box + std * torch.randn(box.shape, generator=gen, device=box.device)
    H0 = masks.shape[-1]
    return box.clamp(0, H0 - 1)


@dataclass
class PromptBatch:
    scene: torch.Tensor  # B, which scene each prompt set is on
    target: torch.Tensor  # B x H0 x W0 bool
    is_point: torch.Tensor  # B bool: one click (else a box)
    point: torch.Tensor  # B x 1 x 2
    box: torch.Tensor  # B x 4
    whole_for_part: torch.Tensor  # B bool: a click on a nested part whose target is the whole object
    both_readings: torch.Tensor  # B bool: a click on a nested part trained on the part and the whole at once
    whole: torch.Tensor  # B x H0 x W0 bool: the whole object the target belongs to (an object's is itself)


def sample_prompts(scenes: SceneBatch, per_scene: int, gen: torch.Generator, point_fraction: float = 0.5,
                   whole_fraction: float = 0.0, both_fraction: float = 0.0) -> PromptBatch:
    """P prompt sets per scene: a valid target mask, then one click inside it or a noisy box around it.

    A click on a nested part is ambiguous; with probability ``whole_fraction`` its target becomes the
    whole object (the click stays on the part), so both readings are trained on part clicks. Of the
    part clicks left, ``both_fraction`` are marked to be trained on both readings at once."""
    S = scenes.images.shape[0]
    device = scenes.images.device
    valid = scenes.targets_valid.float()  # S x 2K
    valid[:, 0] = valid[:, 0] + (valid.sum(1) == 0).float()  # a scene with no valid target keeps slot 0
    choice = torch.multinomial(valid, per_scene, replacement=True, generator=gen)  # S x P
    scene = torch.arange(S, device=device).repeat_interleave(per_scene)  # B
    target = scenes.targets[scene, choice.flatten()]  # B x H0 x W0
    B = target.shape[0]
    is_point = torch.rand(B, generator=gen, device=device) < point_fraction
    point = sample_in_masks(target, gen)[:, None]  # B x 1 x 2
    K = scenes.object_masks.shape[1]
    obj = choice.flatten() % K  # B, the object a target belongs to
    whole = scenes.object_masks[scene, obj]  # B x H0 x W0
    part_click = (choice.flatten() >= K) & is_point & scenes.object_valid[scene, obj]  # B
    to_whole = torch.zeros(B, dtype=torch.bool, device=device)
    if whole_fraction > 0:  # a draw only when it is used
        to_whole = part_click & (torch.rand(B, generator=gen, device=device) < whole_fraction)
    both = torch.zeros(B, dtype=torch.bool, device=device)
    if both_fraction > 0:
        both = part_click & ~to_whole & (torch.rand(B, generator=gen, device=device) < both_fraction)
    target = torch.where(to_whole[:, None, None], whole, target)  # B x H0 x W0
    box = noisy_boxes(target, gen, max_noise=20.0 * scenes.images.shape[-1] / 1024)
    return PromptBatch(scene, target, is_point, point, box, to_whole, both, whole)
