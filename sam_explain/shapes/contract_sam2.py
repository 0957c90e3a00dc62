"""The documented-shape contract of SAM 2's mask decoder (``sam_explain.sam2.MaskDecoder`` and the
official ``sam2.modeling.sam.mask_decoder.MaskDecoder``), built on SAM's (:mod:`.contract`).

The tracer tells a SAM 2 decoder from SAM's by its attributes (``pred_obj_scores`` and
``use_high_res_features``, which both SAM 2 implementations have and SAM's lack), labels its rows
with the component kind ``"sam2_decoder"`` and this contract. SAM 2's prompt encoder has SAM's
shapes (SAM 2 only adds the labels 2 and 3 on the point path): SAM's contract labels it.

What differs from SAM's contract:
  * one more output token in front, the object-score token: T = O + 1 + M + N' (O = 1 in SAM 2.1);
  * the high-resolution features and their skips (``hook_feat_s1``, ``hook_skip_s1``, ``hook_feat_s0``,
    ``hook_skip_s0``), and the 1x1 convs ``conv_s0`` / ``conv_s1`` that make them (called outside the
    decoder's forward, so their B, H and W are only known from the call itself);
  * the object-score head and its output (B x 1), the stability score (B x 1), the object-pointer
    token(s) (B x K_ptr x C), and a four-tuple out of the decoder;
  * SAM 2's MLP: its activation is a module (rows ``*.act``), and the block MLP's keys are
    ``mlp.layers.0`` / ``mlp.layers.1`` (SAM: ``mlp.lin1`` / ``mlp.lin2``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Mapping, Optional, Sequence, Tuple

from .contract import LAYER, DecoderConfig, Entry, DECODER_CONTRACT, decoder_config

KIND = "sam2_decoder"

SAM2_SYMBOL_GLOSSARY: Tuple[Tuple[str, str], ...] = (
    ("O", "object-score tokens in front of the IoU token: 1 with pred_obj_scores (SAM 2, SAM 2.1), else 0"),
    ("T", "tokens in the decoder, O + 1 + M + N' (8 for one click in SAM 2.1)"),
    ("N'", "sparse prompt tokens, SAM's rule; SAM 2's image predictor passes a box as two points "
           "(labels 2, 3) and no box, so one box and N clicks give N' = 2 + N + 1"),
    ("I", "images given to the decoder: 1 with repeat_image=True, B with repeat_image=False"),
    ("Ih", "images behind the high-resolution features: 1 (broadcast over the B prompt sets) or B"),
    ("2H x 2W, 4H x 4W", "the stride-8 and stride-4 grids of the high-resolution features "
                         "(128 x 128, 256 x 256), the grids of the two upscaling stages"),
    ("K", "masks returned: M - 1 with multimask_output, else 1 (token 0, or the stability switch's choice)"),
    ("K_ptr", "mask tokens returned as sam_tokens_out: M - 1 with multimask_output and "
              "use_multimask_token_for_obj_ptr, else 1"),
)


@dataclass(frozen=True)
class Sam2DecoderConfig(DecoderConfig):
    """The numbers behind SAM 2's decoder symbols (SAM 2.1's defaults: one click through the image
    predictor, N' = 2 with the padding point; multimask output)."""

    obj_token: bool = True  # pred_obj_scores: O = 1
    hr_images: int = 1  # Ih
    multimask_token_for_obj_ptr: bool = True

    def symbols(self) -> Dict[str, int]:
        values = super().symbols()
        O = int(self.obj_token)
        values.update({
            "O": O, "(O+1+M)": O + 1 + self.M, "T": O + 1 + self.M + self.sparse_tokens, "Ih": self.hr_images,
            "K_ptr": self.M - 1 if (self.multimask and self.multimask_token_for_obj_ptr) else 1,
        })
        return values


def _mlp(prefix: str, widths: Sequence[str], role: str, **root_inputs: str) -> Tuple[Entry, ...]:
    """SAM 2's ``MLP``: len(widths) - 1 linear layers and, between them, its activation module ``act``."""
    entries = [Entry(prefix, f"B {widths[-1]}", role, inputs={"x": f"B {widths[0]}", **root_inputs})]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        entries.append(Entry(f"{prefix}.layers.{i}", f"B {b}", f"linear {a} -> {b}" + ("" if last else ", then act"),
                             inputs={"input": f"B {a}"}))
    if len(widths) > 2:
        hidden = widths[1]
        entries.append(Entry(f"{prefix}.act", f"B {hidden}", "ReLU, a module: called after every layer but the last",
                             inputs={"input": f"B {hidden}"}))
    return tuple(entries)


def _transformer() -> Tuple[Entry, ...]:
    """SAM's transformer entries, with SAM 2's block MLP keys (``mlp.layers.0/1`` for ``mlp.lin1/2``)."""
    renames = {f"{LAYER}.mlp.lin1": f"{LAYER}.mlp.layers.0", f"{LAYER}.mlp.lin2": f"{LAYER}.mlp.layers.1"}
    return tuple(replace(e, path=renames.get(e.path, e.path)) for e in DECODER_CONTRACT
                 if e.path.startswith("transformer"))


def _sam(*paths: str) -> Tuple[Entry, ...]:
    """SAM's decoder entries at these paths (or under them), unchanged."""
    return tuple(e for e in DECODER_CONTRACT if any(e.path == p or e.path.startswith(p + ".") for p in paths))


