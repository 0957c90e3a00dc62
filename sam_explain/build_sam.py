"""Build SAM (vit_b, vit_l, vit_h) and load an official checkpoint into it.

    sam = build_sam(checkpoint="sam_vit_b_01ec64.pth")       # model type read from the keys
    sam = sam_model_registry["vit_l"](checkpoint="sam_vit_l_0b3195.pth")

Loading is strict: every key and every shape of the checkpoint must match the model;
nothing is unpickled beyond tensors (``sam_explain.checkpoint.read_state_dict``).
"""

from __future__ import annotations

import os
import re
from functools import partial
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .checkpoint import CheckpointError, compare_state_dict, read_state_dict
from .modeling.build import build_mask_decoder, build_prompt_encoder
from .modeling.image_encoder import ImageEncoderViT
from .modeling.sam import Sam

# The three released encoders; everything else (C = 256, 1024 x 1024 input, 16 x 16
# patches, 14 x 14 windows, the decoder) is shared.
SAM_CONFIGS: Dict[str, Dict[str, object]] = {
    "vit_b": dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                  encoder_global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                  encoder_global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                  encoder_global_attn_indexes=(7, 15, 23, 31)),
}


class SamCheckpointError(CheckpointError):
    """A state dict does not fit the SAM model it is loaded into."""


def make_sam(
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: Sequence[int],
    *,
    image_size: int = 1024,
    patch_size: int = 16,
    window_size: int = 14,
    prompt_embed_dim: int = 256,
    decoder_num_heads: int = 8,
    decoder_mlp_dim: int = 2048,
    iou_head_hidden_dim: int = 256,
    mask_in_chans: int = 16,
) -> Sam:
    """A SAM with the official layout; the defaults are the released models' (only the
    encoder's width, depth, heads and global blocks differ between vit_b, vit_l and vit_h).
    Smaller values give the small models the tests use. Returned in eval mode."""
    grid = image_size // patch_size  # H = W
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=encoder_embed_dim,
            depth=encoder_depth,
            num_heads=encoder_num_heads,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(encoder_global_attn_indexes),
            window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=build_prompt_encoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=build_mask_decoder(
            transformer_dim=prompt_embed_dim,
            num_heads=decoder_num_heads,
            mlp_dim=decoder_mlp_dim,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
    )
    return sam.eval()


def detect_model_type(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'vit_b', 'vit_l' or 'vit_h', from the encoder's width (the shape of
    ``image_encoder.pos_embed``, 1 x 64 x 64 x E) and its number of blocks; 'custom (...)'
    for another encoder. Raises SamCheckpointError when there is no image encoder."""
    key = "image_encoder.pos_embed"
    if key not in state_dict:
        raise SamCheckpointError(
            f"not a full SAM checkpoint: no '{key}' among its {len(state_dict)} keys "
            "(a decoder-only checkpoint has no image encoder; see sam_explain.checkpoint.load_sam_checkpoint)"
        )
    width = int(state_dict[key].shape[-1])
    depth = _count_blocks(state_dict)
    for name, cfg in SAM_CONFIGS.items():
        if cfg["encoder_embed_dim"] == width and cfg["encoder_depth"] == depth:
            return name
    known = ", ".join(f"{n}: E = {c['encoder_embed_dim']}, {c['encoder_depth']} blocks" for n, c in SAM_CONFIGS.items())
    return f"custom (E = {width}, {depth} blocks; released: {known})"


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Copy ``state_dict`` into ``model`` only if every key and shape matches; otherwise
    raise SamCheckpointError naming the missing, unexpected and misshapen keys (the
    model is left as it was)."""
    missing, unexpected, wrong = compare_state_dict(model.state_dict(), state_dict)
    misshapen = [f"{k}: model {want}, {what} {got}" for k, want, got in wrong]
    if missing or unexpected or misshapen:
        def listing(label: str, items: list) -> str:
            shown = "; ".join(items[:8]) + (f"; ... ({len(items) - 8} more)" if len(items) > 8 else "")
            return f"\n  {label} ({len(items)}): {shown}"

        msg = f"the {what} does not fit the model"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen)):
            if items:
                msg += listing(label, items)
        raise SamCheckpointError(msg)
    model.load_state_dict(state_dict, strict=True)


def sam_config_from_state_dict(state_dict: Mapping[str, torch.Tensor], decoder_num_heads: int = 8) -> Dict[str, object]:
    """Every ``make_sam`` argument, read from the shapes of an official-layout state dict
    (only the decoder's head count cannot be read from the weights: 8 in SAM).

    E from ``patch_embed.proj.weight`` (E x 3 x P x P), the grid from ``pos_embed``
    (1 x H x W x E), the depth from the block indices, d from the relative-position tables
    ((2S - 1) x d; h = E / d), the window side S from a windowed block's table and the
    global blocks from the tables as wide as the grid.
    """
    detect_model_type(state_dict)  # raises a clear error for a file without an image encoder

    def shape(key: str) -> Tuple[int, ...]:
        if key not in state_dict:
            raise SamCheckpointError(f"not an official-layout SAM state dict: no '{key}'")
        return tuple(state_dict[key].shape)

    embed_dim, _, patch, _ = shape("image_encoder.patch_embed.proj.weight")
    grid = shape("image_encoder.pos_embed")[1]
    depth = _count_blocks(state_dict)
    table_lengths = [shape(f"image_encoder.blocks.{i}.attn.rel_pos_h")[0] for i in range(depth)]
    head_dim = shape("image_encoder.blocks.0.attn.rel_pos_h")[1]
    global_blocks = tuple(i for i, n in enumerate(table_lengths) if n == 2 * grid - 1)
    windowed = [n for n in table_lengths if n != 2 * grid - 1]
    return dict(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=embed_dim // head_dim,
        encoder_global_attn_indexes=global_blocks,
        image_size=grid * patch,
        patch_size=patch,
        window_size=(windowed[0] + 1) // 2 if windowed else 0,
        prompt_embed_dim=shape("mask_decoder.iou_token.weight")[1],
        decoder_num_heads=decoder_num_heads,
        decoder_mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        iou_head_hidden_dim=shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
        mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
    )


def _count_blocks(state_dict: Mapping[str, torch.Tensor]) -> int:
    indices = [int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))]
    return 1 + max(indices, default=-1)


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

    state_dict = read_state_dict(checkpoint)
    if any(k.startswith("vision_encoder.") for k in state_dict):
        raise SamCheckpointError(
            f"{checkpoint} is a Hugging Face SamModel file; the full model (with its image encoder) "
            "loads from Meta's official files (sam_vit_b_01ec64.pth, ...). Its decoder alone loads "
            "with sam_explain.checkpoint.load_sam_checkpoint."
        )
    config = sam_config_from_state_dict(state_dict, decoder_num_heads=decoder_num_heads)
    if model_type is not None:
        found = detect_model_type(state_dict)
        if found != model_type:
            raise SamCheckpointError(f"{checkpoint} holds a {found} model, but model_type={model_type!r} was asked for")
        config = dict(SAM_CONFIGS[model_type])
    sam = make_sam(**config)
    load_state_dict_strict(sam, state_dict, what=f"checkpoint {os.fspath(checkpoint)}")
    return sam


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
