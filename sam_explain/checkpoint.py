"""SAM's checkpoints: which layout a file follows, its names mapped to ours, and loading, safely.

One place for each job:
  detect_layout          which layout the keys follow (below)
  hf_to_official_keys    Hugging Face names -> the official ones
  detect_model_type      vit_b / vit_l / vit_h (or custom) from the image encoder's shapes
  load_sam_checkpoint    the prompt encoder and mask decoder of any layout below (a SAM 2 file is
                         handed to ``sam_explain.sam2.checkpoint``)
  load_sam               the whole of SAM from an official file (what ``build_sam(checkpoint=...)`` runs)

Reading a file and matching a state dict to a module are ``sam_explain.state_dicts``
(``read_state_dict``, ``load_state_dict_strict``, ``build_from_state_dict``, ...), re-exported here.

Layouts understood (detected from the keys):
  official   Meta's full SAM file (sam_vit_b_01ec64.pth, ...): a flat state dict with
             image_encoder.* / prompt_encoder.* / mask_decoder.* keys.
  decoder    a MaskDecoder state dict alone (keys such as ``iou_token.weight``).
  prompt_encoder  a PromptEncoder state dict alone (``pe_layer.positional_encoding_gaussian_matrix``, ...).
  huggingface  transformers' SamModel (safetensors or .bin): keys renamed (layer_norm1..4,
             upscale_conv1, proj_in/proj_out, point_embed, mask_embed.*, shared_embedding...), mapped back here.

Files are read with ``torch.load(weights_only=True)`` or safetensors: a pickle that
would build arbitrary Python objects is refused. Every key and shape is checked; an
error names what was found and what was expected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch

from .modeling import MaskDecoder, PromptEncoder
from .modeling.build import (
    SAM_CONFIGS, build_mask_decoder, build_prompt_encoder, count_indexed, decoder_config_from_state_dict, make_sam,
    prompt_encoder_config_from_state_dict, sam_config_from_state_dict, shapes_of,
)
from .modeling.sam import Sam
from .sam2.checkpoint import Sam2Parts, load_sam2_state_dict
from .state_dicts import (
    HF_DECODER_RULES, HF_PROMPT_RULES, LIMITS, CheckpointError, SamCheckpointError, build_from_state_dict,
    check_state_dict, compare_state_dict, load_state_dict_strict, read_config, read_state_dict, rename_key,
)
from .utils.device import as_device

__all__ = [
    "LIMITS", "CheckpointError", "SamCheckpointError", "SamParts", "build_from_state_dict", "check_state_dict",
    "compare_state_dict", "detect_layout", "detect_model_type", "hf_to_official_keys", "load_sam",
    "load_sam_checkpoint", "load_state_dict_strict", "read_config", "read_state_dict",
]


StateDict = Dict[str, torch.Tensor]


@dataclass
class SamParts:
    """What ``load_sam_checkpoint`` returns. A part the file does not hold is None."""

    prompt_encoder: Optional[PromptEncoder]
    mask_decoder: Optional[MaskDecoder]
    format: str  # "official", "decoder", "prompt_encoder", "decoder+prompt_encoder" or "huggingface"
    model_type: Optional[str] = None  # vit_b / vit_l / vit_h, from the image encoder's keys if present
    path: str = ""
    image_encoder_keys: int = 0  # how many image-encoder tensors the file holds (not loaded here)
    config: Dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Layouts


_DECODER_MARK = "iou_token.weight"
_PROMPT_MARK = "pe_layer.positional_encoding_gaussian_matrix"


def is_sam2(keys) -> bool:
    """SAM 2's keys: Meta's ``sam_mask_decoder.*`` / ``sam_prompt_encoder.*``, or a decoder (alone or in a
    Hugging Face Sam2Model) with an object-score token, high-resolution convs or ``mlp.layers`` in its
    two-way blocks, or transformers' single 4 x C ``point_embed``."""
    return any(k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) or "obj_score_token" in k
               or "pred_obj_score_head" in k or k.endswith(("conv_s0.weight", "prompt_encoder.point_embed.weight"))
               or re.search(r"(^|\.)transformer\.layers\.\d+\.mlp\.layers\.", k) for k in keys)


def detect_layout(sd: Mapping[str, object]) -> str:
    """Name the layout of a state dict (see the module docstring; "sam2" for SAM 2's), or raise
    CheckpointError."""
    keys = set(sd)
    if is_sam2(keys):
        return "sam2"
    hf_marks = ("shared_image_embedding.positional_embedding", "mask_decoder.upscale_conv1.weight",
                "prompt_encoder.point_embed.0.weight", "prompt_encoder.shared_embedding.positional_embedding")
    if any(k in keys for k in hf_marks) or any(k.startswith("vision_encoder.") for k in keys):
        return "huggingface"
    has_dec = "mask_decoder." + _DECODER_MARK in keys
    has_pe = "prompt_encoder." + _PROMPT_MARK in keys
    if has_dec or has_pe:
        if any(k.startswith("image_encoder.") for k in keys):
            return "official"
        return "decoder+prompt_encoder" if has_dec and has_pe else ("decoder" if has_dec else "prompt_encoder") + "-prefixed"
    if _DECODER_MARK in keys:
        return "decoder"
    if _PROMPT_MARK in keys:
        return "prompt_encoder"
    sample = sorted(keys)[:4]
    raise CheckpointError(
        f"no SAM decoder or prompt encoder found: expected keys such as 'mask_decoder.{_DECODER_MARK}' "
        f"(official), '{_DECODER_MARK}' (decoder alone), '{_PROMPT_MARK}' (prompt encoder alone) or "
        f"'mask_decoder.upscale_conv1.weight' (Hugging Face); found {len(keys)} keys such as {sample}"
    )


