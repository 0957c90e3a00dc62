"""Pictures of the decoder's attention maps (matplotlib; every function returns its Figure).

  plot_token_to_image   one token's attention over the H x W image grid, every layer x head
  plot_image_to_token   for each token, the H x W map of how much each image position attends to it
  plot_token_self       the T x T token self-attention matrices, token names on the axes

Each takes an :class:`~sam_explain.attention.AttentionRecord` (from ``capture_attention``),
a prompt set, ``heads`` ("all", "mean" or a head index) and ``layers`` (None, or a list of
0, 1, "final"). With ``image`` (h0 x w0 x 3, uint8 or float) the H x W maps are drawn over the
image by SAM's resize-and-pad geometry (``sam_explain.utils.transforms``); without it, as the raw H x W grid.

The pixels come from ``sam_explain.render`` (the one renderer, numpy): the image dimmed to gray under
an inferno heat layer whose opacity rises with the value. The colour limit is robust: the
``percentile``-th percentile (99th by default) of the cells shown, so that one cell at 0.99 cannot
flatten the rest (brighter cells take the top colour); ``scale="shared"`` takes it over all panels,
``"per-panel"`` for each; the figure title states it. ``outline=0.5`` outlines (cyan) the fewest
cells that hold half of the attention. matplotlib only lays out the panels, titles and colour bars.
Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so they never leak;
``fig.savefig(path)`` writes a PNG.
"""

from __future__ import annotations

import functools
import textwrap
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize, PowerNorm
from matplotlib.patches import Rectangle

from .. import render
from ..attention.capture import KIND_TITLES, AttentionRecord, AttentionSite
from ..attention.tokens import token_positions
from ..utils.transforms import as_float_image, to_original_frame
from .figure import Figure

Head = Union[str, int, Sequence[Union[str, int]]]  # "all", "mean", 0 .. h-1, or a list of "mean" and indices
SCALES = ("shared", "per-panel")
MAX_PICTURE_SIDE = 1024  # overlays are rendered at the image's size, its long side capped at this

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


def ordinal(p: float) -> str:
    """99 -> '99th', 92.5 -> '92.5th', 100 -> 'maximum'."""
    if p == 100.0:
        return "maximum"
    n = f"{p:g}"
    suffix = "th" if n.endswith(("11", "12", "13")) else {"1": "st", "2": "nd", "3": "rd"}.get(n[-1], "th")
    return n + suffix


def colour_note(scale: str, vmax: Optional[float], gamma: float = 1.0, percentile: float = 100.0,
                peak: Optional[float] = None, outline: Optional[float] = None, over_image: bool = False) -> str:
    """The line under a figure's title that says how its colours were chosen."""
    what = "maximum" if percentile == 100.0 else f"{ordinal(percentile)} percentile"
    if scale == "shared":
        text = f"colour limit {vmax:.3g}: the {what} of all panels' cells, shared by all panels"
        if percentile < 100.0 and peak is not None:
            text += f" (largest {peak:.3g}; cells above the limit take the top colour)"
    else:
        text = f"colour limit: each panel's own {what} (its colour bar)"
    if over_image:
        text += "; the image dimmed to gray, the heat more opaque where higher"
    if gamma != 1.0:
        text += f"; power scale, gamma {gamma:g}: faint attention made visible"
    if outline is not None:
        text += f"; cyan outline: the fewest cells holding {outline:.0%} of the attention"
    return text


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def check_options(percentile: float, outline: Optional[float], gamma: float) -> None:
    """Refuse bad colour options before anything is drawn."""
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if outline is not None and (isinstance(outline, bool) or not isinstance(outline, (int, float))
                                or not 0.0 < outline <= 1.0):
        raise ValueError(f"outline must be None or a share of the attention in (0, 1], got {outline!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0.0:
        raise ValueError(f"gamma must be a number > 0, got {gamma!r}")


@functools.lru_cache(maxsize=16)
def heat_style(cmap: str = "inferno", alpha: float = 0.9) -> render.HeatStyle:
    """The renderer's style for a matplotlib colour map name (sampled at 256 steps; "inferno" is
    the renderer's own table) and the heat layer's opacity at the colour limit."""
    if cmap == "inferno":
        return render.style_with(opacity=alpha)
    try:
        table = colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]  # 256 x 3 floats
    except (KeyError, ValueError) as err:
        raise ValueError(f"cmap must be a matplotlib colour map name, got {cmap!r}") from err
    return render.style_with(colours=table, opacity=alpha)


