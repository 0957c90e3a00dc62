"""Figures of the decoder's internals (matplotlib; every function returns its Figure)."""

from .attention import plot_image_to_token, plot_token_self, plot_token_to_image
from .geometry import grid_to_image, resized_shape, to_input_frame, to_original_frame


def _show_figures_in_jupyter() -> None:
    """Our figures are built without pyplot, so IPython shows them as a PNG only once the
    inline backend has been loaded (by a first pyplot figure). Register the PNG formatter
    ourselves so that a returned Figure displays in a notebook's first cell too."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    import io

    from matplotlib.figure import Figure

    def to_png(fig: Figure) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()

    png = shell.display_formatter.formatters["image/png"]
    if Figure not in png.type_printers:
        png.for_type(Figure, to_png)


_show_figures_in_jupyter()

__all__ = [
    "grid_to_image", "plot_image_to_token", "plot_token_self", "plot_token_to_image", "resized_shape",
    "to_input_frame", "to_original_frame",
]
