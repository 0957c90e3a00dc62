"""Masks drawn over an image: coloured where the mask is on, see-through elsewhere."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba


def show_mask(ax: Axes, mask, color: str = "dodgerblue", alpha: float = 0.55):
    """Draw an H x W boolean mask (numpy or torch, any device) on ``ax`` over what is already there."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"show_mask: the mask must be H x W, got shape {mask.shape}")
    rgba = np.zeros(mask.shape + (4,), dtype=np.float32)
    rgba[mask] = to_rgba(color, alpha)
    return ax.imshow(rgba)
