"""SAM, annotated: the same class names, arguments and state-dict keys as ``segment_anything.modeling``;
its constructors in ``build``."""

from .build import build_mask_decoder, build_prompt_encoder, make_sam
from .common import HookPoint, LayerNorm2d, MLPBlock
from .mask_decoder import MLP, MaskDecoder
from .prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from .transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

__all__ = [
    "Attention", "HookPoint", "LayerNorm2d", "MLP", "MLPBlock", "MaskDecoder",
    "PositionEmbeddingRandom", "PromptEncoder", "TwoWayAttentionBlock", "TwoWayTransformer",
    "build_mask_decoder", "build_prompt_encoder", "make_sam",
]
