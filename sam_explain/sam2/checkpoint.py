"""SAM 2 / SAM 2.1 checkpoints: the prompt encoder and the mask decoder, loaded safely; the rest named.

  detect_sam2_layout      "official", "huggingface" or "decoder", from the keys
  hf_sam2_key_map         transformers' Sam2Model names -> the official ones
  image_encoder_size      hiera_tiny / small / base_plus / large, from the image encoder's keys
  load_sam2_checkpoint    the decoder side of any layout below, as Sam2Parts

Layouts (detected from the keys):
  official     Meta's files (sam2.1_hiera_tiny.pt ... sam2_hiera_large.pt): ``{"model": state_dict}``
               with ``sam_mask_decoder.*`` and ``sam_prompt_encoder.*`` beside the Hiera image encoder
               (``image_encoder.*``) and the video modules (``memory_attention.*``, ``memory_encoder.*``,
               ``maskmem_tpos_enc``, ``obj_ptr_proj.*``, ...). A flat state dict with those keys too.
  huggingface  transformers' Sam2Model (model.safetensors): ``mask_decoder.*`` / ``prompt_encoder.*``
               with its own names (below), beside ``vision_encoder.*`` and ``shared_image_embedding.*``.
  decoder      a SAM 2 MaskDecoder state dict alone (``torch.save(decoder.state_dict(), path)``).

The decoder and the prompt encoder are loaded strictly: every key and shape must fit the model the
weights imply (its sizes, and ``use_high_res_features`` / ``pred_obj_scores`` / ``pred_obj_scores_mlp``
from which keys exist), checked against a model built on the meta device before anything is built
for real. The other keys are counted and named (``Sam2Parts.not_loaded``), never loaded. Files are
read by ``sam_explain.state_dicts.read_state_dict`` (``torch.load(weights_only=True)``, a zip
memory-mapped, or safetensors): no pickled code runs, and every tensor is checked floating-point,
without a zero-size axis, and finite. ``sam_explain.checkpoint.load_sam_checkpoint`` hands SAM 2
files here.

The Hugging Face names follow transformers 4.56.0, the first release with Sam2Model
(``transformers/models/sam2/modeling_sam2.py``); the decoder side's names are the same in 5.23.0:

  official (sam2)                                transformers Sam2Model
  sam_mask_decoder.*                             mask_decoder.*
  transformer.layers.i.*.out_proj                transformer.layers.i.*.o_proj (and the final attention)
  transformer.layers.i.norm1..norm4              transformer.layers.i.layer_norm1..layer_norm4
  transformer.norm_final_attn                    transformer.layer_norm_final_attn
  transformer.layers.i.mlp.layers.0 / .1         transformer.layers.i.mlp.proj_in / proj_out
  MLP layers.0 / layers.1 / layers.2             proj_in / layers.0 / proj_out (hypernetworks, IoU and
                                                 object-score heads)
  output_upscaling.0 / .1 / .3                   upscale_conv1 / upscale_layer_norm / upscale_conv2
  sam_prompt_encoder.*                           prompt_encoder.*
  point_embeddings.k.weight (1 x C each)         point_embed.weight (4 x C, row k)
  pe_layer.positional_encoding_gaussian_matrix   shared_embedding.positional_embedding (and the top-level
                                                 shared_image_embedding.positional_embedding)
  mask_downscaling.0/1/3/4/6                     mask_embed.conv1/layer_norm1/conv2/layer_norm2/conv3
  iou_token, mask_tokens, obj_score_token, conv_s0, conv_s1, q/k/v_proj, no_mask_embed,
  not_a_point_embed                              unchanged
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from ..state_dicts import (
    HF_DECODER_RULES, HF_PROMPT_RULES, CheckpointError, build_from_state_dict, check_state_dict, read_config,
    read_state_dict, rename_key,
)
from ..utils.device import as_device
from ..modeling.build import count_indexed, prompt_encoder_config_from_state_dict
from .build import build_sam2_mask_decoder, build_sam2_prompt_encoder, sam2_decoder_config_from_state_dict
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

__all__ = [
    "DECODER_FLAGS", "HF_MAPPING_RELEASE", "Sam2CheckpointError", "Sam2Parts", "detect_sam2_layout",
    "hf_sam2_key_map", "image_encoder_size", "load_sam2_checkpoint", "load_sam2_state_dict",
]

HF_MAPPING_RELEASE = "transformers 4.56.0 (checked unchanged in 5.23.0)"

Shape = Tuple[int, ...]


class Sam2CheckpointError(CheckpointError):
    """A file is not a SAM 2 checkpoint sam-explain can load, or does not fit the model it implies."""


@dataclass
class Sam2Parts:
    """What ``load_sam2_checkpoint`` returns. A part the file does not hold is None.

    format: "official", "huggingface" or "decoder". release: "SAM 2.1" or "SAM 2" where the file's
    video modules tell them apart (SAM 2.1 added ``no_obj_embed_spatial``), else None.
    image_encoder: the Hiera size its keys show (``hiera_tiny`` ...), None without one.
    not_loaded: the keys left alone, counted by their first name (``image_encoder``, ``memory_attention``,
    ``maskmem_tpos_enc``, ...). config: the constructor arguments of each part.
    """

    prompt_encoder: Optional[PromptEncoder]
    mask_decoder: Optional[MaskDecoder]
    format: str
    path: str = ""
    release: Optional[str] = None
    image_encoder: Optional[str] = None
    not_loaded: Dict[str, int] = field(default_factory=dict)
    config: Dict[str, Dict[str, object]] = field(default_factory=dict)

    @property
    def not_loaded_total(self) -> int:
        return sum(self.not_loaded.values())


# ---------------------------------------------------------------------------------------------
# Layouts and names


_OFFICIAL = ("sam_mask_decoder.", "sam_prompt_encoder.")
_HF_MARKS = ("mask_decoder.upscale_conv1.weight", "prompt_encoder.point_embed.weight",
             "prompt_encoder.shared_embedding.positional_embedding", "shared_image_embedding.positional_embedding")


def detect_sam2_layout(keys: Iterable[str]) -> str:
    """"official", "huggingface" or "decoder" (see the module docstring), or raise Sam2CheckpointError
    naming what the keys look like instead (a SAM 1 file is pointed to ``load_sam_checkpoint``)."""
    keys = set(keys)
    if any(k.startswith(_OFFICIAL) for k in keys):
        return "official"
    if any(k in keys for k in _HF_MARKS) or any(k.startswith("vision_encoder.") for k in keys):
        if "prompt_encoder.point_embed.0.weight" in keys or (
                "mask_decoder.iou_token.weight" in keys and "mask_decoder.obj_score_token.weight" not in keys
                and "mask_decoder.conv_s0.weight" not in keys):
            raise Sam2CheckpointError(
                "this is a Hugging Face SamModel file (SAM 1: point_embed.0, no obj_score_token or conv_s0); "
                "load it with sam_explain.checkpoint.load_sam_checkpoint")
        return "huggingface"
    if "iou_token.weight" in keys and ("obj_score_token.weight" in keys or "conv_s0.weight" in keys
                                      or "transformer.layers.0.mlp.layers.0.weight" in keys):
        return "decoder"
    if "mask_decoder.iou_token.weight" in keys or "iou_token.weight" in keys:
        raise Sam2CheckpointError(
            "this is a SAM (1) checkpoint (mask_decoder.* keys, or a decoder with mlp.lin1); load it with "
            "sam_explain.checkpoint.load_sam_checkpoint")
    sample = sorted(keys)[:4]
    raise Sam2CheckpointError(
        f"no SAM 2 decoder or prompt encoder found: expected keys such as 'sam_mask_decoder.iou_token.weight' "
        f"(Meta's files), 'mask_decoder.upscale_conv1.weight' (Hugging Face Sam2Model) or 'obj_score_token.weight' "
        f"(a SAM 2 decoder alone); found {len(keys)} keys such as {sample}"
    )


# (pattern, replacement) on a key of transformers' mask decoder / prompt encoder, prefix removed
_HF_DECODER_RULES: List[Tuple[str, str]] = [(r"\.o_proj\.", ".out_proj.")] + HF_DECODER_RULES
# transformers' feed-forward of L layers: proj_in, layers.0 .. layers.(L-3), proj_out
_HF_MLP = re.compile(
    r"^(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head|transformer\.layers\.\d+\.mlp)"
    r"\.(proj_in|proj_out|layers\.(\d+))\.(.+)$")

Source = Tuple[str, Optional[int]]  # (the file's key, a row of it or None for the whole tensor)


def hf_sam2_key_map(shapes: Mapping[str, Shape]) -> Dict[str, Source]:
    """Official key (``sam_mask_decoder.*`` / ``sam_prompt_encoder.*``) -> (transformers key, row) for
    a Sam2Model file's decoder side; row k of ``point_embed.weight`` (4 x C) is ``point_embeddings.k``.
    Keys outside ``mask_decoder.`` / ``prompt_encoder.`` are left out (see ``hf_others``)."""
    out: Dict[str, Source] = {}
    hidden: Dict[str, int] = {}
    for k in shapes:
        m = _HF_MLP.match(k[len("mask_decoder."):]) if k.startswith("mask_decoder.") else None
        if m and m.group(3) is not None:
            hidden[m.group(1)] = max(hidden.get(m.group(1), 0), int(m.group(3)) + 1)
    for k, shape in shapes.items():
        if k.startswith("mask_decoder."):
            rest = k[len("mask_decoder."):]
            m = _HF_MLP.match(rest)
            if m:
                mlp, part, index, tail = m.groups()
                i = 0 if part == "proj_in" else hidden.get(mlp, 0) + 1 if part == "proj_out" else int(index) + 1
                rest = f"{mlp}.layers.{i}.{tail}"
            else:
                rest = rename_key(rest, _HF_DECODER_RULES)
            out["sam_mask_decoder." + rest] = (k, None)
        elif k.startswith("prompt_encoder."):
            rest = k[len("prompt_encoder."):]
            if rest == "point_embed.weight" and len(shape) == 2:
                for row in range(shape[0]):
                    out[f"sam_prompt_encoder.point_embeddings.{row}.weight"] = (k, row)
                continue
            out["sam_prompt_encoder." + rename_key(rest, HF_PROMPT_RULES)] = (k, None)
    pe = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    if pe not in out and "shared_image_embedding.positional_embedding" in shapes and \
            any(k.startswith("prompt_encoder.") for k in shapes):
        out[pe] = ("shared_image_embedding.positional_embedding", None)  # tied to the prompt encoder's copy
    return out


# Hiera sizes of the released checkpoints: (E, blocks) -> name
_HIERA = {(96, 12): "hiera_tiny", (96, 16): "hiera_small", (112, 24): "hiera_base_plus", (144, 48): "hiera_large"}


def image_encoder_size(shapes: Mapping[str, Shape]) -> Optional[str]:
    """``hiera_tiny`` / ``hiera_small`` / ``hiera_base_plus`` / ``hiera_large`` from the image encoder's
    width E (the patch embedding, E x 3 x 7 x 7) and number of blocks; ``custom (E = .., n blocks)`` for
    another; None without an image encoder."""
    for patch, blocks in (("image_encoder.trunk.patch_embed.proj.weight", "image_encoder.trunk.blocks."),
                          ("vision_encoder.backbone.patch_embed.projection.weight", "vision_encoder.backbone.blocks.")):
        if patch in shapes and len(shapes[patch]) == 4:
            width, depth = shapes[patch][0], count_indexed(shapes, blocks)
            return _HIERA.get((width, depth), f"custom (E = {width}, {depth} blocks)")
    return None


def _release(keys: Iterable[str]) -> Optional[str]:
    keys = set(keys)
    if "no_obj_embed_spatial" in keys or "occlusion_spatial_embedding_parameter" in keys:
        return "SAM 2.1"
    if any(k.startswith(("memory_attention.", "memory_encoder.")) for k in keys):
        return "SAM 2"
    return None


def _group(key: str) -> str:
    return key.split(".", 1)[0]


# ---------------------------------------------------------------------------------------------
# Loading


class _File:
    """A state dict's keys and shapes, and a reader of one tensor."""

    def __init__(self, shapes: Dict[str, Shape], get: Callable[[str], torch.Tensor]) -> None:
        self.shapes, self.get = shapes, get