def colour_mappable(vmax: float, gamma: float, style: render.HeatStyle, over_image: bool) -> ScalarMappable:
    """What a colour bar needs: the colours as drawn (over a mid gray when over the image) from 0
    to ``vmax``."""
    colours = render.legend_colours(style) if over_image else style.lut
    norm = PowerNorm(gamma, vmin=0.0, vmax=vmax) if gamma != 1.0 else Normalize(vmin=0.0, vmax=vmax)
    return ScalarMappable(norm=norm, cmap=ListedColormap(colours / 255.0))


def limit_of(maps: Sequence[np.ndarray], percentile: float) -> float:
    """The robust colour limit of some maps taken together."""
    return render.robust_limit(np.concatenate([np.ravel(m) for m in maps]), percentile)


def new_figure(
    nrows: int, ncols: int, panel: Tuple[float, float], transpose: bool = False
) -> Tuple[Figure, np.ndarray]:
    """A figure of nrows x ncols panels; ``axes[r, c]``. With ``transpose`` the panels are laid out
    as ncols x nrows (a single column becomes a row), still indexed ``axes[r, c]``."""
    shown = (ncols, nrows) if transpose else (nrows, ncols)
    fig = Figure(figsize=(panel[0] * shown[1] + 1.2, panel[1] * shown[0] + 1.2), layout="constrained")
    axes = np.asarray(fig.subplots(*shown, squeeze=False))
    return fig, (axes.T if transpose else axes)


def picture_size(image: np.ndarray) -> Tuple[int, int]:
    """The size an overlay is rendered at: the image's, its long side capped at MAX_PICTURE_SIDE."""
    h0, w0 = image.shape[:2]
    return (h0, w0) if max(h0, w0) <= MAX_PICTURE_SIDE else render.fit_long_side((h0, w0), MAX_PICTURE_SIDE)


