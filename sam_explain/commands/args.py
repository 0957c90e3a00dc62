"""What the commands share: parsing numbers and sizes, reading an image or a saved embedding, the
model a command runs (the toy by default), and the memory check before a batch runs.

Every function here raises ``CommandError`` (a ValueError) with a message for the user; ``cli.main``
prints it as one line, ``sam-explain COMMAND: message``, and exits with status 2.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

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
    if not all(np.isfinite(values)):
        raise CommandError(f"{what} must be finite numbers, got {text!r}")
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


# --- argument types: a bad value is an argparse error, one line, before anything runs ----------------


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {value}")
    return value


def size_in_bytes(text: str) -> int:
    """An argparse type: a memory size such as 8G, 512M or 1000000 (bytes)."""
    import argparse

    from ..utils.memory import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def device_arg(text: str):
    """An argparse type: a device that exists here (cpu, cuda, cuda:1, ...)."""
    import argparse

    from ..utils.device import as_device

    try:
        return as_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def writable_path(path: str, what: str = "--out") -> Path:
    """A file or folder to write: refused at once if a parent is a file or cannot be created."""
    out = Path(path)
    for parent in [out, *out.parents] if not out.suffix else list(out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise CommandError(f"{what} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise CommandError(f"{what} {path}: cannot write into {parent}")
            break
    return out


# --- which model a command runs: the toy (default), a checkpoint, or random weights -----------------


def add_model_options(p) -> None:
    """--checkpoint PATH or --random; without either, the trained toy model (sam_explain.toy_model())."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--checkpoint", help="an official SAM, decoder-only or Hugging Face checkpoint "
                                            "(default: the trained toy model)")
    group.add_argument("--random", action="store_true",
                       help="SAM's configuration with seeded random weights: an untrained decoder, whose "
                            "attention is near uniform (every output says so)")


@dataclass
class Models:
    """What a command runs: the modules, what they are (printed on every output), and an example image
    (H0 x W0 x 3 uint8, or None) with its embedding 1 x C x H x W."""

    prompt_encoder: torch.nn.Module
    decoder: torch.nn.Module
    label: str
    image: Optional[np.ndarray]
    image_embeddings: torch.Tensor
    toy: Optional[object] = None  # the ToyModel, when it is the toy


def load_models(args, seed: int = 0) -> Models:
    """The models of --checkpoint / --random / the toy (see ``add_model_options``), and an image embedding:
    a toy scene's (``make_scene(seed)``) for the toy, seeded noise otherwise."""
    from ..modeling.build import build_mask_decoder, build_prompt_encoder, randomize_

    if getattr(args, "checkpoint", None):
        from ..checkpoint import load_sam_checkpoint

        parts = load_sam_checkpoint(args.checkpoint)
        if parts.mask_decoder is None:
            raise CommandError(f"{args.checkpoint} holds no mask decoder ({parts.format}): this command runs one")
        decoder, prompt_encoder = parts.mask_decoder, parts.prompt_encoder
        label = f"weights: {parts.format} checkpoint {args.checkpoint}"
        if prompt_encoder is None:
            torch.manual_seed(seed)
            prompt_encoder = randomize_(build_prompt_encoder(), seed + 1)
            label += " (it holds no prompt encoder: SAM's, with seeded random weights)"
        h, w = prompt_encoder.image_embedding_size
        noise = torch.randn(1, decoder.transformer_dim, h, w, generator=torch.Generator().manual_seed(seed))
        return Models(prompt_encoder.eval(), decoder.eval(), label + "; image embedding: seeded noise", None, noise)
    if getattr(args, "random", False):
        torch.manual_seed(seed)
        decoder = randomize_(build_mask_decoder(), seed)
        prompt_encoder = randomize_(build_prompt_encoder(), seed + 1)
        noise = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(seed))
        return Models(prompt_encoder.eval(), decoder.eval(),
                      "weights: RANDOM (SAM's configuration, seed {}), untrained; image embedding: seeded noise"
                      .format(seed), None, noise)
    from ..toy import make_scene, toy_model

    model = toy_model()
    scene = make_scene(seed)
    with torch.no_grad():
        embedding = model.embed(scene.image)  # 1 x C x H x W
    return Models(model.prompt_encoder, model.mask_decoder,
                  f"weights: the trained toy model; image: toy scene {seed} (sam_explain.toy_scene({seed}))",
                  scene.image, embedding, toy=model)


def check_memory(estimate: int, limit: Optional[int], what: str) -> None:
    """Refuse a run whose estimated memory exceeds ``limit`` (default: half of the available memory)."""
    from ..utils.memory import available_bytes, format_size

    if limit is None:
        available = available_bytes()
        if available is None:
            return
        limit, source = available // 2, f"half of the {format_size(available)} available"
    else:
        source = "--max-memory"
    if estimate > limit:
        raise CommandError(f"{what} would take about {format_size(estimate)}, over the limit of {format_size(limit)} "
                           f"({source}); use a smaller --batch, or raise --max-memory")