# The flags that change no weight; the defaults are those build_sam2 gives every released checkpoint.
DECODER_FLAGS = dict(iou_prediction_use_sigmoid=True, use_multimask_token_for_obj_ptr=True,
                     dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
                     dynamic_multimask_stability_thresh=0.98)


def _load_part(build: Callable[[], torch.nn.Module], sources: Mapping[str, Source], shapes: Mapping[str, Shape],
               get: Callable[[str], torch.Tensor], where: str, model: str) -> torch.nn.Module:
    """Check the keys and shapes on the meta device, then build and load."""
    expected = {}
    with torch.device("meta"):
        expected = build().state_dict()  # shapes only, no memory
    found = {}
    for key, (src, row) in sources.items():
        shape = shapes[src] if row is None else (1,) + tuple(shapes[src][1:])
        found[key] = torch.empty(shape, device="meta")
    check_state_dict(expected, found, where, model, error=Sam2CheckpointError)
    tensors = {}
    for key, (src, row) in sources.items():
        t = get(src)
        tensors[key] = t if row is None else t[row : row + 1]  # 1 x C: one row of transformers' point_embed
    return build_from_state_dict(build, tensors, where, model, error=Sam2CheckpointError)


def load_sam2_checkpoint(
    path: str | os.PathLike,
    *,
    num_heads: int = 8,
    image_embedding_size: Tuple[int, int] = (64, 64),
    input_image_size: Tuple[int, int] = (1024, 1024),
    iou_prediction_use_sigmoid: bool = True,
    use_multimask_token_for_obj_ptr: bool = True,
    dynamic_multimask_via_stability: bool = True,
    dynamic_multimask_stability_delta: float = 0.05,
    dynamic_multimask_stability_thresh: float = 0.98,
    device: str | torch.device = "cpu",
) -> Sam2Parts:
    """Load the prompt encoder and mask decoder of a SAM 2 / SAM 2.1 checkpoint.

    Arguments:
      path: Meta's file (``sam2.1_hiera_*.pt``, ``sam2_hiera_*.pt``), a transformers Sam2Model file
        (``model.safetensors``), or a SAM 2 MaskDecoder state dict.
      num_heads, image_embedding_size, input_image_size: what the weights cannot tell (h = 8, the
        64 x 64 grid, the 1024 x 1024 input of every released SAM 2).
      iou_prediction_use_sigmoid, use_multimask_token_for_obj_ptr, dynamic_multimask_*: the decoder
        flags that change no weight; the defaults are those ``build_sam2`` gives every released
        checkpoint (the config files' flags and its post-processing's stability switch).
      device: where to put the modules.

    Returns Sam2Parts (modules in eval mode). Raises Sam2CheckpointError on an unreadable or unsafe
    file, a SAM 1 file, or weights that do not fit, naming the keys and shapes.
    """
    flags = dict(iou_prediction_use_sigmoid=iou_prediction_use_sigmoid,
                 use_multimask_token_for_obj_ptr=use_multimask_token_for_obj_ptr,
                 dynamic_multimask_via_stability=dynamic_multimask_via_stability,
                 dynamic_multimask_stability_delta=dynamic_multimask_stability_delta,
                 dynamic_multimask_stability_thresh=dynamic_multimask_stability_thresh)
    path = os.fspath(path)
    try:
        device = as_device(device)
    except ValueError as err:
        raise Sam2CheckpointError(str(err)) from None
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise Sam2CheckpointError(f"num_heads: expected a whole number of heads h >= 1 (8 in SAM 2), got {num_heads!r}")
    try:
        sd = read_state_dict(path)
    except Sam2CheckpointError:
        raise
    except CheckpointError as err:
        raise Sam2CheckpointError(str(err)) from err
    return load_sam2_state_dict(sd, path, num_heads=num_heads, image_embedding_size=image_embedding_size,
                                input_image_size=input_image_size, device=device, **flags)


