"""Helpers with the official paths: ``utils.transforms`` (ResizeLongestSide and SAM's resize-and-pad geometry)."""
