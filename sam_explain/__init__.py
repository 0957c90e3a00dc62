"""sam-explain: SAM's mask decoder, annotated and instrumented for learning."""

from .modeling import (
    MLP, Attention, HookPoint, LayerNorm2d, MaskDecoder, MLPBlock, PositionEmbeddingRandom,
    PromptEncoder, TwoWayAttentionBlock, TwoWayTransformer, build_mask_decoder, build_prompt_encoder,
)
from .shapes_check import ShapeError

__version__ = "0.1.0"
from .toy import make_scene as toy_scene
from .toy import toy_model
