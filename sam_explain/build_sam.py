"""Build SAM (vit_b, vit_l, vit_h), with the official entry points of ``segment_anything.build_sam``.

    sam = build_sam(checkpoint="sam_vit_b_01ec64.pth")       # model type read from the keys
    sam = sam_model_registry["vit_l"](checkpoint="sam_vit_l_0b3195.pth")

The constructors themselves live in ``sam_explain.modeling.build`` (re-exported here); reading and
loading a checkpoint in ``sam_explain.checkpoint``. Loading is strict: every key and every shape of
the checkpoint must match the model; nothing is unpickled beyond tensors.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from .checkpoint import SamCheckpointError, detect_model_type, load_sam, load_state_dict_strict
from .modeling.build import (
    SAM_CONFIGS, build_mask_decoder, build_prompt_encoder, make_sam, sam_config_from_state_dict,
)
from .modeling.sam import Sam

__all__ = [
    "SAM_CONFIGS", "SamCheckpointError", "build_mask_decoder", "build_prompt_encoder", "build_sam", "build_sam_vit_b",
    "build_sam_vit_h", "build_sam_vit_l", "detect_model_type", "load_state_dict_strict", "make_sam",
    "sam_config_from_state_dict", "sam_model_registry",
]


def build_sam(
    checkpoint: Union[str, os.PathLike, None] = None,
    model_type: Optional[str] = None,
    *,
    decoder_num_heads: int = 8,
) -> Sam:
    """SAM in eval mode, with the weights of ``checkpoint`` if given.

    model_type: 'vit_b', 'vit_l', 'vit_h' (or 'default' = 'vit_h'). When None, the model
    is built from the checkpoint's shapes (``sam_config_from_state_dict``: a released
    model or any other in the official layout), and is 'vit_h' without a checkpoint (as
    the official ``build_sam``). A checkpoint of another type than the one asked for is
    an error naming both.
    """
    if model_type == "default":
        model_type = "vit_h"
    if model_type is not None and model_type not in SAM_CONFIGS:
        raise ValueError(f"model_type must be one of {sorted(SAM_CONFIGS)} or 'default', got {model_type!r}")
    if checkpoint is None:
        return make_sam(**SAM_CONFIGS[model_type or "vit_h"])
    return load_sam(checkpoint, model_type, decoder_num_heads=decoder_num_heads).eval()


def build_sam_vit_h(checkpoint: Union[str, os.PathLike, None] = None) -> Sam:
    return build_sam(checkpoint, "vit_h")


def build_sam_vit_l(checkpoint: Union[str, os.PathLike, None] = None) -> Sam:
    return build_sam(checkpoint, "vit_l")


def build_sam_vit_b(checkpoint: Union[str, os.PathLike, None] = None) -> Sam:
    return build_sam(checkpoint, "vit_b")


sam_model_registry = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
}
