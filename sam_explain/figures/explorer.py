"""An ipywidgets explorer of the attention maps, for JupyterLab.

    from sam_explain import capture_attention, explore_attention
    explore_attention(capture_attention(prompt_encoder, decoder, embeddings, prompts), image=image)

Controls: prompt set, attention kind, layer, head (or mean), token. Each change redraws one
matplotlib Figure into the same ``ipywidgets.Image`` (PNG bytes), so it updates in place and
needs no interactive matplotlib backend. The map's pixels come from ``sam_explain.render`` (as every
overlay's). For clicking on the image and a live decoder, see ``sam_explain.live_explorer``.
"""

from __future__ import annotations

import io
from typing import Optional

from .. import render
from ..attention.capture import KIND_TITLES, AttentionRecord
from .attention import (
    Figure, colour_mappable, colour_note, draw_grid_map, head_views, heat_style, mark_prompts, prepare_image,
    site_label, sites_of,
)

KIND_ORDER = ("token_to_image", "image_to_token", "token_self")


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


class AttentionExplorer:
    """Widgets over one AttentionRecord; ``.widget`` is the VBox to display (the object displays
    itself in Jupyter). ``.figure`` is the last drawn Figure, ``.image.value`` its PNG."""

    def __init__(self, record: AttentionRecord, image=None, *, cmap: str = "inferno", dpi: int = 80,
                 percentile: float = render.DEFAULT_PERCENTILE) -> None:
        import ipywidgets as widgets

        self.record = record
        self.img = prepare_image(image)
        self.cmap = cmap
        self.style = heat_style(cmap)
        self.percentile = percentile
        self.dpi = dpi
        self.redraws = 0
        kinds = [k for k in KIND_ORDER if record.by(kind=k)]
        if not kinds:
            raise ValueError("the record holds no token/image attention of SAM's decoder to explore")
        B = record.num_prompt_sets
        self.prompt_set = widgets.Dropdown(
            options=[(f"{b}: " + ", ".join(record.names(b)[5:]) if record.token_names else str(b), b)
                     for b in range(B)],
            value=0, description="prompt set")
        self.kind = widgets.Dropdown(options=[(KIND_TITLES[k], k) for k in kinds], value=kinds[0],
                                     description="attention")
        self.layer = widgets.Dropdown(description="layer")
        self.head = widgets.Dropdown(description="head")
        self.token = widgets.Dropdown(description="token")
        self.image = widgets.Image(format="png")
        self._updating = False
        self._refresh_options()
        for control in (self.prompt_set, self.kind, self.layer, self.head, self.token):
            control.observe(self._on_change, names="value")
        self.controls = widgets.HBox([self.prompt_set, self.kind, self.layer, self.head, self.token])
        self.widget = widgets.VBox([self.controls, self.image])
        self.figure: Optional[Figure] = None
        self.redraw()

    def _refresh_options(self) -> None:
        """Layer, head and token choices that exist for the current kind and prompt set."""
        self._updating = True
        try:
            sites = sites_of(self.record, self.kind.value)
            layers = [(site_label(s), s.layer) for s in sites]
            old = self.layer.value
            self.layer.options = layers
            self.layer.value = old if old in [v for _, v in layers] else layers[0][1]
            site = self.current_site()
            h = self.record[site.name].shape[1]
            heads = [("mean", "mean")] + ([] if self.record.average_heads else [(str(i), i) for i in range(h)])
            old = self.head.value
            self.head.options = heads
            self.head.value = old if old in [v for _, v in heads] else "mean"
            names = self.record.names(self.prompt_set.value)
            old = self.token.value
            self.token.options = [(n, i) for i, n in enumerate(names)]
            self.token.value = old if old is not None and old < len(names) else min(1, len(names) - 1)
        finally:
            self._updating = False

    def current_site(self):
        return next(s for s in sites_of(self.record, self.kind.value) if s.layer == self.layer.value)

    def _on_change(self, change) -> None:
        if self._updating:
            return
        if change["owner"] in (self.kind, self.prompt_set):
            self._refresh_options()
        self.redraw()

    def draw(self) -> Figure:
        """The figure for the current controls."""
        rec, b, t = self.record, self.prompt_set.value, self.token.value
        site = self.current_site()
        maps = rec[site.name][b].float().cpu()  # h x N_q x N_k
        (label, view), = head_views(maps, self.head.value, rec.average_heads)  # N_q x N_k
        names = rec.names(b)
        fig = Figure(figsize=(6.4, 5.2), layout="constrained")
        ax = fig.subplots()
        if site.kind == "token_self":
            m = view.numpy()  # T x T
            top = render.robust_limit(m, 100.0)
            ax.imshow(render.colourize(m, top, self.style), interpolation="nearest")
            im = colour_mappable(top, 1.0, self.style, over_image=False)
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
            ax.set_yticks(range(len(names)), names, fontsize=8)
            ax.axhline(t - 0.5, color="cyan", lw=1.0)
            ax.axhline(t + 0.5, color="cyan", lw=1.0)
            ax.set_xlabel("key token (attended to)")
            ax.set_ylabel("query token")
            what = f"query '{names[t]}' outlined"
            note = colour_note("per-panel", None, percentile=100.0)
        else:
            H, W = rec.grid()
            row = view[t] if site.kind == "token_to_image" else view[:, t]  # HW
            grid_map = row.reshape(H, W).numpy()
            im = draw_grid_map(ax, grid_map, image=self.img, vmax=render.robust_limit(grid_map, self.percentile),
                               style=self.style, input_size=max(rec.input_image_size))
            mark_prompts(ax, rec, b, image=self.img, highlight=t)
            what = (f"where '{names[t]}' reads the image" if site.kind == "token_to_image"
                    else f"how much each image position reads '{names[t]}'")
            note = colour_note("per-panel", None, percentile=self.percentile, over_image=self.img is not None)
        fig.colorbar(im, ax=ax, shrink=0.8, label="attention probability")
        ax.set_title(f"{site_label(site)} {KIND_TITLES[site.kind]}, {label}, prompt set {b}\n{what}\n"
                     + note, fontsize=8, wrap=True)
        return fig

    def redraw(self) -> None:
        self.figure = self.draw()
        self.image.value = figure_png(self.figure, self.dpi)
        self.redraws += 1

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def explore_attention(record: AttentionRecord, image=None, **kwargs) -> AttentionExplorer:
    """Build the explorer; in a notebook, the returned object displays its widgets."""
    return AttentionExplorer(record, image=image, **kwargs)