def _sam_entry(path: str) -> Entry:
    return next(e for e in DECODER_CONTRACT if e.path == path)


SAM2_DECODER_CONTRACT: Tuple[Entry, ...] = (
    Entry("", ("B K 4H 4W", "B K", "B K_ptr C", "B 1"),
          "(masks, iou_pred, sam_tokens_out, object_score_logits): tokens 1..M-1, or token 0 (or the "
          "stability switch's choice)",
          inputs={"image_embeddings": "I C H W", "image_pe": "1 C H W",
                  "sparse_prompt_embeddings": "B N' C", "dense_prompt_embeddings": "B C H W"}),
    Entry("hook_output_tokens", "B (O+1+M) C",
          "obj_score_token ++ iou_token ++ mask_tokens: (O+1+M) x C, repeat 't c -> b t c'"),
    Entry("hook_tokens", "B T C", "cat(output tokens, sparse prompts) on the token axis: T = O + 1 + M + N'"),
    Entry("hook_src", "B C H W", "repeat_image: repeat '1 c h w -> b c h w'; else one image per prompt set; "
                                 "+ dense prompt"),
    _sam_entry("hook_pos_src"),
    *_transformer(),
    Entry("hook_hs", "B T C", "hs: the tokens after the transformer"),
    Entry("hook_obj_score_token_out", "B C", "hs[:, 0]: the object-score token"),
    Entry("hook_iou_token_out", "B C", "hs[:, O]: the IoU token"),
    Entry("hook_mask_tokens_out", "B M C", "hs[:, O+1 : O+1+M]: the mask tokens"),
    Entry("conv_s0", "Ih C/8 4H 4W", "1x1 conv C -> C/8 of the stride-4 image features (SAM2Base.forward_image, "
          "outside the decoder's forward)", inputs={"input": "Ih C 4H 4W"}),
    Entry("conv_s1", "Ih C/4 2H 2W", "1x1 conv C -> C/4 of the stride-8 image features (SAM2Base.forward_image, "
          "outside the decoder's forward)", inputs={"input": "Ih C 2H 2W"}),
    *_sam("output_upscaling"),
    Entry("hook_feat_s1", "Ih C/4 2H 2W", "high_res_features[1]: the stride-8 features after conv_s1"),
    Entry("hook_skip_s1", "B C/4 2H 2W", "output_upscaling.0(src) + feat_s1, before the LayerNorm2d "
                                         "(Ih = 1 broadcasts over B)"),
    Entry("hook_feat_s0", "Ih C/8 4H 4W", "high_res_features[0]: the stride-4 features after conv_s0"),
    Entry("hook_skip_s0", "B C/8 4H 4W", "output_upscaling.3(...) + feat_s0, before the last GELU"),
    _sam_entry("hook_upscaled_embedding"),
    *_mlp("output_hypernetworks_mlps.*", ("C", "C", "C", "C/8"), "hypernetwork MLP of one mask token: C -> C/8"),
    _sam_entry("hook_hyper_in"),
    _sam_entry("hook_masks"),
    *_mlp("iou_prediction_head", ("C", "iou_hidden", "iou_hidden", "M"),
          "IoU head on the IoU token: C -> M (then a sigmoid with iou_prediction_use_sigmoid)"),
    _sam_entry("hook_iou_pred"),
    *_mlp("pred_obj_score_head", ("C", "C", "C", "1"),
          "object-score head on the object-score token: C -> 1 (a linear layer, or this MLP with "
          "pred_obj_scores_mlp)", input="B C"),
    Entry("hook_object_score_logits", "B 1", "the object score, a logit (10 everywhere without pred_obj_scores)"),
    Entry("hook_stability_scores", "B 1", "token 0's stability: area(logits > delta) / area(logits > -delta) "
                                          "(multimask_output=False with the stability switch, eval mode)"),
    Entry("hook_sam_tokens_out", "B K_ptr C", "mask tokens 1..M-1 (multimask and use_multimask_token_for_obj_ptr) "
                                              "or token 0: SAM 2's object pointer comes from them"),
)

CONTRACTS: Dict[str, Tuple[Entry, ...]] = {KIND: SAM2_DECODER_CONTRACT}


def sam2_decoder_config(decoder: object, inputs: Mapping[str, object],
                        known: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
    """Symbol values for a SAM 2 MaskDecoder call (see :func:`.contract.decoder_config`): SAM's,
    plus O, T = O + 1 + M + N', Ih (from ``high_res_features``) and K_ptr."""
    values = decoder_config(decoder, inputs, known)
    if decoder is not None:
        values["O"] = int(bool(getattr(decoder, "pred_obj_scores", False)))
        values["ptr_from_multimask"] = int(bool(getattr(decoder, "use_multimask_token_for_obj_ptr", False)))
    O, M = values.get("O", 0), values.get("M")
    if M is not None:
        values["(O+1+M)"] = O + 1 + M
        if "N'" in values:
            values["T"] = O + 1 + M + values["N'"]
    hr = inputs.get("high_res_features")
    if isinstance(hr, tuple) and len(hr) == 2 and isinstance(hr[0], tuple) and len(hr[0]) == 4:
        values["Ih"] = hr[0][0]
    multimask = inputs.get("multimask_output")
    if isinstance(multimask, bool) and M is not None:
        values["K_ptr"] = M - 1 if (multimask and values.get("ptr_from_multimask")) else 1
    return values
