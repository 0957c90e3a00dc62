"""Checkpoints: reading a file, matching its keys to our modules, loading it, safely.

One place for each job:
  read_state_dict        a file -> a flat {key: tensor} dict, never unpickling arbitrary objects
  detect_layout          which layout the keys follow (below)
  hf_to_official_keys    Hugging Face names -> the official ones
  detect_model_type      vit_b / vit_l / vit_h (or custom) from the image encoder's shapes
  load_state_dict_strict copy a state dict into a module only if every key, shape and dtype fits
  build_from_state_dict  build a module from the configuration its weights imply, checked on the
                         meta device (no memory) before anything real is allocated, then load it
  load_sam_checkpoint    the prompt encoder and mask decoder of any layout below
  load_sam               the whole of SAM from an official file (what ``build_sam(checkpoint=...)`` runs)

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
from typing import Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

import torch
from torch import nn

from .modeling import MaskDecoder, PromptEncoder
from .modeling.build import (
    SAM_CONFIGS, build_mask_decoder, build_prompt_encoder, count_indexed, decoder_config_from_state_dict, make_sam,
    prompt_encoder_config_from_state_dict, sam_config_from_state_dict, shapes_of,
)
from .modeling.sam import Sam
from .utils.device import as_device

__all__ = [
    "CheckpointError", "SamCheckpointError", "SamParts", "build_from_state_dict", "check_state_dict", "compare_state_dict",
    "detect_layout", "detect_model_type", "hf_to_official_keys", "load_sam", "load_sam_checkpoint",
    "load_state_dict_strict", "read_state_dict",
]


class CheckpointError(ValueError):
    """The file is not a checkpoint sam-explain can load; the message says why."""


class SamCheckpointError(CheckpointError):
    """A state dict does not fit the SAM model it is loaded into."""


StateDict = Dict[str, torch.Tensor]
M = TypeVar("M", bound=nn.Module)


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

WEIGHTS_KEYS = ("model", "state_dict", "module")  # where training checkpoints keep the weights
WRAPPER_PREFIXES = ("model.", "module.", "sam.")  # what Lightning, DataParallel and wrappers put before the keys
FOLDER_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")  # what transformers' save_pretrained writes, first found wins


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a flat {key: tensor} dict, never executing pickled code, from

      a file: .pth / .pt / .bin (torch.save's zip or legacy pickle, read with weights_only=True) or
        .safetensors, recognised by their first bytes whatever the name;
      a sharded checkpoint: its index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``);
      a folder written by transformers' ``save_pretrained`` (its model file or index inside).

    A training checkpoint's weights under ``model``, ``state_dict`` or ``module`` (beside an optimizer
    state, an epoch, ...) are taken from there. Every value must be a floating-point tensor with no
    zero-size axis and only finite values. Raises CheckpointError naming what was found."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = [name for name in FOLDER_FILES if os.path.isfile(os.path.join(path, name))]
        if not found:
            raise CheckpointError(f"{path} is a folder without a checkpoint: expected one of {list(FOLDER_FILES)} "
                                  f"(what transformers' save_pretrained writes), found {sorted(os.listdir(path))[:8]}")
        path = os.path.join(path, found[0])
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint file at {path!r}")
    if path.endswith(".index.json"):
        obj = _read_shards(path)
    else:
        obj = _read_file(path)
    obj = _strip_wrapper_prefix(_weights_of(obj, path))
    _check_tensors(obj, path)
    return obj


def _strip_wrapper_prefix(sd: StateDict) -> StateDict:
    """Keys all under ``model.`` (Lightning), ``module.`` (DataParallel) or ``sam.`` lose that prefix."""
    while sd:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in sd)), None)
        if prefix is None:
            return sd
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _read_file(path: str) -> object:
    """One file's contents, by its first bytes: a zip (torch.save), a pickle (legacy torch.save) or
    safetensors (an 8-byte header length, then a JSON header)."""
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): an interrupted download?")
    with open(path, "rb") as f:
        head = f.read(16)
    header_length = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # a zip archive, or a pickle (protocol 2 and up)
        return _torch_load(path, size, mmap=head[:4] == b"PK\x03\x04")
    if head[8:9] == b"{" and 0 < header_length <= size - 8:
        return _safetensors_load(path, size)
    if head.lstrip()[:1] in (b"{", b"["):
        raise CheckpointError(f"{path}: a JSON file, not a checkpoint (for a sharded checkpoint give its "
                              f"*.index.json, or the folder holding it)")
    raise CheckpointError(f"{path}: not a checkpoint: it starts with the bytes {head[:8]!r}, neither a torch file "
                          f"(a zip or a pickle) nor safetensors ({size} bytes)")


def _torch_load(path: str, size: int, mmap: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        first = text.splitlines()[0] if text else type(err).__name__
        globals_ = [line.strip() for line in text.splitlines() if "GLOBAL" in line or "global" in line.split(" ")[:3]]
        if globals_:  # the unpickler met a class or function: Python objects, maybe code
            raise CheckpointError(
                f"{path}: refused: the pickle holds Python objects other than tensors and plain "
                f"containers, and sam-explain never unpickles arbitrary objects (torch.load with "
                f"weights_only=True said: {globals_[0]}). Re-save the state dict alone "
                f"(torch.save(model.state_dict(), path)) or as safetensors."
            ) from err
        operand = [line.strip() for line in text.splitlines() if line.strip().startswith("Unsupported operand")]
        first = operand[0] if operand else first
        raise CheckpointError(f"{path}: could not read it as a torch checkpoint ({first}); is the file truncated "
                              f"({size} bytes) or not a checkpoint?") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError,
            AttributeError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: could not read it as a torch checkpoint ({first}); is the file truncated "
                              f"({size} bytes) or not a checkpoint?") from err


def _safetensors_load(path: str, size: int) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); is it truncated ({size} bytes)?") from err


def _read_shards(index_path: str) -> StateDict:
    """A sharded checkpoint: the index's ``weight_map`` names, for each key, the file holding it."""
    import json

    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index_path}: not a shard index (a JSON file with a 'weight_map' of key -> "
                              f"file): {err}") from err
    folder = os.path.dirname(index_path)
    out: StateDict = {}
    for shard in shards:
        shard_path = os.path.normpath(os.path.join(folder, shard))
        if os.path.dirname(shard_path) != os.path.normpath(folder) or not os.path.isfile(shard_path):
            raise CheckpointError(f"{index_path}: the shard {shard!r} is not a file beside the index")
        part = _weights_of(_read_file(shard_path), shard_path)
        out.update(part)
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{index_path}: {len(missing)} keys of the index are in none of its shards, "
                              f"such as {missing[:4]}")
    return out


