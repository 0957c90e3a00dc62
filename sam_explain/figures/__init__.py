"""Figures of the decoder's internals, laid out with matplotlib; every function returns its Figure.
The attention panels' pixels come from ``sam_explain.render`` (numpy), the one renderer that the
``attention`` command and the live explorer (``sam_explain.explorer``) use too.

  attention      plot_token_to_image, plot_image_to_token, plot_token_self
  explorer       explore_attention (ipywidgets, one record; the live one is sam_explain.live_explorer)
  masks          show_mask, plot_masks
  architecture   plot_architecture
  figure         Figure, which shows itself in Jupyter without pyplot

The geometry functions re-exported here live in ``sam_explain.utils.transforms``.
"""

from ..utils.transforms import grid_to_image, resized_shape, to_input_frame, to_original_frame
from .attention import plot_image_to_token, plot_token_self, plot_token_to_image
from .masks import plot_masks, show_mask

__all__ = [
    "grid_to_image", "plot_image_to_token", "plot_masks", "plot_token_self", "plot_token_to_image", "resized_shape",
    "show_mask", "to_input_frame", "to_original_frame",
]
