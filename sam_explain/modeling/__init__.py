"""The decoder side of SAM, annotated: same names, arguments and state-dict keys as
``segment_anything.modeling``."""

from .build import build_mask_decoder, build_prompt_encoder
from .common import HookPoint, LayerNorm2d, MLPBlock
from .mask_decoder import MLP, MaskDecoder
from .prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from .transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

__all__ = [
    "Attention", "HookPoint", "LayerNorm2d", "MLP", "MLPBlock", "MaskDecoder",
    "PositionEmbeddingRandom", "PromptEncoder", "TwoWayAttentionBlock", "TwoWayTransformer",
    "build_mask_decoder", "build_prompt_encoder",
]