def draw_grid_map(
    ax: Axes,
    grid_map: np.ndarray,
    *,
    image: Optional[np.ndarray],
    vmax: float,
    style: render.HeatStyle = render.DEFAULT_STYLE,
    input_size: int = 1024,
    gamma: float = 1.0,
    outline: Optional[float] = None,
) -> ScalarMappable:
    """An H x W map, raw (nearest cells) or over the image (resize-and-pad geometry; ``input_size``
    is the side of the padded square input the grid covers, 1024 in SAM), rendered by
    ``sam_explain.render`` with the colour limit ``vmax``. ``gamma`` < 1 maps colours by
    (value / vmax) ** gamma, so that faint attention shows beside a sharp peak. Returns the
    mappable for a colour bar."""
    if image is None:
        picture = render.colourize(grid_map, vmax, style, gamma)  # H x W x 3
        if outline is not None:
            picture[render.edge_pixels(render.top_mass_cells(grid_map, outline), 1)] = render.OUTLINE_COLOUR
        ax.imshow(picture, interpolation="nearest")
    else:
        picture = render.attention_over_image(grid_map, image, input_size=input_size, vmax=vmax,
                                              out_size=picture_size(image), outline=outline, style=style,
                                              gamma=gamma)  # h x w x 3
        ax.imshow(picture, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
                  interpolation="antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    return colour_mappable(vmax, gamma, style, over_image=image is not None)


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


def draw_attention_panel(fig, ax, grid_map: np.ndarray, *, vmax: float, scale: str, image, style: render.HeatStyle,
                         input_size: int, gamma: float, percentile: float, outline: Optional[float]):
    """One H x W attention map on ``ax``. The colour limit is ``vmax`` (the figure's) with
    ``scale="shared"``, else the panel's own ``percentile``-th percentile, with a colour bar of its own."""
    top = vmax if scale == "shared" else render.robust_limit(grid_map, percentile)
    mappable = draw_grid_map(ax, grid_map, image=image, vmax=top, style=style, input_size=input_size,
                             gamma=gamma, outline=outline)
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
    cmap: str = "inferno",
    alpha: float = 0.9,
    show_prompts: bool = True,
    percentile: float = render.DEFAULT_PERCENTILE,
    outline: Optional[float] = None,
) -> Figure:
    """One token's token-to-image attention: rows are the token-to-image attentions (layer 0,
    layer 1, final), columns the heads (or one column for ``heads="mean"`` / an index). Each panel
    is that token's row of the T x HW map, shown as H x W (over ``image``, h0 x w0 x 3, if given).

    ``percentile``: the colour limit is this percentile of the cells (100: the maximum);
    ``outline``: a share of the attention (e.g. 0.5) whose fewest cells get a cyan outline;
    ``cmap``: the heat's colour map; ``alpha``: its opacity at the colour limit. Returns the Figure."""
    check_scale(scale)
    check_options(percentile, outline, gamma)
    check_prompt_set(record, prompt_set)
    t = token_index(record, token, prompt_set)
    H, W = record.grid()
    img = prepare_image(image)
    style = heat_style(cmap, alpha)
    sites = sites_of(record, "token_to_image", layers)
    rows = []
    for site in sites:
        row = record[site.name][prompt_set, :, t, :].float().cpu()  # h x HW: token t's row, every head
        maps = row.reshape(-1, H, W)  # h x H x W
        rows.append((site, [(label, v.numpy()) for label, v in head_views(maps, heads, record.average_heads)]))
    ncols = len(rows[0][1])
    panel = (2.4, 2.4 * (img.shape[0] / img.shape[1]) if img is not None else 2.4)
    fig, axes = new_figure(len(rows), ncols, panel, transpose=ncols == 1)
    shown = [v for _, views in rows for _, v in views]  # every panel's H x W map
    vmax = limit_of(shown, percentile)
    last = None
    for r, (site, views) in enumerate(rows):
        for c, (label, view) in enumerate(views):
            ax = axes[r, c]
            last = draw_attention_panel(fig, ax, view, vmax=vmax, scale=scale, image=img, style=style,
                                        input_size=max(record.input_image_size), gamma=gamma,
                                        percentile=percentile, outline=outline)
            if show_prompts:
                mark_prompts(ax, record, prompt_set, image=img, highlight=t)
            ax.set_title(f"{site_label(site)}, {label}", fontsize=9)
    if scale == "shared":
        fig.colorbar(last, ax=axes, shrink=0.8, label="attention probability")
    name = record.names(prompt_set)[t]
    set_suptitle(fig, f"token-to-image attention of '{name}' (prompt set {prompt_set}): "
                 + KIND_MEANING["token_to_image"].format(token=name),
                 colour_note(scale, vmax, gamma, percentile, max(float(v.max()) for v in shown), outline,
                             over_image=img is not None))
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
    cmap: str = "inferno",
    alpha: float = 0.9,
    percentile: float = render.DEFAULT_PERCENTILE,
    outline: Optional[float] = None,
) -> Figure:
    """Image-to-token attention: one column per token, one row per image-to-token attention
    (times heads with ``heads="all"``). A panel is the H x W map of how much each image position
    attends to that token (a column of the HW x T map). Colour options as in
    :func:`plot_token_to_image`. Returns the Figure."""
    check_scale(scale)
    check_options(percentile, outline, gamma)
    check_prompt_set(record, prompt_set)
    names = record.names(prompt_set)
    cols = list(range(len(names))) if tokens is None else [token_index(record, tk, prompt_set) for tk in tokens]
    H, W = record.grid()
    img = prepare_image(image)
    style = heat_style(cmap, alpha)
    rows = []
    for site in sites_of(record, "image_to_token", layers):
        maps = record[site.name][prompt_set].float().cpu()  # h x HW x T
        maps = maps.permute(0, 2, 1).reshape(maps.shape[0], maps.shape[2], H, W)  # h x T x H x W
        for label, view in head_views(maps, heads, record.average_heads):  # view: T x H x W
            rows.append((f"{site_label(site)}, {label}", view.numpy()))
    fig, axes = new_figure(len(rows), len(cols), (2.2, 2.2 * (img.shape[0] / img.shape[1]) if img is not None else 2.2))
    shown = [view[cols] for _, view in rows]  # each: len(cols) x H x W
    vmax = limit_of(shown, percentile)
    last = None
    for r, (label, view) in enumerate(rows):
        for c, t in enumerate(cols):
            ax = axes[r, c]
            last = draw_attention_panel(fig, ax, view[t], vmax=vmax, scale=scale, image=img, style=style,
                                        input_size=max(record.input_image_size), gamma=gamma,
                                        percentile=percentile, outline=outline)
            ax.set_title(f"{names[t]}\n{label}", fontsize=8)
    if scale == "shared":
        fig.colorbar(last, ax=axes, shrink=0.8, label="attention probability")
    set_suptitle(fig, f"image-to-token attention (prompt set {prompt_set}): " + KIND_MEANING["image_to_token"],
                 colour_note(scale, vmax, gamma, percentile, max(float(v.max()) for v in shown), outline,
                             over_image=img is not None))
    return fig


