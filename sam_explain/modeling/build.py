"""SAM's configuration of the decoder side (identical for vit_b, vit_l and vit_h)."""

from typing import Tuple

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

PROMPT_EMBED_DIM = 256  # C
IMAGE_SIZE = 1024  # the padded input image
PATCH_SIZE = 16
IMAGE_EMBEDDING_SIZE = IMAGE_SIZE // PATCH_SIZE  # H = W = 64


def build_mask_decoder(
    transformer_dim: int = PROMPT_EMBED_DIM,
    depth: int = 2,
    num_heads: int = 8,
    mlp_dim: int = 2048,
    num_multimask_outputs: int = 3,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
) -> MaskDecoder:
    """SAM's MaskDecoder (4,058,340 parameters with the defaults), in eval mode."""
    decoder = MaskDecoder(
        num_multimask_outputs=num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=depth, embedding_dim=transformer_dim, mlp_dim=mlp_dim, num_heads=num_heads
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
        image_embedding_size=image_embedding_size,
        input_image_size=input_image_size,
        mask_in_chans=mask_in_chans,
    )
    return encoder.eval()
