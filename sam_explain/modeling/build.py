"""Every constructor of SAM's models, and the configurations they take.

  build_mask_decoder, build_prompt_encoder   the decoder side (the same for vit_b, vit_l, vit_h)
  make_sam                                   the whole of SAM, any encoder size
  SAM_CONFIGS                                the three released image encoders
  *_config_from_state_dict                   the constructor arguments, read off a state dict's shapes

The readers look at key names and tensor shapes only; they never touch the values, so they run on
the metadata of a file before anything is allocated (``sam_explain.checkpoint`` checks what they
find before it builds a model). ``randomize_`` gives seeded random weights, for the figures of an
untrained decoder, the tests and the benchmarks.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Dict, Iterable, Mapping, Sequence, Tuple

import torch
from torch import nn

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .transformer import TwoWayTransformer

PROMPT_EMBED_DIM = 256  # C
IMAGE_SIZE = 1024  # the padded input image
PATCH_SIZE = 16
IMAGE_EMBEDDING_SIZE = IMAGE_SIZE // PATCH_SIZE  # H = W = 64

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

Shape = Tuple[int, ...]


def build_mask_decoder(
    transformer_dim: int = PROMPT_EMBED_DIM,
    depth: int = 2,
    num_heads: int = 8,
    mlp_dim: int = 2048,
    num_multimask_outputs: int = 3,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
    attention_downsample_rate: int = 2,
) -> MaskDecoder:
    """SAM's MaskDecoder (4,058,340 parameters with the defaults), in eval mode."""
    decoder = MaskDecoder(
        num_multimask_outputs=num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=depth, embedding_dim=transformer_dim, mlp_dim=mlp_dim, num_heads=num_heads,
            attention_downsample_rate=attention_downsample_rate,
        ),
        transformer_dim=transformer_dim,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
    )
    return decoder.eval()


def build_prompt_encoder(
    embed_dim: int = PROMPT_EMBED_DIM,
    image_embedding_size: Tuple[int, int] = (IMAGE_EMBEDDING_SIZE, IMAGE_EMBEDDING_SIZE),
    input_image_size: Tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE),
    mask_in_chans: int = 16,
) -> PromptEncoder:
    """SAM's PromptEncoder (6,220 parameters with the defaults), in eval mode."""
    encoder = PromptEncoder(
        embed_dim=embed_dim,
        image_embedding_size=tuple(image_embedding_size),
        input_image_size=tuple(input_image_size),
        mask_in_chans=mask_in_chans,
    )
    return encoder.eval()


