"""Pictures of the decoder's attention maps (matplotlib; every function returns its Figure).

  plot_token_to_image   one token's attention over the H x W image grid, every layer x head
  plot_image_to_token   for each token, the H x W map of how much each image position attends to it
  plot_token_self       the T x T token self-attention matrices, token names on the axes

Each takes an :class:`~sam_explain.attention.AttentionRecord` (from ``capture_attention``),
a prompt set, ``heads`` ("all", "mean" or a head index) and ``layers`` (None, or a list of
0, 1, "final"). With ``image`` (h0 x w0 x 3, uint8 or float) the H x W maps are drawn over the
image by SAM's resize-and-pad geometry (``sam_explain.utils.transforms``); without it, as the raw H x W grid.
``scale="shared"`` gives every panel one colour scale, ``"per-panel"`` one each; the figure
title says which. Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so
they never leak; ``fig.savefig(path)`` writes a PNG.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import textwrap

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.patches import Rectangle

from ..attention.capture import KIND_TITLES, AttentionRecord, AttentionSite
from ..attention.tokens import token_positions
from ..utils.transforms import as_float_image, grid_to_image, to_original_frame
from .figure import Figure

Head = Union[str, int, Sequence[Union[str, int]]]  # "all", "mean", 0 .. h-1, or a list of "mean" and indices
SCALES = ("shared", "per-panel")

KIND_MEANING = {
    "token_to_image": "where token '{token}' reads the image (each row of T x HW sums to 1)",
    "image_to_token": "how much each image position reads each token (each position's T weights sum to 1)",
    "token_self": "which tokens each token reads (rows: queries, columns: keys; rows sum to 1)",
}


def token_index(record: AttentionRecord, token: Union[int, str], prompt_set: int = 0) -> int:
    """The position in 0..T-1 of a token given by index or by name (``mask0``, ``point1 (-)``, ``pad``...)."""
    return record.token_index(token, prompt_set)


def check_prompt_set(record: AttentionRecord, prompt_set: int) -> None:
    B = record.num_prompt_sets
    if not 0 <= prompt_set < B:
        raise ValueError(f"prompt_set must be in 0..B-1 = 0..{B - 1}, got {prompt_set}")


def sites_of(record: AttentionRecord, kind: str, layers: Optional[Sequence] = None) -> List[AttentionSite]:
    names = record.by(kind=kind)
    chosen = [record.sites[n] for n in names if layers is None or record.sites[n].layer in layers]
    if not chosen:
        have = [record.sites[n].layer for n in names]
        raise ValueError(
            f"no {KIND_TITLES[kind]} attention recorded for layers {layers}; recorded layers: {have}"
        )
    return chosen


def head_views(maps: torch.Tensor, heads: Head, averaged: bool) -> List[Tuple[str, torch.Tensor]]:
    """h x ... -> [(label, ...)]: every head ("all"), their mean ("mean"), one head (an index), or a
    list of "mean" and indices (the head axis comes first)."""
    h = maps.shape[0]
    if isinstance(heads, (list, tuple)):
        return [view for one in heads for view in head_views(maps, one, averaged)]
    if averaged:
        if heads not in ("mean", "all"):
            raise ValueError(f"the record holds head-averaged maps only; use heads='mean', got {heads!r}")
        return [("mean of heads", maps[0])]
    if heads == "all":
        return [(f"head {i}", maps[i]) for i in range(h)]
    if heads == "mean":
        return [(f"mean of {h} heads", maps.mean(0))]
    if isinstance(heads, (int, np.integer)) and 0 <= int(heads) < h:
        return [(f"head {int(heads)}", maps[int(heads)])]
    raise ValueError(f"heads must be 'all', 'mean', a list of those or an index in 0..h-1 = 0..{h - 1}, got {heads!r}")


def site_label(site: AttentionSite) -> str:
    return "final" if site.layer == "final" else f"layer {site.layer}"


def colour_note(scale: str, vmax: Optional[float], gamma: float = 1.0) -> str:
    power = "" if gamma == 1.0 else f" (power scale, gamma {gamma:g}: faint attention made visible)"
    if scale == "shared":
        return f"colour scale: shared by all panels, 0 to {vmax:.3g}{power}"
    return f"colour scale: per panel, 0 to each panel's maximum{power}"


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def new_figure(
    nrows: int, ncols: int, panel: Tuple[float, float], transpose: bool = False
) -> Tuple[Figure, np.ndarray]:
    """A figure of nrows x ncols panels; ``axes[r, c]``. With ``transpose`` the panels are laid out
    as ncols x nrows (a single column becomes a row), still indexed ``axes[r, c]``."""
    shown = (ncols, nrows) if transpose else (nrows, ncols)
    fig = Figure(figsize=(panel[0] * shown[1] + 1.2, panel[1] * shown[0] + 1.2), layout="constrained")
    axes = np.asarray(fig.subplots(*shown, squeeze=False))
    return fig, (axes.T if transpose else axes)


def draw_grid_map(
    ax: Axes,
    grid_map: np.ndarray,
    *,
    image: Optional[np.ndarray],
    vmin: float,
    vmax: float,
    cmap: str,
    alpha: float,
    input_size: int = 1024,
    gamma: float = 1.0,
):
    """An H x W map, raw or over the image (resize-and-pad geometry; ``input_size`` is the side of
    the padded square input the grid covers, 1024 in SAM). ``gamma`` < 1 maps colours by
    (value / vmax) ** gamma, so that faint attention shows beside a sharp peak. Returns the mappable."""
    norm = PowerNorm(gamma, vmin=vmin, vmax=vmax) if gamma != 1.0 else Normalize(vmin=vmin, vmax=vmax)
    if image is None:
        im = ax.imshow(grid_map, cmap=cmap, norm=norm, interpolation="nearest")
    else:
        heat = grid_to_image(grid_map, image.shape[:2], input_size)  # h0 x w0
        ax.imshow(image)
        # opaque where the attention is high, see-through where there is none
        strength = np.clip(norm(heat).filled(0.0), 0.0, 1.0)
        im = ax.imshow(heat, cmap=cmap, norm=norm, alpha=alpha * np.sqrt(strength))
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def mark_prompts(
    ax: Axes,
    record: AttentionRecord,
    prompt_set: int,
    *,
    image: Optional[np.ndarray],
    highlight: Optional[int] = None,
) -> None:
    """Draw each positioned sparse token (points, box corners) where it is; ``highlight`` (a token
    index) gets a larger marker. Input-frame pixels -> image pixels, or grid cells without an image."""
    if record.prompts is None:
        return
    names = record.names(prompt_set)
    positions = token_positions(record.prompts, prompt_set)  # one per sparse token, the last N'
    first_sparse = len(names) - len(positions)
    H, W = record.grid()
    size_h, size_w = record.input_image_size

    def to_axes(xy):
        xy = np.asarray(xy, dtype=np.float64)
        if image is None:
            return xy[0] * W / size_w - 0.5, xy[1] * H / size_h - 0.5  # grid cell coordinates
        return tuple(to_original_frame(xy, image.shape[:2], long_side=max(size_h, size_w)))

    if record.prompts.boxes is not None:  # the box: its two corner tokens are the last two
        (x0, y0), (x1, y1) = to_axes(positions[-2]), to_axes(positions[-1])
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="orange", linewidth=1.0))
    for j, xy in enumerate(positions):
        if xy is None:
            continue
        i = first_sparse + j
        x, y = to_axes(xy)
        colour = "lime" if "(+)" in names[i] else "red" if "(-)" in names[i] else "orange"
        big = i == highlight
        ax.plot([x], [y], marker="*" if big else "o", markersize=14 if big else 5, color=colour,
                markeredgecolor="white", markeredgewidth=1.2 if big else 0.6, linestyle="none")


def set_suptitle(fig: Figure, *lines: str) -> None:
    """The figure title, each line wrapped to the figure's width."""
    width = max(28, int(fig.get_figwidth() * 11))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in lines), fontsize=10)