def plot_token_self(
    record: AttentionRecord,
    *,
    prompt_set: int = 0,
    heads: Head = "mean",
    layers: Optional[Sequence] = None,
    scale: str = "shared",
    cmap: str = "inferno",
    annotate: Optional[bool] = None,
    percentile: float = 100.0,
) -> Figure:
    """The T x T token self-attention of each layer (rows) and head (columns), token names on
    the axes: row = the query token, column = the token it attends to. The cells are coloured by
    ``sam_explain.render`` (limit: the maximum by default; a lower ``percentile`` clips the
    largest cells). Returns the Figure."""
    check_scale(scale)
    check_options(percentile, None, 1.0)
    check_prompt_set(record, prompt_set)
    names = record.names(prompt_set)
    T = len(names)
    style = heat_style(cmap, 1.0)
    rows = []
    for site in sites_of(record, "token_self", layers):
        maps = record[site.name][prompt_set].float().cpu()  # h x T x T
        rows.append((site, [(label, v.numpy()) for label, v in head_views(maps, heads, record.average_heads)]))
    ncols = len(rows[0][1])
    side = max(2.8, 0.32 * T + 1.4)
    fig, axes = new_figure(len(rows), ncols, (side, side), transpose=ncols == 1)
    shown = [v for _, views in rows for _, v in views]  # each T x T
    vmax = limit_of(shown, percentile)
    if annotate is None:
        annotate = ncols == 1 and T <= 12
    last = None
    for r, (site, views) in enumerate(rows):
        for c, (label, m) in enumerate(views):  # m: T x T
            top = vmax if scale == "shared" else render.robust_limit(m, percentile)
            ax = axes[r, c]
            ax.imshow(render.colourize(m, top, style), interpolation="nearest")
            last = colour_mappable(top, 1.0, style, over_image=False)
            ax.set_xticks(range(T), names, rotation=90, fontsize=7)
            ax.set_yticks(range(T), names if c == 0 else [], fontsize=7)
            ax.set_title(f"{site_label(site)}, {label}", fontsize=9)
            if c == 0:
                ax.set_ylabel("query token")
            ax.set_xlabel("key token (attended to)", fontsize=8)
            if annotate:
                for i in range(T):
                    for j in range(T):
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                                color="black" if m[i, j] > 0.6 * top else "white")
            if scale == "per-panel":
                fig.colorbar(last, ax=ax, shrink=0.8)
    if scale == "shared":
        fig.colorbar(last, ax=axes, shrink=0.8, label="attention probability")
    set_suptitle(fig, f"token self-attention (prompt set {prompt_set}): " + KIND_MEANING["token_self"],
                 colour_note(scale, vmax, 1.0, percentile, max(float(v.max()) for v in shown)))
    return fig
