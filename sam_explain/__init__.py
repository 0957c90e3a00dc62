"""sam-explain: SAM's mask decoder, annotated and instrumented for learning."""

from .modeling import (
    MLP, Attention, HookPoint, LayerNorm2d, MaskDecoder, MLPBlock, PositionEmbeddingRandom,
    PromptEncoder, TwoWayAttentionBlock, TwoWayTransformer, build_mask_decoder, build_prompt_encoder,
)
from .shapes_check import ShapeError

__version__ = "0.1.0"
from .tracing import ShapeTrace, TraceRow, trace_prompt, trace_shapes
from . import shape_contract
