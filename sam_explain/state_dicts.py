"""State dicts: reading a file safely, and matching what it holds to a module's keys and shapes.

The machinery every loader shares (SAM's in ``sam_explain.checkpoint``, SAM 2's in
``sam_explain.sam2.checkpoint``):

  read_state_dict        a file, folder or shard index -> a flat {key: tensor} dict, never unpickling
                         arbitrary objects; every tensor floating-point, without a zero-size axis, finite
  compare_state_dict     the missing, unexpected and misshapen keys
  check_state_dict       ... as one error naming them
  load_state_dict_strict copy a state dict into a module only if every key and shape fits
  build_from_state_dict  build on the meta device, compare, then build for real and load
  read_config            run a configuration reader, its sizes checked against LIMITS
  HF_*_RULES, rename_key transformers' names (SamModel, Sam2Model) mapped back to the official ones
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Callable, Dict, List, Mapping, Tuple, TypeVar

import torch
from torch import nn

__all__ = [
    "CheckpointError", "HF_DECODER_RULES", "HF_PROMPT_RULES", "LIMITS", "SamCheckpointError", "build_from_state_dict",
    "check_state_dict", "check_tensor", "compare_state_dict", "load_state_dict_strict", "read_config",
    "read_state_dict", "rename_key",
]


class CheckpointError(ValueError):
    """The file is not a checkpoint sam-explain can load; the message says why."""


class SamCheckpointError(CheckpointError):
    """A state dict does not fit the SAM model it is loaded into."""


StateDict = Dict[str, torch.Tensor]
M = TypeVar("M", bound=nn.Module)


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
        if operand:  # a pickle torch.save does not write (another protocol, or hand-made): not read further
            raise CheckpointError(
                f"{path}: refused: the pickle uses what torch.save never writes ({operand[0]}), and sam-explain "
                f"never unpickles arbitrary objects. Re-save the state dict with torch.save, or as safetensors."
            ) from err
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


def check_tensor(key: str, t: torch.Tensor, where: str, error: type = None) -> None:
    """One weight: floating-point, without a zero-size axis, finite; else ``error`` (CheckpointError)."""
    _check_tensors({key: t}, where, error)


def _check_tensors(sd: StateDict, path: str, error: type = None) -> None:
    """Every tensor floating-point, without a zero-size axis, and finite."""
    error = error or CheckpointError
    wrong_dtype = [f"{k}: {str(v.dtype).replace('torch.', '')}" for k, v in sd.items() if not v.is_floating_point()]
    if wrong_dtype:
        raise error(f"{path}: weights must be floating-point tensors (float32, float16 or bfloat16); "
                              f"found {len(wrong_dtype)} that are not: {'; '.join(wrong_dtype[:4])}")
    empty = [f"{k}: {tuple(v.shape)}" for k, v in sd.items() if v.numel() == 0]
    if empty:
        raise error(f"{path}: {len(empty)} tensors have a zero-size axis, which no SAM weight has: "
                              f"{'; '.join(empty[:4])}")
    for k, v in sd.items():
        finite = torch.isfinite(v)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise error(f"{path}: {k} holds {bad} non-finite value(s) (NaN or inf) among its "
                                  f"{v.numel()}: the weights are corrupt")


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


def read_config(read: Callable[[], Dict], where: str, error: type = None) -> Dict:
    """Run a configuration reader and check what it read against ``LIMITS``; a key it needs and does not
    find, a tensor of the wrong rank, or an absurd size is ``error`` (a CheckpointError)."""
    error = error or CheckpointError
    try:
        config = read()
    except KeyError as err:
        raise error(f"{where}: missing key {err.args[0]!r}, needed to read the model's configuration") from None
    except (ValueError, IndexError, ZeroDivisionError) as err:
        raise error(f"{where}: cannot read the model's configuration: {err}") from None
    for name, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool) and name in LIMITS and not 0 <= value <= LIMITS[name]:
            raise error(f"{where}: the weights imply {name} = {value}, outside 0..{LIMITS[name]}; "
                                  f"refused before building anything")
    return config


# transformers' names on the decoder side, the same in SamModel and Sam2Model: (pattern, replacement) on a
# key of its mask decoder / prompt encoder with that prefix removed. Each loader adds the names its model
# has alone (SAM's point_embed.k, SAM 2's o_proj and single point_embed).
HF_DECODER_RULES: List[Tuple[str, str]] = [
    (r"\.layer_norm(\d)\.", r".norm\1."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"^upscale_conv1\.", "output_upscaling.0."),
    (r"^upscale_layer_norm\.", "output_upscaling.1."),
    (r"^upscale_conv2\.", "output_upscaling.3."),
]
HF_PROMPT_RULES: List[Tuple[str, str]] = [
    (r"^shared_embedding\.positional_embedding$", "pe_layer.positional_encoding_gaussian_matrix"),
    (r"^mask_embed\.conv1\.", "mask_downscaling.0."),
    (r"^mask_embed\.layer_norm1\.", "mask_downscaling.1."),
    (r"^mask_embed\.conv2\.", "mask_downscaling.3."),
    (r"^mask_embed\.layer_norm2\.", "mask_downscaling.4."),
    (r"^mask_embed\.conv3\.", "mask_downscaling.6."),
]


def rename_key(key: str, rules: List[Tuple[str, str]]) -> str:
    """``key`` with every (pattern, replacement) of ``rules`` applied in turn."""
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key
