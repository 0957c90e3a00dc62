"""Input checks that speak the docs' shape symbols.

Every public forward validates its inputs with :func:`expect_shape` before it
computes anything, so a bad call raises :class:`ShapeError` and leaves the model
untouched. Messages name the symbolic shape and both the expected and the actual
numbers, e.g.::

    MaskDecoder: dense_prompt_embeddings must be B x C x H x W = 3 x 256 x 64 x 64,
    got 1 x 256 x 64 x 64 (B is the number of prompt sets, from sparse_prompt_embeddings)
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch


class ShapeError(ValueError):
    """A tensor handed to sam-explain does not have the documented shape or value."""


def fmt_shape(shape) -> str:
    return " x ".join(str(int(s)) for s in shape) if len(shape) else "(scalar)"


def expect_shape(
    where: str,
    name: str,
    tensor: object,
    symbols: str,
    hint: str = "",
    **known: Optional[int],
) -> Dict[str, int]:
    """Check ``tensor`` against a symbolic shape such as ``"B N 2"``.

    ``symbols`` is a space-separated list; a number stands for itself, a name is
    looked up in ``known`` (a value of None, or a name not given, binds to whatever
    the tensor has). Returns the bound values of every named symbol.
    Raises ShapeError naming the expected and the actual shape otherwise.
    """
    axes = symbols.split()
    if not isinstance(tensor, torch.Tensor):
        raise ShapeError(
            f"{where}: {name} must be a torch.Tensor of shape {' x '.join(axes)}, "
            f"got {type(tensor).__name__}"
        )
    expected = [int(ax) if ax.isdigit() else known.get(ax) for ax in axes]
    actual = tuple(tensor.shape)
    ok = len(actual) == len(axes) and all(e is None or e == a for e, a in zip(expected, actual))
    if not ok:
        # "B x C x H x W = 3 x 256 x 64 x 64"; an axis with no fixed size keeps its symbol.
        want = " x ".join(axes)
        if any(e is not None for e, ax in zip(expected, axes) if not ax.isdigit()):
            want += " = " + " x ".join(ax if e is None else str(e) for ax, e in zip(axes, expected))
        msg = f"{where}: {name} must be {want}, got {fmt_shape(actual)}"
        if len(actual) != len(axes):
            msg += f" ({len(actual)} dims where {len(axes)} are expected)"
        if hint:
            msg += f" ({hint})"
        raise ShapeError(msg)
    return {ax: a for ax, a in zip(axes, actual) if not ax.isdigit()}


def expect_like_weights(where: str, name: str, tensor: torch.Tensor, weight: torch.Tensor, owner: str) -> None:
    """Check that ``tensor`` is on the weights' device and in their dtype.

    Under ``torch.autocast`` the autocast dtype (e.g. bfloat16) is accepted too: there, activations
    between layers legitimately differ from the weights' dtype. Raises ShapeError otherwise.
    """
    dtypes = {weight.dtype}
    device_type = weight.device.type
    if torch.is_autocast_enabled(device_type):
        dtypes.add(torch.get_autocast_dtype(device_type))
    if tensor.dtype not in dtypes or tensor.device != weight.device:
        raise ShapeError(
            f"{where}: {name} is {tensor.dtype} on {tensor.device}, but the {owner}'s weights are "
            f"{weight.dtype} on {weight.device}; move the input or the model with .to()"
        )


def expect_finite(where: str, name: str, tensor: torch.Tensor) -> None:
    """Refuse a NaN or an infinity in ``tensor`` (floating point), naming how many and where the first is."""
    if tensor.is_floating_point() or tensor.is_complex():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = ~finite
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ShapeError(f"{where}: {name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), the first at "
                             f"index {first}; every value must be finite")


def expect_labels(where: str, name: str, labels: torch.Tensor, allowed, meaning: str) -> None:
    """Point labels: whole numbers among ``allowed`` (checked before any cast, so that 0.9 is not read as 0)."""
    if labels.is_complex() or labels.dtype == torch.bool:
        raise ShapeError(f"{where}: {name} must be whole numbers ({meaning}), got dtype {labels.dtype}")
    if labels.is_floating_point():
        expect_finite(where, name, labels)
        fractional = labels != labels.round()
        if bool(fractional.any()):
            raise ShapeError(f"{where}: {name} must be whole numbers ({meaning}), got "
                             f"{sorted(set(round(v, 6) for v in labels[fractional].tolist()))[:5]}")
    bad = ~torch.isin(labels, torch.tensor(list(allowed), device=labels.device, dtype=labels.dtype))
    if bool(bad.any()):
        raise ShapeError(f"{where}: {name} must be {meaning}, got {sorted(set(labels[bad].tolist()))[:5]}")


def expect_flag(where: str, name: str, value: object) -> bool:
    """A boolean argument: a bool or a numpy bool (what the official code accepts), returned as a bool."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{where}: {name} must be a bool, got {type(value).__name__} ({value!r}; True or False)")
