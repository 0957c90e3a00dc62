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


# --- which model a command runs: the toy (default), a checkpoint, or random weights; SAM or SAM 2 -----


def add_model_options(p) -> None:
    """--checkpoint PATH or --random; without either, the trained toy model (sam_explain.toy_model()).
    --sam2: SAM 2.1's decoder side (a SAM 2 --checkpoint is recognised without it)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--checkpoint", help="an official SAM or SAM 2 / 2.1, decoder-only or Hugging Face checkpoint "
                                            "(default: the trained toy model)")
    group.add_argument("--random", action="store_true",
                       help="SAM's (with --sam2, SAM 2.1's) configuration with seeded random weights: an untrained "
                            "decoder, whose attention is near uniform (every output says so)")
    p.add_argument("--sam2", action="store_true",
                   help="SAM 2.1's decoder: the toy SAM 2 (default), or random weights with --random; a SAM 2 "
                        "--checkpoint is recognised without it (docs/sam2.md)")


@dataclass
class Models:
    """What a command runs: the modules, what they are (printed on every output), and an example image
    (H0 x W0 x 3 uint8, or None) with its embedding 1 x C x H x W. SAM 2's decoder also takes
    ``high_res_features`` [feat_s0 1 x C/8 x 4H x 4W, feat_s1 1 x C/4 x 2H x 2W] (None for SAM)."""

    prompt_encoder: torch.nn.Module
    decoder: torch.nn.Module
    label: str
    image: Optional[np.ndarray]
    image_embeddings: torch.Tensor
    toy: Optional[object] = None  # the ToyModel (or ToySam2Model), when it is a toy
    high_res_features: Optional[List[torch.Tensor]] = None

    @property
    def sam2(self) -> bool:
        """Whether the decoder is SAM 2's (``sam_explain.sam2``)."""
        from ..shapes.registry import component_kind

        return component_kind(self.decoder) == "sam2_decoder"

    def embed(self, image: np.ndarray):
        """The toy's embedding of ``image`` and, for the toy SAM 2, its high-resolution features:
        (1 x C x H x W, [1 x C/8 x 4H x 4W, 1 x C/4 x 2H x 2W] or None)."""
        if self.sam2:
            return self.toy.embed(image)
        return self.toy.embed(image), None


STAND_IN = "; high-resolution features: stand-ins (the image embedding repeated to 4H x 4W and 2H x 2W)"


def load_models(args, seed: int = 0) -> Models:
    """The models of --checkpoint / --random / the toy, SAM's or with --sam2 SAM 2's (see
    ``add_model_options``), and an image embedding: a toy scene's (``make_scene(seed)``) for a toy,
    seeded noise otherwise."""
    from ..modeling.build import build_mask_decoder, build_prompt_encoder, randomize_

    sam2 = getattr(args, "sam2", False)
    if getattr(args, "checkpoint", None):
        from ..checkpoint import load_sam_checkpoint
        from ..sam2 import Sam2Parts, build_sam2_prompt_encoder, stand_in_high_res_features

        parts = load_sam_checkpoint(args.checkpoint)
        is_sam2 = isinstance(parts, Sam2Parts)
        if sam2 and not is_sam2:
            raise CommandError(f"--sam2: {args.checkpoint} is a SAM (1) checkpoint ({parts.format}); drop --sam2 to "
                               "run it, or give a SAM 2 / 2.1 file")
        if parts.mask_decoder is None:
            raise CommandError(f"{args.checkpoint} holds no mask decoder ({parts.format}): this command runs one")
        decoder, prompt_encoder = parts.mask_decoder, parts.prompt_encoder
        what = f"SAM 2 {parts.format}" if is_sam2 else parts.format
        label = f"weights: {what} checkpoint {args.checkpoint}"
        if prompt_encoder is None:
            torch.manual_seed(seed)
            build = build_sam2_prompt_encoder if is_sam2 else build_prompt_encoder
            prompt_encoder = randomize_(build(), seed + 1)
            label += " (it holds no prompt encoder: SAM's, with seeded random weights)"
        h, w = prompt_encoder.image_embedding_size
        noise = torch.randn(1, decoder.transformer_dim, h, w, generator=torch.Generator().manual_seed(seed))
        features = stand_in_high_res_features(decoder, noise) if is_sam2 else None
        label += "; image embedding: seeded noise" + (STAND_IN if features is not None else "")
        return Models(prompt_encoder.eval(), decoder.eval(), label, None, noise, high_res_features=features)
    if getattr(args, "random", False):
        from ..sam2 import build_sam2_mask_decoder, build_sam2_prompt_encoder, stand_in_high_res_features

        build_decoder, build_encoder = ((build_sam2_mask_decoder, build_sam2_prompt_encoder) if sam2
                                        else (build_mask_decoder, build_prompt_encoder))
        torch.manual_seed(seed)
        decoder = randomize_(build_decoder(), seed).eval()
        prompt_encoder = randomize_(build_encoder(), seed + 1).eval()
        noise = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(seed))
        features = stand_in_high_res_features(decoder, noise)  # None for SAM's decoder
        config = "SAM 2.1's" if sam2 else "SAM's"
        return Models(prompt_encoder, decoder,
                      f"weights: RANDOM ({config} configuration, seed {seed}), untrained; image embedding: seeded "
                      f"noise" + (STAND_IN if sam2 else ""), None, noise, high_res_features=features)
    from ..toy import make_scene, toy_model, toy_sam2_model

    scene = make_scene(seed)
    image = f"image: toy scene {seed} (sam_explain.toy_scene({seed}))"
    if sam2:
        model = toy_sam2_model()
        embedding, features = model.embed(scene.image)  # 1 x C x H x W, [1 x C/8 x 4H x 4W, 1 x C/4 x 2H x 2W]
        return Models(model.prompt_encoder, model.mask_decoder, f"weights: the trained toy SAM 2; {image}",
                      scene.image, embedding, toy=model, high_res_features=features)
    model = toy_model()
    embedding = model.embed(scene.image)  # 1 x C x H x W
    return Models(model.prompt_encoder, model.mask_decoder, f"weights: the trained toy model; {image}",
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