def _weights_of(obj: object, path: str) -> StateDict:
    """The flat {key: tensor} dict inside what a file held (see ``read_state_dict``)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(obj).__name__}")
    for key in WEIGHTS_KEYS:  # a training checkpoint: {"model": weights, "optimizer": ..., "epoch": ...}
        inner = obj.get(key)
        if isinstance(inner, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = inner
            break
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"{path}: expected string keys (module paths), found {type(bad_keys[0]).__name__} "
                              f"keys such as {bad_keys[:3]}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: expected a flat dict of tensors (the weights at the top, or under one of "
            f"{list(WEIGHTS_KEYS)}); these entries are not tensors: {bad[:5]}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    return obj


def _check_tensors(sd: StateDict, path: str) -> None:
    """Every tensor floating-point, without a zero-size axis, and finite."""
    wrong_dtype = [f"{k}: {str(v.dtype).replace('torch.', '')}" for k, v in sd.items() if not v.is_floating_point()]
    if wrong_dtype:
        raise CheckpointError(f"{path}: weights must be floating-point tensors (float32, float16 or bfloat16); "
                              f"found {len(wrong_dtype)} that are not: {'; '.join(wrong_dtype[:4])}")
    empty = [f"{k}: {tuple(v.shape)}" for k, v in sd.items() if v.numel() == 0]
    if empty:
        raise CheckpointError(f"{path}: {len(empty)} tensors have a zero-size axis, which no SAM weight has: "
                              f"{'; '.join(empty[:4])}")
    for k, v in sd.items():
        finite = torch.isfinite(v)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise CheckpointError(f"{path}: {k} holds {bad} non-finite value(s) (NaN or inf) among its "
                                  f"{v.numel()}: the weights are corrupt")


# ---------------------------------------------------------------------------------------------
# Layouts


_DECODER_MARK = "iou_token.weight"
_PROMPT_MARK = "pe_layer.positional_encoding_gaussian_matrix"


def detect_layout(sd: Mapping[str, object]) -> str:
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


def _split_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
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


def hf_to_official_keys(sd: Mapping[str, torch.Tensor]) -> StateDict:
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


# ---------------------------------------------------------------------------------------------
# Matching and loading


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


def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                     what: str = "checkpoint", model: str = "model", error: type = SamCheckpointError) -> None:
    """Raise ``error`` naming the missing, unexpected and misshapen keys, if ``found`` does not fit a
    module whose state dict is ``expected``."""
    missing, unexpected, wrong = compare_state_dict(expected, found)
    misshapen = [f"{k}: model {want}, checkpoint {got}" for k, want, got in wrong]
    if missing or unexpected or misshapen:
        def listing(label: str, items: list) -> str:
            shown = "; ".join(items[:8]) + (f"; ... ({len(items) - 8} more)" if len(items) > 8 else "")
            return f"\n  {label} ({len(items)}): {shown}"

        msg = f"the {what} does not fit the {model} ({len(expected)} keys expected, {len(found)} found)"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen)):
            if items:
                msg += listing(label, items)
        raise error(msg)


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint",
                           error: type = SamCheckpointError) -> None:
    """Copy ``state_dict`` into ``module`` only if every key and shape matches; otherwise raise
    ``error`` naming the missing, unexpected and misshapen keys (the module is left as it was)."""
    check_state_dict(module.state_dict(), state_dict, what, error=error)
    module.load_state_dict(state_dict, strict=True)


def build_from_state_dict(build: Callable[[], M], state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint",
                          model: str = "model", error: type = CheckpointError) -> M:
    """``build()`` a module and load ``state_dict`` into it strictly. The module is built on the meta
    device first and compared with the state dict, so a file whose sizes imply a huge model that its
    keys do not fill is refused before anything is allocated."""
    with torch.device("meta"):
        shell = build()  # shapes only, no memory
    check_state_dict(shell.state_dict(), state_dict, what, model, error)
    module = build()
    module.load_state_dict(state_dict, strict=True)
    return module


# The largest sizes a checkpoint may imply (SAM's own in brackets): a file that implies more is refused
# before any model is built, even on the meta device.
LIMITS = {
    "transformer_dim": 4096, "embed_dim": 4096, "prompt_embed_dim": 4096,  # C (256)
    "depth": 64, "iou_head_depth": 64, "num_multimask_outputs": 64,  # (2, 3, 3)
    "mlp_dim": 65536, "iou_head_hidden_dim": 65536, "decoder_mlp_dim": 65536, "mask_in_chans": 4096,  # (2048, 256, 16)
    "encoder_embed_dim": 8192, "encoder_depth": 256, "encoder_num_heads": 256,  # (1280, 32, 16 in vit_h)
    "image_size": 16384, "patch_size": 1024, "window_size": 1024,  # (1024, 16, 14)
}


def _config(read: Callable[[], Dict], where: str) -> Dict:
    """Run a configuration reader and check what it read against ``LIMITS``; a key it needs and does not
    find, a tensor of the wrong rank, or an absurd size is a CheckpointError."""
    try:
        config = read()
    except KeyError as err:
        raise CheckpointError(f"{where}: missing key {err.args[0]!r}, needed to read the model's configuration") from None
    except (ValueError, IndexError, ZeroDivisionError) as err:
        raise CheckpointError(f"{where}: cannot read the model's configuration: {err}") from None
    for name, value in config.items():
        if isinstance(value, int) and name in LIMITS and not 0 <= value <= LIMITS[name]:
            raise CheckpointError(f"{where}: the weights imply {name} = {value}, outside 0..{LIMITS[name]}; "
                                  f"refused before building anything")
    return config


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
    device = _device(device)
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise CheckpointError(f"num_heads: expected a whole number of heads h >= 1 (8 in SAM), got {num_heads!r}")
    sd = read_state_dict(path)
    layout = detect_layout(sd)
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
        cfg = _config(lambda: decoder_config_from_state_dict(dec_sd, num_heads=num_heads), path)
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
        cfg = _config(lambda: prompt_encoder_config_from_state_dict(
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
    if any(k.startswith("vision_encoder.") for k in state_dict):
        raise SamCheckpointError(
            f"{checkpoint} is a Hugging Face SamModel file; the full model (with its image encoder) "
            "loads from Meta's official files (sam_vit_b_01ec64.pth, ...). Its decoder alone loads "
            "with sam_explain.checkpoint.load_sam_checkpoint."
        )
    found = detect_model_type(state_dict)  # raises a clear error for a file without an image encoder
    if model_type is not None and found != model_type:
        raise SamCheckpointError(f"{checkpoint} holds a {found} model, but model_type={model_type!r} was asked for")
    config = dict(SAM_CONFIGS[model_type]) if model_type is not None else _config(
        lambda: sam_config_from_state_dict(state_dict, decoder_num_heads=decoder_num_heads),
        f"not an official-layout SAM state dict ({os.fspath(checkpoint)})")
    return build_from_state_dict(lambda: make_sam(**config), state_dict, f"checkpoint {os.fspath(checkpoint)}",
                                 error=SamCheckpointError)