def prepare_image(image) -> Optional[np.ndarray]:
    return None if image is None else as_float_image(image)


def draw_attention_panel(fig, ax, grid_map: np.ndarray, *, vmax: float, scale: str, image, cmap: str,
                         alpha: float, input_size: int, gamma: float):
    """One H x W attention map on ``ax``. The colour scale tops at ``vmax`` (the figure's maximum)
    with ``scale="shared"``, else at the panel's own maximum, with a colour bar of its own."""
    top = vmax if scale == "shared" else float(grid_map.max())
    mappable = draw_grid_map(ax, grid_map, image=image, vmin=0.0, vmax=top, cmap=cmap, alpha=alpha,
                             input_size=input_size, gamma=gamma)
    if scale == "per-panel":
        fig.colorbar(mappable, ax=ax, shrink=0.8)
    return mappable


def plot_token_to_image(
    record: AttentionRecord,
    token: Union[int, str] = "mask0",
    *,
    prompt_set: int = 0,
    heads: Head = "all",
    layers: Optional[Sequence] = None,
    image=None,
    scale: str = "shared",
    gamma: float = 1.0,
    cmap: str = "viridis",
    alpha: float = 0.6,
    show_prompts: bool = True,
) -> Figure:
    """One token's token-to-image attention: rows are the token-to-image attentions (layer 0,
    layer 1, final), columns the heads (or one column for ``heads="mean"`` / an index). Each panel
    is that token's row of the T x HW map, shown as H x W (over ``image`` if given)."""
    check_scale(scale)
    check_prompt_set(record, prompt_set)
    t = token_index(record, token, prompt_set)
    H, W = record.grid()
    img = prepare_image(image)
    sites = sites_of(record, "token_to_image", layers)
    rows = []
    for site in sites:
        row = record[site.name][prompt_set, :, t, :].float().cpu()  # h x HW: token t's row, every head
        maps = row.reshape(-1, H, W)  # h x H x W
        rows.append((site, head_views(maps, heads, record.average_heads)))  # [(label, H x W)]
    ncols = len(rows[0][1])
    panel = (2.4, 2.4 * (img.shape[0] / img.shape[1]) if img is not None else 2.4)
    fig, axes = new_figure(len(rows), ncols, panel, transpose=ncols == 1)
    vmax = max(float(v.max()) for _, views in rows for _, v in views)
    last = None
    for r, (site, views) in enumerate(rows):
        for c, (label, view) in enumerate(views):
            ax = axes[r, c]
            last = draw_attention_panel(fig, ax, view.numpy(), vmax=vmax, scale=scale, image=img, cmap=cmap,
                                        alpha=alpha, input_size=max(record.input_image_size), gamma=gamma)
            if show_prompts:
                mark_prompts(ax, record, prompt_set, image=img, highlight=t)
            ax.set_title(f"{site_label(site)}, {label}", fontsize=9)
    if scale == "shared":
        fig.colorbar(last, ax=axes, shrink=0.8, label="attention probability")
    name = record.names(prompt_set)[t]
    set_suptitle(fig, f"token-to-image attention of '{name}' (prompt set {prompt_set}): "
                 + KIND_MEANING["token_to_image"].format(token=name), colour_note(scale, vmax, gamma))
    return fig


