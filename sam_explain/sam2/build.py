"""SAM 2's decoder side, built: SAM 2.1's configuration, a configuration read off a state dict, and
SAM 2's structure carrying a SAM model's weights.

  build_sam2_mask_decoder, build_sam2_prompt_encoder   SAM 2.1's decoder side (the same for all four
                                                       released sizes, tiny to large, and for SAM 2)
  sam2_decoder_config_from_state_dict                  the constructor arguments a state dict's shapes imply
  sam2_from_sam, toy_sam2_untrained                    SAM 2's structure with SAM's (the toy SAM's) weights
                                                       where the shapes allow; the new parts untrained
                                                       (the trained toy SAM 2: sam_explain.toy_sam2_model())
  stand_in_backbone_features                           stride-4 / stride-8 maps for a model without them

Every SAM 2 and SAM 2.1 config file (``sam2/configs/sam2*/*.yaml``) sets the same decoder flags:
``use_high_res_features_in_sam``, ``iou_prediction_use_sigmoid``, ``pred_obj_scores``,
``pred_obj_scores_mlp`` and ``use_multimask_token_for_obj_ptr``, all true; C = 256, depth 2,
8 heads, MLP 2048, M = 4, a 1024 x 1024 input and a 64 x 64 grid. The stability switch
(``dynamic_multimask_via_stability``, delta 0.05, threshold 0.98) is not in the config files:
``sam2.build_sam.build_sam2`` adds it through ``hydra_overrides_extra`` when
``apply_postprocessing=True``, its default; the builders below follow ``build_sam2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.build import decoder_config_from_state_dict, prompt_encoder_config_from_state_dict, randomize_
from ..shapes.check import expect_shape
from .mask_decoder import MaskDecoder, project_high_res_features
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

PROMPT_EMBED_DIM = 256  # C
IMAGE_SIZE = 1024  # SAM 2's square input
BACKBONE_STRIDE = 16
IMAGE_EMBEDDING_SIZE = IMAGE_SIZE // BACKBONE_STRIDE  # H = W = 64

# The decoder flags of every released SAM 2 / SAM 2.1 config, and what build_sam2 adds to them.
SAM2_DECODER_FLAGS: Dict[str, bool] = dict(
    use_high_res_features=True,
    iou_prediction_use_sigmoid=True,
    pred_obj_scores=True,
    pred_obj_scores_mlp=True,
    use_multimask_token_for_obj_ptr=True,
)
BUILD_SAM2_POSTPROCESSING: Dict[str, object] = dict(
    dynamic_multimask_via_stability=True,
    dynamic_multimask_stability_delta=0.05,
    dynamic_multimask_stability_thresh=0.98,
)

Shape = Tuple[int, ...]


def build_sam2_mask_decoder(
    transformer_dim: int = PROMPT_EMBED_DIM,
    depth: int = 2,
    num_heads: int = 8,
    mlp_dim: int = 2048,
    num_multimask_outputs: int = 3,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
    attention_downsample_rate: int = 2,
    use_high_res_features: bool = True,
    iou_prediction_use_sigmoid: bool = True,
    dynamic_multimask_via_stability: bool = True,
    dynamic_multimask_stability_delta: float = 0.05,
    dynamic_multimask_stability_thresh: float = 0.98,
    pred_obj_scores: bool = True,
    pred_obj_scores_mlp: bool = True,
    use_multimask_token_for_obj_ptr: bool = True,
) -> MaskDecoder:
    """SAM 2.1's MaskDecoder (4,215,109 parameters with the defaults), in eval mode.

    The defaults are what ``build_sam2`` builds for every released checkpoint: the config files'
    flags (SAM2_DECODER_FLAGS) and the stability switch of its post-processing
    (BUILD_SAM2_POSTPROCESSING); pass ``dynamic_multimask_via_stability=False`` for the config
    files alone (``build_sam2(..., apply_postprocessing=False)``)."""
    decoder = MaskDecoder(
        num_multimask_outputs=num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=depth, embedding_dim=transformer_dim, mlp_dim=mlp_dim, num_heads=num_heads,
            attention_downsample_rate=attention_downsample_rate,
        ),
        transformer_dim=transformer_dim,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
        use_high_res_features=use_high_res_features,
        iou_prediction_use_sigmoid=iou_prediction_use_sigmoid,
        dynamic_multimask_via_stability=dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=dynamic_multimask_stability_thresh,
        pred_obj_scores=pred_obj_scores,
        pred_obj_scores_mlp=pred_obj_scores_mlp,
        use_multimask_token_for_obj_ptr=use_multimask_token_for_obj_ptr,
    )
    return decoder.eval()


def build_sam2_prompt_encoder(
    embed_dim: int = PROMPT_EMBED_DIM,
    image_embedding_size: Tuple[int, int] = (IMAGE_EMBEDDING_SIZE, IMAGE_EMBEDDING_SIZE),
    input_image_size: Tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE),
    mask_in_chans: int = 16,
) -> PromptEncoder:
    """SAM 2.1's PromptEncoder (6,220 parameters with the defaults, SAM's), in eval mode."""
    encoder = PromptEncoder(
        embed_dim=embed_dim,
        image_embedding_size=tuple(image_embedding_size),
        input_image_size=tuple(input_image_size),
        mask_in_chans=mask_in_chans,
    )
    return encoder.eval()


# --- configurations from a state dict's key names and shapes ------------------------------------

# SAM 2's block MLP keys -> SAM's (the only renamed keys between the two decoders)
_MLP_RENAMES = ((".mlp.layers.0.", ".mlp.lin1."), (".mlp.layers.1.", ".mlp.lin2."))


def _as_sam_keys(key: str) -> str:
    for sam2, sam in _MLP_RENAMES:
        key = key.replace(sam2, sam)
    return key


def sam2_decoder_config_from_state_dict(
    shapes: Mapping[str, object],
    num_heads: int = 8,
    iou_prediction_use_sigmoid: bool = True,
    use_multimask_token_for_obj_ptr: bool = True,
    dynamic_multimask_via_stability: bool = True,
    dynamic_multimask_stability_delta: float = 0.05,
    dynamic_multimask_stability_thresh: float = 0.98,
) -> Dict[str, object]:
    """``build_sam2_mask_decoder``'s arguments read off a SAM 2 MaskDecoder state dict (keys without
    a prefix; tensors or shapes). The sizes are SAM's reading (``decoder_config_from_state_dict``);
    ``use_high_res_features``, ``pred_obj_scores`` and ``pred_obj_scores_mlp`` follow from which keys
    exist. What no weight shows is given: the heads and the flags that change no parameter (the
    defaults are SAM 2.1's, as ``build_sam2`` sets them). Raises KeyError naming a missing key."""
    renamed = {_as_sam_keys(k): v for k, v in shapes.items()}
    config: Dict[str, object] = dict(decoder_config_from_state_dict(renamed, num_heads=num_heads))
    config.update(
        use_high_res_features="conv_s0.weight" in shapes,
        pred_obj_scores="obj_score_token.weight" in shapes,
        pred_obj_scores_mlp="pred_obj_score_head.layers.0.weight" in shapes,
        iou_prediction_use_sigmoid=iou_prediction_use_sigmoid,
        use_multimask_token_for_obj_ptr=use_multimask_token_for_obj_ptr,
        dynamic_multimask_via_stability=dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=dynamic_multimask_stability_thresh,
    )
    return config


# --- SAM 2's structure with SAM's weights -------------------------------------------------------

_NEW_PARTS = ("obj_score_token", "pred_obj_score_head", "conv_s0", "conv_s1")


@dataclass
class Sam2FromSam:
    """What ``sam2_from_sam`` returns: SAM 2's modules, and which of their weights are SAM's.

    copied: SAM 2 key -> the SAM key its value came from, both prefixed ``mask_decoder.`` or
      ``prompt_encoder.`` (``...mlp.layers.0.weight`` <- ``...mlp.lin1.weight``, the rest by the same name). untrained: the SAM 2 keys SAM has no counterpart for, left at a seeded
      initialisation (``randomize_`` with ``seed``): the object-score token and head, conv_s0 and
      conv_s1. notes: what behaves differently with the same weights. source: the model the
      weights came from (the ToyModel for ``toy_sam2_untrained``: its ``embed`` makes image embeddings).
    """

    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder
    copied: Dict[str, str]
    untrained: Tuple[str, ...]
    seed: int
    notes: Tuple[str, ...] = ()
    source: Optional[nn.Module] = field(default=None, repr=False)

    @property
    def trained(self) -> bool:
        """False: part of this model has never been trained."""
        return not self.untrained


def sam2_from_sam(
    prompt_encoder: nn.Module,
    mask_decoder: nn.Module,
    *,
    seed: int = 0,
    num_heads: Optional[int] = None,
    **decoder_flags: object,
) -> Sam2FromSam:
    """SAM 2's decoder side with a SAM (1) model's weights wherever SAM 2 has the same tensor.

    Arguments:
      prompt_encoder, mask_decoder: SAM's (``sam_explain.modeling`` or the official modules).
      seed: the seeded initialisation of the parts SAM does not have.
      num_heads: h (default: the SAM decoder's).
      decoder_flags: ``build_sam2_mask_decoder`` flags (default SAM 2.1's, as ``build_sam2`` sets them).

    Returns a :class:`Sam2FromSam` (modules in eval mode, on the SAM modules' device). The prompt
    encoder's weights are all SAM's (the two have the same tensors); so are the decoder's transformer,
    tokens, upscaling, hypernetworks and IoU head. The object-score token and head and conv_s0 /
    conv_s1 are untrained: the masks run through SAM 2's structure, but what they show of the new
    parts is mechanics, not learnt behaviour.
    """
    sam_dec = {k: v.detach() for k, v in mask_decoder.state_dict().items()}
    sam_pe = {k: v.detach() for k, v in prompt_encoder.state_dict().items()}
    sizes = decoder_config_from_state_dict(sam_dec, num_heads=num_heads or mask_decoder.transformer.num_heads)
    flags = {**SAM2_DECODER_FLAGS, **BUILD_SAM2_POSTPROCESSING, **decoder_flags}
    device = next(iter(sam_dec.values())).device
    decoder = build_sam2_mask_decoder(**sizes, **flags)

    untrained = []
    for i, name in enumerate(_NEW_PARTS):
        part = getattr(decoder, name, None)
        if part is not None:
            randomize_(part, seed + i)
            untrained += [f"{name}.{k}" for k in part.state_dict()]
    state = decoder.state_dict()
    copied: Dict[str, str] = {}
    for key in state:
        if key in untrained:
            continue
        source = _as_sam_keys(key)
        state[key] = sam_dec[source]  # a KeyError here would be a SAM 2 tensor missing from _NEW_PARTS
        copied[f"mask_decoder.{key}"] = f"mask_decoder.{source}"
    decoder.load_state_dict(state, strict=True)

    pe_config = prompt_encoder_config_from_state_dict(
        sam_pe, tuple(prompt_encoder.image_embedding_size), tuple(prompt_encoder.input_image_size))
    pe = build_sam2_prompt_encoder(**pe_config)
    pe.load_state_dict(sam_pe, strict=True)
    copied.update({f"prompt_encoder.{k}": f"prompt_encoder.{k}" for k in sam_pe})

    notes = ["the object-score token takes part in every attention of the transformer: with it the "
             "masks are not SAM's even where every other weight is"]
    if flags["iou_prediction_use_sigmoid"]:
        notes.append("the IoU head (trained without one) ends with SAM 2's sigmoid")
    if flags["use_high_res_features"]:
        notes.append("the upscaling adds conv_s1 / conv_s0 of the stride-8 / stride-4 features, untrained")
    return Sam2FromSam(prompt_encoder=pe.to(device).eval(), mask_decoder=decoder.to(device).eval(),
                       copied=copied, untrained=tuple(f"mask_decoder.{k}" for k in untrained), seed=seed,
                       notes=tuple(notes))


def toy_sam2_untrained(device: Union[str, torch.device] = "cpu", seed: int = 0,
                       **decoder_flags: object) -> Sam2FromSam:
    """SAM 2's decoder side with the shipped toy SAM's weights (``sam2_from_sam`` of ``toy_model()``), the
    parts SAM has not UNTRAINED (seeded random): input 256 x 256, a 64 x 64 grid, C = 256. ``.source`` is
    the ToyModel (``.source.embed(image)``). The toy SAM's encoder has no stride-4 / stride-8 features: see
    :func:`stand_in_backbone_features`. The toy SAM 2 trained for SAM 2's decoder (its object score, its
    skips) is ``sam_explain.toy_sam2_model()``."""
    from ..toy import toy_model  # the toy world builds on the modeling package, not the other way round

    toy = toy_model(device=device)
    record = sam2_from_sam(toy.prompt_encoder, toy.mask_decoder, seed=seed, **decoder_flags)
    record.source = toy
    return record




def stand_in_backbone_features(image_embeddings: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stride-4 and stride-8 maps for a model whose image encoder has none (the toy's): the image
    embedding I x C x H x W repeated (nearest) to I x C x 4H x 4W and I x C x 2H x 2W. They carry no
    detail finer than the embedding: they exist so that SAM 2's skips run, with the right shapes.
    Give them to ``project_high_res_features``."""
    sizes = expect_shape("stand_in_backbone_features", "image_embeddings", image_embeddings, "I C H W")
    H, W = sizes["H"], sizes["W"]
    s0 = F.interpolate(image_embeddings, size=(4 * H, 4 * W), mode="nearest")  # I x C x 4H x 4W
    s1 = F.interpolate(image_embeddings, size=(2 * H, 2 * W), mode="nearest")  # I x C x 2H x 2W
    return s0, s1


def stand_in_high_res_features(decoder: nn.Module, image_embeddings: torch.Tensor) -> Optional[List[torch.Tensor]]:
    """The decoder's ``high_res_features`` for an image encoder without stride-4 / stride-8 levels:
    ``stand_in_backbone_features`` through its conv_s0 / conv_s1, without autograd, [feat_s0 I x C/8 x 4H x 4W,
    feat_s1 I x C/4 x 2H x 2W]; None for a decoder without ``use_high_res_features``."""
    if not getattr(decoder, "use_high_res_features", False):
        return None
    with torch.no_grad():
        return project_high_res_features(decoder, *stand_in_backbone_features(image_embeddings))
