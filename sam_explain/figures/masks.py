"""Masks drawn over an image: coloured where the mask is on, see-through elsewhere (``show_mask`` on an
axis; ``plot_masks``, a figure of every mask with its prompts and predicted IoU)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from .figure import Figure


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


def plot_masks(
    image: np.ndarray,
    masks: np.ndarray,
    iou: Sequence[float],
    *,
    points: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    box: Optional[Sequence[float]] = None,
    titles: Optional[Sequence[str]] = None,
) -> Figure:
    """The image once per mask (k x H0 x W0 bool), the mask tinted, the prompts drawn (points N x 2
    with labels N, 1 foreground as a green star, 0 background as a red one; box x0, y0, x1, y1, all in
    image pixels), the predicted IoU in each title."""
    k = len(masks)
    aspect = image.shape[0] / image.shape[1]
    fig = Figure(figsize=(4.5 * k, 4.5 * aspect + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, k, squeeze=False)[0])
    for j, ax in enumerate(axes):
        ax.imshow(image)
        show_mask(ax, masks[j])
        if points is not None:
            for (x, y), label in zip(np.asarray(points), np.asarray(labels)):
                ax.plot([x], [y], marker="*", markersize=14, linestyle="none", markeredgecolor="white",
                        color="lime" if int(label) == 1 else "red")
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=2))
        title = titles[j] if titles is not None else f"mask {j}"
        ax.set_title(f"{title}: predicted IoU {float(iou[j]):.3f}", fontsize=10)
        ax.axis("off")
    return fig
