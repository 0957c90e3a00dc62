"""Shapes in the docs' symbols: the input checks (``check``), the documented-shape contract
(``contract``) and docs/shapes.md generated from it (``markdown``)."""

from .check import ShapeError, expect_like_weights, expect_shape, fmt_shape

__all__ = ["ShapeError", "expect_like_weights", "expect_shape", "fmt_shape"]