def plot_image_to_token(
    record: AttentionRecord,
    *,
    prompt_set: int = 0,
    heads: Head = "mean",
    layers: Optional[Sequence] = None,
    tokens: Optional[Sequence[Union[int, str]]] = None,
    image=None,
    scale: str = "shared",
    gamma: float = 1.0,
    cmap: str = "magma",
    alpha: float = 0.6,
) -> Figure:
    """Image-to-token attention: one column per token, one row per image-to-token attention
    (times heads with ``heads="all"``). A panel is the H x W map of how much each image position
    attends to that token (a column of the HW x T map)."""
    check_scale(scale)
    check_prompt_set(record, prompt_set)
    names = record.names(prompt_set)
    cols = list(range(len(names))) if tokens is None else [token_index(record, tk, prompt_set) for tk in tokens]
    H, W = record.grid()
    img = prepare_image(image)
    rows = []
    for site in sites_of(record, "image_to_token", layers):
        maps = record[site.name][prompt_set].float().cpu()  # h x HW x T
        maps = maps.permute(0, 2, 1).reshape(maps.shape[0], maps.shape[2], H, W)  # h x T x H x W
        for label, view in head_views(maps, heads, record.average_heads):  # view: T x H x W
            rows.append((f"{site_label(site)}, {label}", view))
    fig, axes = new_figure(len(rows), len(cols), (2.2, 2.2 * (img.shape[0] / img.shape[1]) if img is not None else 2.2))
    vmax = max(float(view[cols].max()) for _, view in rows)
    last = None
    for r, (label, view) in enumerate(rows):
        for c, t in enumerate(cols):
            ax = axes[r, c]
            last = draw_attention_panel(fig, ax, view[t].numpy(), vmax=vmax, scale=scale, image=img, cmap=cmap,
                                        alpha=alpha, input_size=max(record.input_image_size), gamma=gamma)
            ax.set_title(f"{names[t]}\n{label}", fontsize=8)
    if scale == "shared":
        fig.colorbar(last, ax=axes, shrink=0.8, label="attention probability")
    set_suptitle(fig, f"image-to-token attention (prompt set {prompt_set}): " + KIND_MEANING["image_to_token"],
                 colour_note(scale, vmax, gamma))
    return fig