def _split_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


# (pattern, replacement) on a key of transformers' prompt encoder, prefix removed: SAM's four point_embed.k
_HF_PROMPT_RULES: List[Tuple[str, str]] = [(r"^point_embed\.(\d+)\.", r"point_embeddings.\1.")] + HF_PROMPT_RULES
_HF_MLP = re.compile(r"^(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.(proj_in|proj_out|layers\.(\d+))\.(.+)$")


def hf_to_official_keys(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Map a transformers SamModel state dict onto the official ``prompt_encoder.*`` /
    ``mask_decoder.*`` names (the vision encoder's keys are left out)."""
    out: StateDict = {}
    prompt = _split_prefix(sd, "prompt_encoder.")
    if "shared_embedding.positional_embedding" not in prompt and "shared_image_embedding.positional_embedding" in sd:
        prompt["shared_embedding.positional_embedding"] = sd["shared_image_embedding.positional_embedding"]
    for k, v in prompt.items():
        out["prompt_encoder." + rename_key(k, _HF_PROMPT_RULES)] = v

    decoder = _split_prefix(sd, "mask_decoder.")
    # An MLP of L layers is proj_in, layers.0 .. layers.(L-3), proj_out in transformers.
    hidden_count: Dict[str, int] = {}
    for k in decoder:
        m = _HF_MLP.match(k)
        if m and m.group(3) is not None:
            hidden_count[m.group(1)] = max(hidden_count.get(m.group(1), 0), int(m.group(3)) + 1)
    for k, v in decoder.items():
        m = _HF_MLP.match(k)
        if m:
            mlp, part, hidden, rest = m.groups()
            if part == "proj_in":
                index = 0
            elif part == "proj_out":
                index = hidden_count.get(mlp, 0) + 1
            else:
                index = int(hidden) + 1
            k = f"{mlp}.layers.{index}.{rest}"
        else:
            k = rename_key(k, HF_DECODER_RULES)
        out["mask_decoder." + k] = v
    return out


def detect_model_type(state_dict: Mapping[str, object]) -> str:
    """'vit_b', 'vit_l' or 'vit_h', from the image encoder's width E (``patch_embed``'s E x 3 x P x P)
    and its number of blocks (official ``image_encoder.*`` or Hugging Face ``vision_encoder.*`` keys);
    'custom (...)' for another encoder. A file holding only a few encoder keys (no blocks) is named
    by its width. Raises SamCheckpointError when there is no image encoder."""
    shapes = shapes_of(state_dict)
    for prefix, patch, blocks in (("image_encoder.", "patch_embed.proj.weight", "blocks."),
                                  ("vision_encoder.", "patch_embed.projection.weight", "layers.")):
        if prefix + "pos_embed" in shapes:
            width = shapes[prefix + "pos_embed"][-1]  # 1 x H x W x E
        elif prefix + patch in shapes:
            width = shapes[prefix + patch][0]
        else:
            continue
        depth = count_indexed(shapes, prefix + blocks)
        for name, cfg in SAM_CONFIGS.items():
            if cfg["encoder_embed_dim"] == width and depth in (0, cfg["encoder_depth"]):
                return name
        known = ", ".join(f"{n}: E = {c['encoder_embed_dim']}, {c['encoder_depth']} blocks"
                          for n, c in SAM_CONFIGS.items())
        return f"custom (E = {width}, {depth} blocks; released: {known})"
    raise SamCheckpointError(
        f"not a full SAM checkpoint: no 'image_encoder.pos_embed' among its {len(shapes)} keys "
        "(a decoder-only checkpoint has no image encoder; see sam_explain.checkpoint.load_sam_checkpoint)"
    )


def _device(device: str | torch.device) -> torch.device:
    try:
        return as_device(device)
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def load_sam_checkpoint(
    path: str | os.PathLike,
    *,
    num_heads: int = 8,
    image_embedding_size: Tuple[int, int] = (64, 64),
    input_image_size: Tuple[int, int] = (1024, 1024),
    device: str | torch.device = "cpu",
) -> Union[SamParts, Sam2Parts]:
    """Load the prompt encoder and mask decoder held by a checkpoint.

    Arguments:
      path: an official SAM file, a decoder or prompt-encoder state dict, or a
        transformers SamModel file (.safetensors or .bin); or a SAM 2 / 2.1 file (Meta's, transformers'
        Sam2Model, a SAM 2 decoder alone), loaded by ``sam_explain.sam2.load_sam2_state_dict`` with
        the released models' decoder flags and returned as its ``Sam2Parts``.
      num_heads: h, which the weights cannot tell (8 in SAM).
      image_embedding_size, input_image_size: the grid (H, W) and the padded input size,
        which the weights cannot tell either (64 x 64 and 1024 x 1024 in SAM).
      device: where to put the modules.

    Returns SamParts with both modules in eval mode (a part the file lacks is None).
    Raises CheckpointError on an unreadable, unsafe or mismatched file.
    """
    path = os.fspath(path)
    device = _device(device)
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise CheckpointError(f"num_heads: expected a whole number of heads h >= 1 (8 in SAM), got {num_heads!r}")
    sd = read_state_dict(path)
    layout = detect_layout(sd)
    if layout == "sam2":
        return load_sam2_state_dict(sd, path, num_heads=num_heads, image_embedding_size=image_embedding_size,
                                    input_image_size=input_image_size, device=device)
    has_encoder = any(k.startswith(("image_encoder.", "vision_encoder.")) for k in sd)
    model_type = detect_model_type(sd) if has_encoder else None
    image_encoder_keys = sum(k.startswith(("image_encoder.", "vision_encoder.")) for k in sd)
    if layout == "huggingface":
        sd = hf_to_official_keys(sd)
    if layout in ("decoder", "prompt_encoder"):
        dec_sd = sd if layout == "decoder" else {}
        pe_sd = sd if layout == "prompt_encoder" else {}
    else:
        dec_sd = _split_prefix(sd, "mask_decoder.")
        pe_sd = _split_prefix(sd, "prompt_encoder.")
    fmt = layout.replace("-prefixed", "")

    decoder = prompt_encoder = None
    config: Dict[str, object] = {}
    if dec_sd:
        cfg = read_config(lambda: decoder_config_from_state_dict(dec_sd, num_heads=num_heads), path)
        if cfg["transformer_dim"] % (num_heads * cfg["attention_downsample_rate"]) != 0:
            raise CheckpointError(
                f"{path}: h = {num_heads} heads do not divide the decoder's C / downsample_rate = "
                f"{cfg['transformer_dim']} / {cfg['attention_downsample_rate']}; pass num_heads="
            )
        decoder = build_from_state_dict(lambda: build_mask_decoder(**cfg), dec_sd, f"checkpoint {path}",
                                        "mask decoder")
        decoder = decoder.to(device).eval()
        config["mask_decoder"] = cfg
    if pe_sd:
        cfg = read_config(lambda: prompt_encoder_config_from_state_dict(
            pe_sd, image_embedding_size, input_image_size), path)
        prompt_encoder = build_from_state_dict(lambda: build_prompt_encoder(**cfg), pe_sd, f"checkpoint {path}",
                                               "prompt encoder")
        prompt_encoder = prompt_encoder.to(device).eval()
        config["prompt_encoder"] = cfg
    if decoder is None and prompt_encoder is None:
        raise CheckpointError(f"{path}: found neither mask decoder nor prompt encoder weights")
    return SamParts(
        prompt_encoder=prompt_encoder, mask_decoder=decoder, format=fmt, model_type=model_type,
        path=path, image_encoder_keys=image_encoder_keys, config=config,
    )


def load_sam(checkpoint: str | os.PathLike, model_type: Optional[str] = None, *, decoder_num_heads: int = 8) -> Sam:
    """The whole of SAM from an official-layout file, built to the configuration its shapes imply
    (or to ``model_type``'s, which must then be the file's). Raises SamCheckpointError."""
    if isinstance(decoder_num_heads, bool) or not isinstance(decoder_num_heads, int) or decoder_num_heads < 1:
        raise SamCheckpointError(f"decoder_num_heads: expected a whole number h >= 1 (8 in SAM), got {decoder_num_heads!r}")
    state_dict = read_state_dict(checkpoint)
    if is_sam2(state_dict):
        raise SamCheckpointError(f"{checkpoint} is a SAM 2 checkpoint: build_sam builds SAM (1); the decoder side "
                                 "of a SAM 2 file loads with sam_explain.load_sam_checkpoint (or sam2.load_sam2_checkpoint)")
    if any(k.startswith("vision_encoder.") for k in state_dict):
        raise SamCheckpointError(
            f"{checkpoint} is a Hugging Face SamModel file; the full model (with its image encoder) "
            "loads from Meta's official files (sam_vit_b_01ec64.pth, ...). Its decoder alone loads "
            "with sam_explain.checkpoint.load_sam_checkpoint."
        )
    found = detect_model_type(state_dict)  # raises a clear error for a file without an image encoder
    if model_type is not None and found != model_type:
        raise SamCheckpointError(f"{checkpoint} holds a {found} model, but model_type={model_type!r} was asked for")
    config = dict(SAM_CONFIGS[model_type]) if model_type is not None else read_config(
        lambda: sam_config_from_state_dict(state_dict, decoder_num_heads=decoder_num_heads),
        f"not an official-layout SAM state dict ({os.fspath(checkpoint)})")
    return build_from_state_dict(lambda: make_sam(**config), state_dict, f"checkpoint {os.fspath(checkpoint)}",
                                 error=SamCheckpointError)
