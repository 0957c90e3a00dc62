"""Load SAM's prompt encoder and mask decoder from a checkpoint file, safely.

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
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

__all__ = ["CheckpointError", "SamParts", "read_state_dict", "load_sam_checkpoint", "detect_layout", "compare_state_dict",
           "hf_to_official_keys", "decoder_config_from_state_dict"]


class CheckpointError(ValueError):
    """The file is not a checkpoint sam-explain can load; the message says why."""


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
# Reading


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a flat {key: tensor} dict from a .pth/.pt/.bin (torch zip or legacy pickle) or
    .safetensors file, never executing pickled code. Unwraps a single top-level
    ``model`` / ``state_dict`` entry. Raises CheckpointError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint file at {path!r}")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): an interrupted download?")
    with open(path, "rb") as f:
        head = f.read(16)
    is_safetensors = path.endswith(".safetensors") or (
        len(head) >= 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)
    )
    if is_safetensors:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({err}); is it truncated ({size} bytes)?"
            ) from err
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{path}: refused: the pickle holds Python objects other than tensors and plain "
                f"containers, and sam-explain never unpickles arbitrary objects (torch.load with "
                f"weights_only=True said: {str(err).splitlines()[0]}). Re-save the state dict alone "
                f"(torch.save(model.state_dict(), path)) or as safetensors."
            ) from err
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(
                f"{path}: could not read it as a torch checkpoint ({str(err).splitlines()[0]}); "
                f"is the file truncated ({size} bytes) or not a checkpoint?"
            ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(obj).__name__}")
    if len(obj) == 1 and next(iter(obj)) in ("model", "state_dict") and isinstance(next(iter(obj.values())), dict):
        inner_key = next(iter(obj))
        obj = obj[inner_key]
        if any(k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) for k in obj):
            raise CheckpointError(
                f"{path}: this is a SAM 2 checkpoint (weights under '{inner_key}' with "
                f"sam_mask_decoder.* / sam_prompt_encoder.* keys); sam-explain implements SAM 1's "
                f"decoder (sam_vit_b/l/h files, or transformers' SamModel)"
            )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: expected a flat dict of tensors; these entries are not tensors: {bad[:5]}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    return obj


# ---------------------------------------------------------------------------------------------
# Layouts


_DECODER_MARK = "iou_token.weight"
_PROMPT_MARK = "pe_layer.positional_encoding_gaussian_matrix"


def detect_layout(sd: StateDict) -> str:
    """Name the layout of a state dict (see the module docstring), or raise CheckpointError."""
    keys = set(sd)
    if any(k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) for k in keys) or any(
        "obj_score_token" in k or "pred_obj_score_head" in k for k in keys
    ):
        raise CheckpointError(
            "this is a SAM 2 checkpoint (sam_mask_decoder.* / obj_score_token keys); sam-explain "
            "implements SAM 1's decoder"
        )
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


def _split_prefix(sd: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


_HF_PROMPT_RULES: List[Tuple[str, str]] = [
    (r"^point_embed\.(\d+)\.", r"point_embeddings.\1."),
    (r"^shared_embedding\.positional_embedding$", "pe_layer.positional_encoding_gaussian_matrix"),
    (r"^mask_embed\.conv1\.", "mask_downscaling.0."),
    (r"^mask_embed\.layer_norm1\.", "mask_downscaling.1."),
    (r"^mask_embed\.conv2\.", "mask_downscaling.3."),
    (r"^mask_embed\.layer_norm2\.", "mask_downscaling.4."),
    (r"^mask_embed\.conv3\.", "mask_downscaling.6."),
]
_HF_DECODER_RULES: List[Tuple[str, str]] = [
    (r"\.layer_norm(\d)\.", r".norm\1."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"^upscale_conv1\.", "output_upscaling.0."),
    (r"^upscale_layer_norm\.", "output_upscaling.1."),
    (r"^upscale_conv2\.", "output_upscaling.3."),
]
_HF_MLP = re.compile(r"^(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.(proj_in|proj_out|layers\.(\d+))\.(.+)$")


def _rename(key: str, rules: List[Tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def hf_to_official_keys(sd: StateDict) -> StateDict:
    """Map a transformers SamModel state dict onto the official ``prompt_encoder.*`` /
    ``mask_decoder.*`` names (the vision encoder's keys are left out)."""
    out: StateDict = {}
    prompt = _split_prefix(sd, "prompt_encoder.")
    if "shared_embedding.positional_embedding" not in prompt and "shared_image_embedding.positional_embedding" in sd:
        prompt["shared_embedding.positional_embedding"] = sd["shared_image_embedding.positional_embedding"]
    for k, v in prompt.items():
        out["prompt_encoder." + _rename(k, _HF_PROMPT_RULES)] = v

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
            k = _rename(k, _HF_DECODER_RULES)
        out["mask_decoder." + k] = v
    return out


# ---------------------------------------------------------------------------------------------
# Building the modules to fit the weights


def _count_indexed(sd: StateDict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in sd for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def _need(sd: StateDict, key: str, what: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"missing key '{key}' ({what}); found {len(sd)} keys such as {sorted(sd)[:4]}")
    return sd[key]


def decoder_config_from_state_dict(sd: StateDict, num_heads: int = 8) -> Dict[str, int]:
    """Read the MaskDecoder's constructor arguments off its weights (heads cannot be read: given)."""
    C = _need(sd, "iou_token.weight", "the IoU token, 1 x C").shape[1]
    M = _need(sd, "mask_tokens.weight", "the mask tokens, M x C").shape[0]
    internal = _need(
        sd, "transformer.final_attn_token_to_image.q_proj.weight", "the final attention's q_proj"
    ).shape[0]
    return dict(
        transformer_dim=C,
        num_multimask_outputs=M - 1,
        depth=_count_indexed(sd, "transformer.layers."),
        num_heads=num_heads,
        mlp_dim=_need(sd, "transformer.layers.0.mlp.lin1.weight", "the first MLP").shape[0]
        if "transformer.layers.0.mlp.lin1.weight" in sd else 2048,
        attention_downsample_rate=max(1, C // internal),
        iou_head_depth=_count_indexed(sd, "iou_prediction_head.layers."),
        iou_head_hidden_dim=_need(sd, "iou_prediction_head.layers.0.weight", "the IoU head").shape[0],
    )


def _build_decoder(cfg: Dict[str, int]) -> MaskDecoder:
    transformer = TwoWayTransformer(
        depth=cfg["depth"], embedding_dim=cfg["transformer_dim"], num_heads=cfg["num_heads"],
        mlp_dim=cfg["mlp_dim"], attention_downsample_rate=cfg["attention_downsample_rate"],
    )
    return MaskDecoder(
        transformer_dim=cfg["transformer_dim"], transformer=transformer,
        num_multimask_outputs=cfg["num_multimask_outputs"],
        iou_head_depth=cfg["iou_head_depth"], iou_head_hidden_dim=cfg["iou_head_hidden_dim"],
    )


def _build_prompt_encoder(sd: StateDict, image_embedding_size, input_image_size) -> Tuple[PromptEncoder, Dict]:
    C = _need(sd, "no_mask_embed.weight", "no_mask_embed, 1 x C").shape[1]
    mask_in_chans = _need(sd, "mask_downscaling.3.weight", "the mask downscaling's second conv").shape[0]
    cfg = dict(embed_dim=C, image_embedding_size=tuple(image_embedding_size),
               input_image_size=tuple(input_image_size), mask_in_chans=mask_in_chans)
    return PromptEncoder(**cfg), cfg


def compare_state_dict(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]]:
    """What keeps ``found`` from loading strictly into a module whose state dict is ``expected``:
    (missing keys, unexpected keys, [(key, expected shape, found shape)] for misshapen keys)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshapen = [
        (k, tuple(expected[k].shape), tuple(found[k].shape))
        for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, misshapen


def _load_strict(module: nn.Module, sd: StateDict, what: str, path: str) -> None:
    """Copy every tensor into ``module``, checking each key and shape first (nothing is
    changed if anything is off)."""
    expected = module.state_dict()
    missing, unexpected, wrong = compare_state_dict(expected, sd)
    misshapen = [f"{k}: expected {want}, found {got}" for k, want, got in wrong]
    if missing or unexpected or misshapen:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
            if items:
                parts.append(f"{len(items)} {label}: " + "; ".join(items[:6]) + (" ..." if len(items) > 6 else ""))
        raise CheckpointError(
            f"{path}: the {what} weights do not fit SAM's {what} ({len(expected)} keys expected, "
            f"{len(sd)} found): " + " | ".join(parts)
        )
    module.load_state_dict(sd, strict=True)


def _model_type(sd: StateDict) -> Optional[str]:
    for key in ("image_encoder.patch_embed.proj.weight", "vision_encoder.patch_embed.projection.weight"):
        if key in sd:
            return {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(sd[key].shape[0], f"custom ({sd[key].shape[0]} channels)")
    return None


def load_sam_checkpoint(
    path: str | os.PathLike,
    *,
    num_heads: int = 8,
    image_embedding_size: Tuple[int, int] = (64, 64),
    input_image_size: Tuple[int, int] = (1024, 1024),
    device: str | torch.device = "cpu",
) -> SamParts:
    """Load the prompt encoder and mask decoder held by a checkpoint.

    Arguments:
      path: an official SAM file, a decoder or prompt-encoder state dict, or a
        transformers SamModel file (.safetensors or .bin).
      num_heads: h, which the weights cannot tell (8 in SAM).
      image_embedding_size, input_image_size: the grid (H, W) and the padded input size,
        which the weights cannot tell either (64 x 64 and 1024 x 1024 in SAM).
      device: where to put the modules.

    Returns SamParts with both modules in eval mode (a part the file lacks is None).
    Raises CheckpointError on an unreadable, unsafe, SAM 2 or mismatched file.
    """
    path = os.fspath(path)
    sd = read_state_dict(path)
    layout = detect_layout(sd)
    model_type = _model_type(sd)
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
        cfg = decoder_config_from_state_dict(dec_sd, num_heads=num_heads)
        if cfg["transformer_dim"] % (num_heads * cfg["attention_downsample_rate"]) != 0:
            raise CheckpointError(
                f"{path}: h = {num_heads} heads do not divide the decoder's C / downsample_rate = "
                f"{cfg['transformer_dim']} / {cfg['attention_downsample_rate']}; pass num_heads="
            )
        decoder = _build_decoder(cfg)
        _load_strict(decoder, dec_sd, "mask decoder", path)
        decoder = decoder.to(device).eval()
        config["mask_decoder"] = cfg
    if pe_sd:
        prompt_encoder, cfg = _build_prompt_encoder(pe_sd, image_embedding_size, input_image_size)
        _load_strict(prompt_encoder, pe_sd, "prompt encoder", path)
        prompt_encoder = prompt_encoder.to(device).eval()
        config["prompt_encoder"] = cfg
    if decoder is None and prompt_encoder is None:
        raise CheckpointError(f"{path}: found neither mask decoder nor prompt encoder weights")
    return SamParts(
        prompt_encoder=prompt_encoder, mask_decoder=decoder, format=fmt, model_type=model_type,
        path=path, image_encoder_keys=image_encoder_keys, config=config,
    )