def plot_token_self(
    record: AttentionRecord,
    *,
    prompt_set: int = 0,
    heads: Head = "mean",
    layers: Optional[Sequence] = None,
    scale: str = "shared",
    cmap: str = "Blues",
    annotate: Optional[bool] = None,
) -> Figure:
    """The T x T token self-attention of each layer (rows) and head (columns), token names on
    the axes: row = the query token, column = the token it attends to."""
    check_scale(scale)
    check_prompt_set(record, prompt_set)
    names = record.names(prompt_set)
    T = len(names)
    rows = []
    for site in sites_of(record, "token_self", layers):
        maps = record[site.name][prompt_set].float().cpu()  # h x T x T
        rows.append((site, head_views(maps, heads, record.average_heads)))
    ncols = len(rows[0][1])
    side = max(2.8, 0.32 * T + 1.4)
    fig, axes = new_figure(len(rows), ncols, (side, side), transpose=ncols == 1)
    vmax = max(float(v.max()) for _, views in rows for _, v in views)
    if annotate is None:
        annotate = ncols == 1 and T <= 12
    last = None
    for r, (site, views) in enumerate(rows):
        for c, (label, view) in enumerate(views):
            m = view.numpy()  # T x T
            top = vmax if scale == "shared" else float(m.max())
            ax = axes[r, c]
            last = ax.imshow(m, cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest")
            ax.set_xticks(range(T), names, rotation=90, fontsize=7)
            ax.set_yticks(range(T), names if c == 0 else [], fontsize=7)
            ax.set_title(f"{site_label(site)}, {label}", fontsize=9)
            if c == 0:
                ax.set_ylabel("query token")
            ax.set_xlabel("key token (attended to)", fontsize=8)
            if annotate:
                for i in range(T):
                    for j in range(T):
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5,
                                color="white" if m[i, j] > 0.6 * top else "black")
            if scale == "per-panel":
                fig.colorbar(last, ax=ax, shrink=0.8)
    if scale == "shared":
        fig.colorbar(last, ax=axes, shrink=0.8, label="attention probability")
    set_suptitle(fig, f"token self-attention (prompt set {prompt_set}): " + KIND_MEANING["token_self"],
                 colour_note(scale, vmax))
    return fig
