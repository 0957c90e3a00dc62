"""The live explorer's widget: an anywidget that shows an ``ExplorerSession``'s pictures on a canvas
and sends it the learner's clicks, drags and control changes.

The frontend is ``static/explorer.js`` (an ES module, no imports: nothing is fetched) and
``static/explorer.css``, sent to the page as the widget's ``_esm`` and ``_css``; anywidget's own
JupyterLab extension (installed with the Python package) runs them. The picture travels as raw
RGB bytes (a binary buffer, no PNG encoding), and the page draws them on a canvas whose backing
store has the display's pixel ratio, so it is sharp.

Synced state: ``picture`` (H x W x 3 bytes), ``meta`` (sizes, controls, IoU, captions; see
``ExplorerSession.meta``), ``trace_html`` (the shape trace, filled when its panel is opened) and
``pixel_ratio`` (set by the page). Messages from the page: click, box, select, undo, reset, trace.

Saved or exported without a kernel (``make html``), the output holds ``text/html`` too: the
picture as it was, and a line saying the explorer needs a running kernel.
"""

from __future__ import annotations

import base64
import html
import io
from importlib import resources
from typing import Any, Dict, Optional, Union

import anywidget
import numpy as np
import traitlets

from .session import ExplorerSession, Head, Layer

STATIC = resources.files("sam_explain.explorer") / "static"


class LiveExplorer(anywidget.AnyWidget):
    """Click on the image, watch the decoder answer. Display it in JupyterLab (the last line of a
    cell). Scripted use: ``click(x, y, label=1)``, ``box(x0, y0, x1, y1)``, ``select(kind, layer,
    head, token)``, ``undo()``, ``reset()``; each returns the picture (H x W x 3 uint8) as shown, and
    updates the page. ``session`` is the ``ExplorerSession`` behind it."""

    _esm = (STATIC / "explorer.js").read_text(encoding="utf-8")
    _css = (STATIC / "explorer.css").read_text(encoding="utf-8")

    picture = traitlets.Bytes(b"").tag(sync=True)
    meta = traitlets.Dict().tag(sync=True)
    trace_html = traitlets.Unicode("").tag(sync=True)
    pixel_ratio = traitlets.Float(1.0).tag(sync=True)

    def __init__(self, session: ExplorerSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self._seq = 0
        self._traced_runs = -1  # the run whose trace ``trace_html`` holds
        self.on_msg(self._on_message)
        self.observe(self._on_ratio, names="pixel_ratio")
        self._publish()

    # --- the methods a script calls (the page sends the same as messages) -----------------------

    def click(self, x: float, y: float, label: int = 1) -> np.ndarray:
        """Add a point at image pixel (x, y) (label 1 foreground, 0 background); returns the picture."""
        return self._publish(self.session.click(x, y, label))

    def box(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Set the box (image pixels); returns the picture."""
        return self._publish(self.session.box(x0, y0, x1, y1))

    def select(self, kind: Optional[str] = None, layer: Optional[Layer] = None, head: Optional[Head] = None,
               token: Optional[Union[int, str]] = None, **options: Any) -> np.ndarray:
        """Choose the map shown (see ``ExplorerSession.select``); returns the picture."""
        return self._publish(self.session.select(kind, layer, head, token, **options))

    def undo(self) -> np.ndarray:
        """Take back the last point or box; returns the picture."""
        return self._publish(self.session.undo())

    def reset(self) -> np.ndarray:
        """Remove every prompt; returns the picture."""
        return self._publish(self.session.reset())

    @property
    def current_picture(self) -> np.ndarray:
        """The picture shown now, H x W x 3 uint8."""
        return self.session.picture

    # --- syncing ----------------------------------------------------------------------------------

    def _publish(self, picture: Optional[np.ndarray] = None, message: str = "") -> np.ndarray:
        """Send the session's picture and meta to the page (one message); returns the picture."""
        picture = self.session.picture if picture is None else picture
        self._seq += 1
        meta = self.session.meta()
        meta.update(seq=self._seq, message=message)
        meta.update(runs=self.session.runs)
        with self.hold_sync():
            if self._traced_runs != self.session.runs:
                self.trace_html = ""
            self.meta = meta
            self.picture = np.ascontiguousarray(picture).tobytes()
        return picture

    def _on_ratio(self, change: Dict[str, Any]) -> None:
        try:
            self._publish(self.session.set_ratio(float(change["new"])))
        except ValueError as err:
            self._publish(message=f"{err}")

    def _on_message(self, widget: Any, content: Dict[str, Any], buffers: Any) -> None:
        """A message from the page: do it, then send the new picture; a refused one sends its reason."""
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "click":
                self.click(content["x"], content["y"], int(content.get("label", 1)))
            elif kind == "box":
                self.box(content["x0"], content["y0"], content["x1"], content["y1"])
            elif kind == "select":
                keys = ("kind", "layer", "head", "token", "outline")
                self.select(**{k: content[k] for k in keys if k in content})
            elif kind == "undo":
                self.undo()
            elif kind == "reset":
                self.reset()
            elif kind == "trace":
                self._traced_runs = self.session.runs
                self.trace_html = self.session.trace_html()
            else:
                self._publish(message=f"unknown request {kind!r}")
        except (ValueError, KeyError, TypeError) as err:  # refused before anything changed
            self._publish(message=f"refused: {err}")
        except Exception as err:  # the model failed; the session kept its prompts and last run
            self._publish(message=f"failed: {type(err).__name__}: {err}")

    # --- without a kernel --------------------------------------------------------------------------

    def static_html(self) -> str:
        """The picture as it is now and a line saying the explorer needs a running kernel: what a
        saved notebook or its HTML export shows where the widget cannot run. No external resource."""
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.session.picture).save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        meta = self.session.meta()
        width = int(round(meta["width"] / meta["ratio"]))
        ious = ", ".join(f"{t} IoU {v:.3f}" for t, v in zip(meta["thumb_tokens"], meta["ious"])) or "no prompt yet"
        return (
            '<div class="sam-explain-live-static">'
            f'<img alt="the live explorer as it was: {html.escape(meta["caption"])}" width="{width}" '
            f'src="data:image/png;base64,{data}"/>'
            f'<p><b>Live explorer: it needs a running kernel.</b> This is a static copy of the picture as the '
            f'notebook left it ({html.escape(meta["caption"])}; predicted {html.escape(ious)}). Run the notebook '
            f'in JupyterLab to click on the image.</p></div>'
        )

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data = dict(data)
        data["text/html"] = self.static_html()
        return data, metadata
