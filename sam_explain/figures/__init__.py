"""Figures of the decoder's internals (matplotlib; every function returns its Figure)."""

from .attention import plot_image_to_token, plot_token_self, plot_token_to_image
from .geometry import grid_to_image, resized_shape, to_input_frame, to_original_frame
from .masks import show_mask

__all__ = [
    "grid_to_image", "plot_image_to_token", "plot_token_self", "plot_token_to_image", "resized_shape", "show_mask",
    "to_input_frame", "to_original_frame",
]