def load_sam2_state_dict(
    sd: Mapping[str, torch.Tensor],
    path: str = "",
    *,
    num_heads: int = 8,
    image_embedding_size: Tuple[int, int] = (64, 64),
    input_image_size: Tuple[int, int] = (1024, 1024),
    device: str | torch.device = "cpu",
    **flags,
) -> Sam2Parts:
    """``load_sam2_checkpoint`` on a state dict already read (``read_state_dict``: every tensor checked
    floating-point and finite); ``path`` names it in messages. ``flags``: the decoder flags of
    ``load_sam2_checkpoint``."""
    f = _File({k: tuple(v.shape) for k, v in sd.items()}, sd.__getitem__)
    layout = detect_sam2_layout(f.shapes)
    file, path = path, f"SAM 2 checkpoint {path}"
    if layout == "official":
        mine = [k for k in f.shapes if k.startswith(_OFFICIAL)]
        sources: Dict[str, Source] = {k: (k, None) for k in mine}
        used = set(mine)
    elif layout == "huggingface":
        sources = hf_sam2_key_map(f.shapes)
        used = {src for src, _ in sources.values()} | {
            k for k in f.shapes if k.startswith(("mask_decoder.", "prompt_encoder."))}
    else:
        sources = {"sam_mask_decoder." + k: (k, None) for k in f.shapes}
        used = set(f.shapes)
    not_loaded: Dict[str, int] = {}
    for k in f.shapes:
        if k not in used:
            not_loaded[_group(k)] = not_loaded.get(_group(k), 0) + 1

    def part(prefix: str) -> Dict[str, Source]:
        return {k[len(prefix):]: s for k, s in sources.items() if k.startswith(prefix)}

    def shapes_of_part(p: Mapping[str, Source]) -> Dict[str, Shape]:
        return {k: f.shapes[src] if row is None else (1,) + tuple(f.shapes[src][1:]) for k, (src, row) in p.items()}

    decoder = prompt_encoder = None
    config: Dict[str, Dict[str, object]] = {}
    dec_sources, pe_sources = part("sam_mask_decoder."), part("sam_prompt_encoder.")
    where = path
    if dec_sources:
        flags = {**DECODER_FLAGS, **flags}
        cfg = read_config(lambda: sam2_decoder_config_from_state_dict(
            shapes_of_part(dec_sources), num_heads=num_heads, **flags), path, Sam2CheckpointError)
        C, rate = cfg["transformer_dim"], cfg["attention_downsample_rate"]
        if C % (num_heads * rate) != 0:
            raise Sam2CheckpointError(
                f"{path}: h = {num_heads} heads do not divide the decoder's C / downsample_rate = {C} / {rate}; "
                f"pass num_heads=")
        decoder = _load_part(lambda: build_sam2_mask_decoder(**cfg), dec_sources, f.shapes, f.get, where,
                             "SAM 2 mask decoder").to(device).eval()
        config["mask_decoder"] = cfg
    if pe_sources:
        cfg = read_config(lambda: prompt_encoder_config_from_state_dict(
            shapes_of_part(pe_sources), image_embedding_size, input_image_size), path, Sam2CheckpointError)
        prompt_encoder = _load_part(lambda: build_sam2_prompt_encoder(**cfg), pe_sources, f.shapes, f.get, where,
                                    "SAM 2 prompt encoder").to(device).eval()
        config["prompt_encoder"] = cfg
    if decoder is None and prompt_encoder is None:
        raise Sam2CheckpointError(f"{path}: found neither mask decoder nor prompt encoder weights")
    return Sam2Parts(
        prompt_encoder=prompt_encoder, mask_decoder=decoder, format=layout, path=file,
        release=_release(f.shapes), image_encoder=image_encoder_size(f.shapes), not_loaded=not_loaded,
        config=config,
    )
