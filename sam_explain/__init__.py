"""sam-explain: SAM's mask decoder, annotated and instrumented for learning.

The modules (official names, arguments and state-dict keys), the tools that look inside
them (shape traces, attention maps, figures), the toy model, and the whole of SAM for photos.
Where each job lives: README.md, "Where things are".
"""

__version__ = "0.1.0"

# SAM's decoder side and its configuration
from .modeling import (
    MLP, Attention, HookPoint, LayerNorm2d, MaskDecoder, MLPBlock, PositionEmbeddingRandom,
    PromptEncoder, TwoWayAttentionBlock, TwoWayTransformer, build_mask_decoder, build_prompt_encoder,
)
from .shapes import ShapeError
from .prompts import Prompts, example_prompts, run_decoder

# Looking inside: shape traces, the shape contract, attention maps and their pictures
from .shapes import contract as shape_contract
from .tracing import ShapeTrace, TraceRow, trace_prompt, trace_shapes
from .attention import (
    AttentionMemoryError, AttentionRecord, capture_attention, estimate_attention_bytes, record_attention,
    token_names,
)

# Asking "why": interventions on a run, and the code the walkthrough teaches, listed from the package
from .interventions import drop_tokens, intervene, replace, swap_tokens, zero
from .source import show_source

# The whole of SAM, for real checkpoints and photos
from .modeling.image_encoder import ImageEncoderViT
from .modeling.sam import Sam
from .utils.transforms import ResizeLongestSide
from .predictor import SamPredictor
from .checkpoint import CheckpointError, SamCheckpointError, detect_model_type, load_sam_checkpoint
from .build_sam import build_sam, build_sam_vit_b, build_sam_vit_h, build_sam_vit_l, sam_model_registry

# The toy world
from .toy import make_scene as toy_scene
from .toy import toy_model, toy_sam2_model


# The pictures need matplotlib, which takes longer to import than the rest of the package:
# load it on first use (PEP 562), so commands and scripts that draw nothing start faster.
_FIGURES = {
    "plot_image_to_token": "sam_explain.figures.attention",
    "plot_token_self": "sam_explain.figures.attention",
    "plot_token_to_image": "sam_explain.figures.attention",
    "explore_attention": "sam_explain.figures.explorer",
    "live_explorer": "sam_explain.explorer",
}


def __getattr__(name: str):
    if name in _FIGURES:
        import importlib

        return getattr(importlib.import_module(_FIGURES[name]), name)
    raise AttributeError(f"module 'sam_explain' has no attribute {name!r}")
