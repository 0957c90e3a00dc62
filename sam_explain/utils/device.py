"""``as_device``: a device given by the user, checked before anything is built on it."""

from __future__ import annotations

from typing import Union

import torch


def as_device(device: Union[str, torch.device, None], default: str = "cpu") -> torch.device:
    """``device`` as a torch.device that exists here: "cpu", "cuda", "cuda:1", "mps", ...
    Raises ValueError naming what was asked for and what this machine has."""
    if device is None:
        device = default
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} asked for, but MPS is not available here; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"device {device!r}: sam-explain runs on cpu, cuda or mps")
    return dev