def make_sam(
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: Sequence[int],
    *,
    image_size: int = IMAGE_SIZE,
    patch_size: int = PATCH_SIZE,
    window_size: int = 14,
    prompt_embed_dim: int = PROMPT_EMBED_DIM,
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


# --- configurations from a state dict's key names and shapes ------------------------------------
#
# Each reader takes a state dict, or its shapes alone (key -> tuple of ints: a file's header, a meta
# model's state dict), and raises KeyError naming a key it needs and does not find, or ValueError
# naming a tensor whose number of axes is not the documented one.


def shapes_of(state_dict: Mapping[str, object]) -> Dict[str, Shape]:
    """key -> shape (a tuple of ints), for a state dict of tensors (anything with a ``.shape``) or of shapes."""
    return {k: tuple(int(s) for s in getattr(v, "shape", v)) for k, v in state_dict.items()}


def dims(shapes: Mapping[str, Shape], key: str, symbols: str) -> Tuple[int, ...]:
    """The sizes of ``key``'s axes, checked to be as many as ``symbols`` names (``"M C"``)."""
    shape = shapes[key]
    if len(shape) != len(symbols.split()):
        raise ValueError(f"{key} must be {' x '.join(symbols.split())}, found shape {tuple(shape)}")
    return tuple(shape)


def count_indexed(keys: Iterable[str], prefix: str) -> int:
    """1 + the largest i of the keys ``{prefix}{i}.*`` (0 if there is none): the blocks of a ModuleList."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(m.group(1)) for k in keys for m in [pattern.match(k)] if m]
    return max(found) + 1 if found else 0


def decoder_config_from_state_dict(shapes: Mapping[str, object], num_heads: int = 8) -> Dict[str, int]:
    """``build_mask_decoder``'s arguments read off a MaskDecoder state dict's shapes (keys without a
    prefix). The heads cannot be read from the weights: given."""
    shapes = shapes_of(shapes)
    _, C = dims(shapes, "iou_token.weight", "1 C")
    M, _ = dims(shapes, "mask_tokens.weight", "M C")
    internal, _ = dims(shapes, "transformer.final_attn_token_to_image.q_proj.weight", "C/2 C")
    mlp = "transformer.layers.0.mlp.lin1.weight"
    return dict(
        transformer_dim=C,
        depth=count_indexed(shapes, "transformer.layers."),
        num_heads=num_heads,
        mlp_dim=dims(shapes, mlp, "mlp_dim C")[0] if mlp in shapes else 2048,  # depth 0: no MLP to read it from
        num_multimask_outputs=M - 1,
        iou_head_depth=count_indexed(shapes, "iou_prediction_head.layers."),
        iou_head_hidden_dim=dims(shapes, "iou_prediction_head.layers.0.weight", "iou_hidden C")[0],
        attention_downsample_rate=max(1, C // max(internal, 1)),
    )


def prompt_encoder_config_from_state_dict(
    shapes: Mapping[str, object], image_embedding_size: Tuple[int, int], input_image_size: Tuple[int, int]
) -> Dict[str, object]:
    """``build_prompt_encoder``'s arguments read off a PromptEncoder state dict's shapes; the grid and
    the input size cannot be read from the weights: given."""
    shapes = shapes_of(shapes)
    return dict(
        embed_dim=dims(shapes, "no_mask_embed.weight", "1 C")[1],
        image_embedding_size=tuple(image_embedding_size),
        input_image_size=tuple(input_image_size),
        mask_in_chans=dims(shapes, "mask_downscaling.3.weight", "Cm Cm/4 2 2")[0],
    )


def sam_config_from_state_dict(shapes: Mapping[str, object], decoder_num_heads: int = 8) -> Dict[str, object]:
    """Every ``make_sam`` argument, read off an official-layout state dict's shapes (only the decoder's
    head count cannot be read from the weights: 8 in SAM).

    E from ``patch_embed.proj.weight`` (E x 3 x P x P), the grid from ``pos_embed``
    (1 x H x W x E), the depth from the block indices, d from the relative-position tables
    ((2S - 1) x d; h = E / d), the window side S from a windowed block's table and the
    global blocks from the tables as wide as the grid.
    """
    shapes = shapes_of(shapes)
    embed_dim, _, patch, _ = dims(shapes, "image_encoder.patch_embed.proj.weight", "E 3 P P")
    grid = dims(shapes, "image_encoder.pos_embed", "1 H W E")[1]
    depth = count_indexed(shapes, "image_encoder.blocks.")
    table_lengths = [dims(shapes, f"image_encoder.blocks.{i}.attn.rel_pos_h", "2S-1 d")[0] for i in range(depth)]
    head_dim = dims(shapes, "image_encoder.blocks.0.attn.rel_pos_h", "2S-1 d")[1]
    global_blocks = tuple(i for i, n in enumerate(table_lengths) if n == 2 * grid - 1)
    windowed = [n for n in table_lengths if n != 2 * grid - 1]
    return dict(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=embed_dim // max(head_dim, 1),
        encoder_global_attn_indexes=global_blocks,
        image_size=grid * patch,
        patch_size=patch,
        window_size=(windowed[0] + 1) // 2 if windowed else 0,
        prompt_embed_dim=dims(shapes, "mask_decoder.iou_token.weight", "1 C")[1],
        decoder_num_heads=decoder_num_heads,
        decoder_mlp_dim=dims(shapes, "mask_decoder.transformer.layers.0.mlp.lin1.weight", "mlp_dim C")[0],
        iou_head_hidden_dim=dims(shapes, "mask_decoder.iou_prediction_head.layers.0.weight", "iou_hidden C")[0],
        mask_in_chans=dims(shapes, "prompt_encoder.mask_downscaling.3.weight", "Cm Cm/4 2 2")[0],
    )


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter with seeded noise: biases N(0, 0.01), norm weights near 1,
    matrices, kernels and embeddings N(0, 1 / fan_in) with fan_in the size of one output row."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if name.endswith("bias"):
            p.copy_(0.1 * noise)
        elif p.dim() == 1:  # norm weights
            p.copy_(1.0 + 0.1 * noise)
        else:  # 2-d and more: linear and conv weights, embeddings
            p.copy_(noise / p[0].numel() ** 0.5)
    return module
