"""What the commands share: parsing numbers, reading an image or a saved embedding.

Every function here raises ``CommandError`` (a ValueError) with a message for the user; ``cli.main``
prints it as one line, ``sam-explain COMMAND: message``, and exits with status 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import numpy as np
import torch


class CommandError(ValueError):
    """A bad argument or input file: the message says what was expected and what was given."""


def parse_numbers(text: str, count: int, what: str) -> List[float]:
    """``"10,20"`` -> [10.0, 20.0]: exactly ``count`` numbers separated by commas (or spaces)."""
    parts = [s for s in re.split(r"[,\s]+", text.strip()) if s]
    try:
        values = [float(s) for s in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise CommandError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def load_image(path: str) -> np.ndarray:
    """An image file (PNG, JPEG, ...) as H0 x W0 x 3 uint8 RGB."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))  # H0 x W0 x 3 uint8
    except (OSError, ValueError) as err:
        raise CommandError(f"cannot read the image {path!r}: {err}") from err


def load_embedding(path: str) -> torch.Tensor:
    """A saved image embedding (.npy, .safetensors with one tensor, or a .pt/.pth tensor), read without
    unpickling arbitrary objects: 1 x C x H x W float32 (a C x H x W one gains its leading 1)."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            t = torch.from_numpy(np.load(path, allow_pickle=False))
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(path)
            if len(tensors) != 1:
                raise CommandError(f"{path} holds {len(tensors)} tensors, expected 1")
            t = next(iter(tensors.values()))
        else:
            t = torch.load(path, map_location="cpu", weights_only=True)
    except CommandError:
        raise
    except Exception as err:  # any reader's complaint about the file
        raise CommandError(f"cannot read an embedding from {path!r}: {str(err).splitlines()[0]}") from err
    if not isinstance(t, torch.Tensor):
        raise CommandError(f"{path} holds a {type(t).__name__}, expected a tensor")
    if t.dim() == 3:
        t = t[None]  # C x H x W -> 1 x C x H x W
    return t.float()
