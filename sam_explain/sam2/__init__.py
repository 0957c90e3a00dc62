"""SAM 2's mask decoder side, annotated: the same class names, arguments, return values and state-dict
keys as ``sam2.modeling.sam`` (sam2 1.1.0, SAM 2 and SAM 2.1), built on ``sam_explain.modeling``.

  mask_decoder    MaskDecoder: + object-score token and head, high-resolution skips, the stability
                  switch, IoU sigmoid; project_high_res_features (conv_s0 / conv_s1, outside forward)
  transformer     TwoWayTransformer, TwoWayAttentionBlock (SAM's, with SAM 2's MLP keys), Attention
                  (SAM's: the softmax written out, so the attention maps are recorded)
  prompt_encoder  PromptEncoder: SAM's, with box corners as points (labels 2 and 3)
  common          MLP (SAM 2's: its activation a module)
  build           SAM 2.1's configuration; SAM 2's structure with SAM's (the toy SAM's) weights, new parts
                  untrained (toy_sam2_untrained; the trained toy SAM 2 is sam_explain.toy.toy_sam2_model)
  checkpoint      official SAM 2 / 2.1 files and Hugging Face Sam2Model files
  prompts         boxes as points, one call through prompt encoder + decoder, token names, attention

See docs/sam2.md.
"""

from .build import (
    Sam2FromSam, build_sam2_mask_decoder, build_sam2_prompt_encoder, sam2_from_sam, stand_in_backbone_features,
    stand_in_high_res_features, toy_sam2_untrained,
)
from .common import MLP
from .mask_decoder import MaskDecoder, project_high_res_features
from .prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from .transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer
from .checkpoint import Sam2CheckpointError, Sam2Parts, load_sam2_checkpoint
from .prompts import boxes_as_points, capture_sam2_attention, run_sam2_decoder, sam2_token_names

__all__ = [
    "Attention", "MLP", "MaskDecoder", "PositionEmbeddingRandom", "PromptEncoder", "Sam2FromSam",
    "TwoWayAttentionBlock", "TwoWayTransformer", "build_sam2_mask_decoder", "build_sam2_prompt_encoder",
    "project_high_res_features", "sam2_from_sam", "stand_in_backbone_features", "stand_in_high_res_features",
    "toy_sam2_untrained",
    "Sam2CheckpointError", "Sam2Parts", "load_sam2_checkpoint",
    "boxes_as_points", "capture_sam2_attention", "run_sam2_decoder", "sam2_token_names",
]
