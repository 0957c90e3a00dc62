"""The Figure class every sam-explain picture is drawn on."""

import io

from matplotlib import figure as mpl_figure


class Figure(mpl_figure.Figure):
    """A matplotlib Figure that shows itself as a PNG in Jupyter even when pyplot was never
    imported (our figures are built without pyplot, so none leaks into a pyplot session)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()
