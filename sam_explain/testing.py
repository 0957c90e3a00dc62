"""Helpers shared by the tests and the benchmarks: the official code, side by side.

``official_modeling()`` imports ``segment_anything.modeling`` from the PyPI package
without running ``segment_anything/__init__.py`` (which imports torchvision, absent
on CPU-only machines).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Tuple

import torch
from torch import nn


def official_modeling() -> types.ModuleType:
    """Return the official ``segment_anything.modeling`` module (needs the PyPI package)."""
    if "segment_anything.modeling" in sys.modules:
        return sys.modules["segment_anything.modeling"]
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the official package is not installed: pip install segment-anything")
    if "segment_anything" not in sys.modules:
        parent = types.ModuleType("segment_anything")
        parent.__path__ = list(spec.submodule_search_locations)  # a package, its __init__ not run
        sys.modules["segment_anything"] = parent
    return importlib.import_module("segment_anything.modeling")


def build_official_pair(
    *,
    transformer_dim: int = 256,
    depth: int = 2,
    num_heads: int = 8,
    mlp_dim: int = 2048,
    num_multimask_outputs: int = 3,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
    image_embedding_size: Tuple[int, int] = (64, 64),
    input_image_size: Tuple[int, int] = (1024, 1024),
    mask_in_chans: int = 16,
    seed: int = 0,
) -> Tuple[nn.Module, nn.Module]:
    """Official (MaskDecoder, PromptEncoder) with random weights, every parameter and
    buffer drawn from N(0, 1/fan) so that the outputs are not dominated by defaults."""
    sa = official_modeling()
    torch.manual_seed(seed)
    decoder = sa.MaskDecoder(
        num_multimask_outputs=num_multimask_outputs,
        transformer=sa.TwoWayTransformer(
            depth=depth, embedding_dim=transformer_dim, mlp_dim=mlp_dim, num_heads=num_heads
        ),
        transformer_dim=transformer_dim,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
    ).eval()
    prompt_encoder = sa.PromptEncoder(
        embed_dim=transformer_dim,
        image_embedding_size=image_embedding_size,
        input_image_size=input_image_size,
        mask_in_chans=mask_in_chans,
    ).eval()
    randomize_(decoder, seed)
    randomize_(prompt_encoder, seed + 1)
    return decoder, prompt_encoder


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every float parameter with seeded noise (norm weights near 1)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if name.endswith("bias"):
            p.copy_(0.1 * noise)
        elif p.dim() == 1:  # norm weights
            p.copy_(1.0 + 0.1 * noise)
        else:
            fan_in = p[0].numel() if p.dim() > 1 else p.shape[-1]
            p.copy_(noise / fan_in**0.5 if p.dim() > 1 and "Embedding" not in name else noise)
    return module
