"""SAM 2's mask decoder: SAM's, plus an object-score token, high-resolution skips and a stability switch.

The whole path, with SAM 2.1's numbers (C = 256, H x W = 64 x 64, M = 4 mask tokens, O = 1
object-score token, every flag on); what SAM does not have is marked *:

  output_tokens    obj_score_token* ++ iou_token ++ mask_tokens   (O + 1 + M) x C -> B x 6 x C
  tokens           output_tokens ++ sparse prompts         B x T x C,  T = O + 1 + M + N'
  src              repeat_image: the one image repeated over B*; else one image per prompt set,
                   plus the dense prompt                   B x C x H x W
  pos_src          image_pe repeated over B                B x C x H x W
  hs, src          the two-way transformer                 B x T x C, B x HW x C
  obj_token_out*   hs[:, 0]                                B x C
  iou_token_out    hs[:, O]                                B x C
  mask_tokens_out  hs[:, O + 1 : O + 1 + M]                B x M x C
  upscaling        dc1 -> (+ feat_s1*) -> LayerNorm2d -> GELU -> dc2 -> (+ feat_s0*) -> GELU
                   B x C x H x W -> B x C/4 x 2H x 2W -> B x C/8 x 4H x 4W = B x 32 x 256 x 256
  hyper_in         one MLP per mask token                  B x M x C/8
  masks            hyper_in . upscaled                     B x M x 4H x 4W
  iou_pred         IoU head on iou_token_out (+ sigmoid*)  B x M
  object_score*    object-score head on obj_token_out      B x 1 (a logit: > 0 means "the object is there")
  forward()        multimask: tokens 1..M-1; single: token 0, or with the stability switch* the
                   best multimask output when token 0's mask is unstable; also returns the mask
                   token(s) behind the output (sam_tokens_out*, SAM 2's object pointer) and the score

feat_s0 (Ih x C/8 x 4H x 4W) and feat_s1 (Ih x C/4 x 2H x 2W) are the image encoder's stride-4 and
stride-8 features after the decoder's own 1x1 convs ``conv_s0`` / ``conv_s1``, which SAM 2 applies
*outside* this forward (``SAM2Base.forward_image``; here :func:`project_high_res_features`).
Ih, the images behind them, is 1 (broadcast over the B prompt sets) or B.

The official code is ``sam2.modeling.sam.mask_decoder`` (sam2 1.1.0); the constructor arguments,
the forward signature, the return values and the state-dict keys are the same, and the tests
compare the outputs side by side (tests/test_sam2_parity.py).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Type

import torch
from einops import einsum, rearrange, repeat
from torch import nn

from ..modeling.common import HookPoint, LayerNorm2d
from ..modeling.mask_decoder import MaskDecoder as SamMaskDecoder
from ..shapes.check import ShapeError, expect_finite, expect_flag, expect_like_weights, expect_shape
from .common import MLP

__all__ = ["MaskDecoder", "project_high_res_features"]


class MaskDecoder(nn.Module):
    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: Type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        """Predicts masks, their IoU and an object score from an image embedding and prompt embeddings.

        Arguments (the official defaults; SAM 2 and 2.1 turn every flag on, see ``build``):
          transformer_dim: C, the channels of the embeddings and tokens.
          transformer: the two-way transformer (``sam_explain.sam2.TwoWayTransformer``).
          num_multimask_outputs: masks returned with multimask_output=True; M = num_multimask_outputs + 1.
          activation: activation of the upscaling path (exact GELU).
          iou_head_depth, iou_head_hidden_dim: layers and width of the IoU MLP.
          use_high_res_features: add the stride-8 and stride-4 image features inside the
            upscaling (and own ``conv_s1`` C -> C/4, ``conv_s0`` C -> C/8 to project them).
          iou_prediction_use_sigmoid: the IoU head ends with a sigmoid (predictions in 0..1).
          dynamic_multimask_via_stability: with multimask_output=False, outside training, return
            token 0's mask only if its stability score reaches ``dynamic_multimask_stability_thresh``,
            else the multimask output with the highest predicted IoU. The score is
            area(logits > delta) / area(logits > -delta), delta = ``dynamic_multimask_stability_delta``.
          pred_obj_scores: an object-score token (before the IoU token) and a head on it; without it
            the object score is a constant 10 ("present").
          pred_obj_scores_mlp: the object-score head is a 3-layer MLP C -> C -> C -> 1, not a linear layer.
          use_multimask_token_for_obj_ptr: with multimask_output=True, return the M - 1 multimask
            tokens as ``sam_tokens_out`` (else always token 0).
        """
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer

        self.num_multimask_outputs = num_multimask_outputs

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1, stride=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_use_sigmoid = iou_prediction_use_sigmoid
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        self.pred_obj_scores_mlp = pred_obj_scores_mlp
        if pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(transformer_dim, transformer_dim, 1, 3) if pred_obj_scores_mlp else nn.Linear(transformer_dim, 1)
            )

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

        self.hook_output_tokens = HookPoint()
        self.hook_tokens = HookPoint()
        self.hook_src = HookPoint()
        self.hook_pos_src = HookPoint()
        self.hook_hs = HookPoint()
        self.hook_obj_score_token_out = HookPoint()
        self.hook_iou_token_out = HookPoint()
        self.hook_mask_tokens_out = HookPoint()
        self.hook_feat_s1 = HookPoint()
        self.hook_skip_s1 = HookPoint()
        self.hook_feat_s0 = HookPoint()
        self.hook_skip_s0 = HookPoint()
        self.hook_upscaled_embedding = HookPoint()
        self.hook_hyper_in = HookPoint()
        self.hook_masks = HookPoint()
        self.hook_iou_pred = HookPoint()
        self.hook_object_score_logits = HookPoint()
        self.hook_stability_scores = HookPoint()
        self.hook_sam_tokens_out = HookPoint()

    @property
    def num_output_tokens(self) -> int:
        """O + 1 + M: the learned tokens in front of the prompt tokens (6 in SAM 2.1, 5 in SAM)."""
        return int(self.pred_obj_scores) + 1 + self.num_mask_tokens

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: Optional[List[torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks for B prompt sets.

        Arguments:
          image_embeddings: 1 x C x H x W with repeat_image=True (one image for every prompt set),
            B x C x H x W with repeat_image=False (image b for prompt set b).
          image_pe: 1 x C x H x W, the dense positional encoding (PromptEncoder.get_dense_pe()).
          sparse_prompt_embeddings: B x N' x C.
          dense_prompt_embeddings: B x C x H x W.
          multimask_output: True returns the M - 1 ambiguity-aware masks, False one mask.
          repeat_image: see image_embeddings.
          high_res_features: with use_high_res_features, [feat_s0 Ih x C/8 x 4H x 4W,
            feat_s1 Ih x C/4 x 2H x 2W] (Ih = 1 or B); ignored otherwise (SAM 2's image predictor
            passes an empty list there).

        Returns:
          masks: B x K x 4H x 4W logits, K = M - 1 with multimask_output, else 1.
          iou_pred: B x K.
          sam_tokens_out: B x (M - 1) x C (multimask_output and use_multimask_token_for_obj_ptr),
            else B x 1 x C (mask token 0, whichever mask was returned).
          object_score_logits: B x 1 (10 everywhere without pred_obj_scores).
        """
        multimask_output = expect_flag("MaskDecoder", "multimask_output", multimask_output)
        repeat_image = expect_flag("MaskDecoder", "repeat_image", repeat_image)
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            repeat_image=repeat_image,
            high_res_features=high_res_features,
        )

        # Which masks go out: B x M x 4H x 4W -> B x K x 4H x 4W
        if multimask_output:
            masks, iou_pred = masks[:, 1:, :, :], iou_pred[:, 1:]  # tokens 1..M-1
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)  # B x 1 x 4H x 4W, B x 1
        else:
            masks, iou_pred = masks[:, 0:1, :, :], iou_pred[:, 0:1]  # token 0

        # The token(s) SAM 2 turns into its object pointer (the video path's memory of the object)
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]  # B x (M-1) x C
        else:
            sam_tokens_out = mask_tokens_out[:, 0:1]  # B x 1 x C: token 0, even when a multimask output won
        sam_tokens_out = self.hook_sam_tokens_out(sam_tokens_out)
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def check_inputs(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: Optional[Sequence[torch.Tensor]],
    ) -> Tuple[int, int, int]:
        """Validate the decoder's inputs; return (B, H, W). Raises ShapeError.

        SAM's checks (``sam_explain.modeling.MaskDecoder.check_inputs``: shapes, dtypes, devices),
        then SAM 2's: the number of images against ``repeat_image``, and the high-resolution features.
        """
        where = "MaskDecoder"
        B, H, W = SamMaskDecoder.check_inputs(
            self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        I = image_embeddings.shape[0]
        if repeat_image and I != 1:
            raise ShapeError(
                f"{where}: repeat_image=True repeats one image over the B = {B} prompt sets, so "
                f"image_embeddings must be 1 x C x H x W, got I = {I} images "
                f"(pass repeat_image=False to pair image b with prompt set b)"
            )
        if not repeat_image and I != B:
            raise ShapeError(
                f"{where}: repeat_image=False pairs image b with prompt set b, so image_embeddings must be "
                f"B x C x H x W = {B} x {self.transformer_dim} x {H} x {W}, got I = {I} image(s) "
                f"(pass repeat_image=True to use one image for every prompt set)"
            )
        if self.use_high_res_features:
            C = self.transformer_dim
            if not (isinstance(high_res_features, (list, tuple)) and len(high_res_features) == 2):
                got = type(high_res_features).__name__ + (
                    f" of length {len(high_res_features)}" if isinstance(high_res_features, (list, tuple)) else "")
                raise ShapeError(
                    f"{where}: use_high_res_features=True needs high_res_features = [feat_s0 Ih x C/8 x 4H x 4W, "
                    f"feat_s1 Ih x C/4 x 2H x 2W] = [Ih x {C // 8} x {4 * H} x {4 * W}, Ih x {C // 4} x {2 * H} x "
                    f"{2 * W}] (the stride-4 and stride-8 image features after conv_s0 and conv_s1; Ih = 1 or B), "
                    f"got {got}"
                )
            feat_s0, feat_s1 = high_res_features
            hint = f"Ih, the images of the high-resolution features, must be 1 or B = {B}"
            sizes = expect_shape(where, "high_res_features[0] (feat_s0)", feat_s0, "Ih C/8 4H 4W",
                                 hint=hint, **{"C/8": C // 8, "4H": 4 * H, "4W": 4 * W})
            Ih = sizes["Ih"]
            if Ih not in (1, B):
                raise ShapeError(f"{where}: high_res_features[0] (feat_s0) has Ih = {Ih} images; {hint}")
            expect_shape(where, "high_res_features[1] (feat_s1)", feat_s1, "Ih C/4 2H 2W",
                         hint="Ih from feat_s0", Ih=Ih, **{"C/4": C // 4, "2H": 2 * H, "2W": 2 * W})
            for name, t in (("high_res_features[0]", feat_s0), ("high_res_features[1]", feat_s1)):
                expect_like_weights(where, name, t, self.iou_token.weight, owner="decoder")
                expect_finite(where, name, t)
        return B, H, W

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: Optional[List[torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All M masks B x M x 4H x 4W, their IoU B x M, the mask tokens B x M x C and the object
        score B x 1, before ``forward`` chooses what goes out. See ``forward``."""
        B, H, W = self.check_inputs(image_embeddings, image_pe, sparse_prompt_embeddings,
                                    dense_prompt_embeddings, repeat_image, high_res_features)

        # The output tokens: [object-score token,] IoU token, M mask tokens; s is where the IoU token sits.
        s = 1 if self.pred_obj_scores else 0
        learned = ([self.obj_score_token.weight] if self.pred_obj_scores else []) + [
            self.iou_token.weight, self.mask_tokens.weight]
        output_tokens = torch.cat(learned, dim=0)  # (O+1+M) x C
        output_tokens = self.hook_output_tokens(repeat(output_tokens, "t c -> b t c", b=B))  # B x (O+1+M) x C
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)  # B x T x C, T = O+1+M+N'
        tokens = self.hook_tokens(tokens)

        # The image: repeated over the prompt sets, or already one per prompt set; plus the dense prompt.
        if repeat_image:
            src = repeat(image_embeddings, "1 c h w -> b c h w", b=B)  # B x C x H x W
        else:
            src = image_embeddings  # B x C x H x W, image b for prompt set b
        src = self.hook_src(src + dense_prompt_embeddings)  # B x C x H x W
        pos_src = self.hook_pos_src(repeat(image_pe, "1 c h w -> b c h w", b=B))  # B x C x H x W

        hs, src = self.transformer(src, pos_src, tokens)  # B x T x C, B x HW x C
        hs = self.hook_hs(hs)
        iou_token_out = self.hook_iou_token_out(hs[:, s, :])  # B x C
        mask_tokens_out = self.hook_mask_tokens_out(hs[:, s + 1 : s + 1 + self.num_mask_tokens, :])  # B x M x C

        # Upscale the image side 4x: B x C x H x W -> B x C/4 x 2H x 2W -> B x C/8 x 4H x 4W
        src = rearrange(src, "b (h w) c -> b c h w", h=H, w=W)  # B x C x H x W
        if not self.use_high_res_features:
            upscaled_embedding = self.output_upscaling(src)  # B x C/8 x 4H x 4W, as in SAM
        else:
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            feat_s1 = self.hook_feat_s1(feat_s1)  # Ih x C/4 x 2H x 2W
            feat_s0 = self.hook_feat_s0(feat_s0)  # Ih x C/8 x 4H x 4W
            # the stride-8 features join after the first transposed conv, before the LayerNorm ...
            upscaled = self.hook_skip_s1(dc1(src) + feat_s1)  # B x C/4 x 2H x 2W (Ih = 1 broadcasts over B)
            upscaled = act1(ln1(upscaled))  # B x C/4 x 2H x 2W
            # ... and the stride-4 features after the second, before the last GELU
            upscaled = self.hook_skip_s0(dc2(upscaled) + feat_s0)  # B x C/8 x 4H x 4W
            upscaled_embedding = act2(upscaled)  # B x C/8 x 4H x 4W
        upscaled_embedding = self.hook_upscaled_embedding(upscaled_embedding)

        # Each mask token becomes C/8 weights through its own MLP ...
        hyper_in_list: List[torch.Tensor] = [
            mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)
        ]  # M tensors of B x C/8
        hyper_in = self.hook_hyper_in(torch.stack(hyper_in_list, dim=1))  # B x M x C/8
        # ... and a mask is those weights times the C/8 upscaled feature maps.
        masks = einsum(hyper_in, upscaled_embedding, "b m c8, b c8 h4 w4 -> b m h4 w4")  # B x M x 4H x 4W
        masks = self.hook_masks(masks)

        iou_pred = self.hook_iou_pred(self.iou_prediction_head(iou_token_out))  # B x M

        if self.pred_obj_scores:
            obj_score_token_out = self.hook_obj_score_token_out(hs[:, 0, :])  # B x C
            object_score_logits = self.pred_obj_score_head(obj_score_token_out)  # B x 1
        else:
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)  # B x 1: sigmoid(10) ~ 1, "present"
        object_score_logits = self.hook_object_score_logits(object_score_logits)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _get_stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """B x K x 4H x 4W logits -> B x K: area(logits > delta) / area(logits > -delta), 1 where
        nothing is above -delta. 1 means no pixel lies within delta of the threshold 0."""
        mask_logits = rearrange(mask_logits, "b k h4 w4 -> b k (h4 w4)")  # B x K x 16HW
        delta = self.dynamic_multimask_stability_delta
        area_i = torch.sum(mask_logits > delta, dim=-1).float()  # B x K: pixels in the mask at threshold +delta
        area_u = torch.sum(mask_logits > -delta, dim=-1).float()  # B x K: ... at threshold -delta (a superset)
        return torch.where(area_u > 0, area_i / area_u, 1.0)  # B x K

    def _dynamic_multimask_via_stability(
        self, all_mask_logits: torch.Tensor, all_iou_scores: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """B x M x 4H x 4W logits, B x M IoU -> B x 1 x 4H x 4W, B x 1: token 0's mask where its
        stability score reaches the threshold, else the multimask output (tokens 1..M-1) with the
        highest predicted IoU."""
        B = all_mask_logits.shape[0]
        # the best of the multimask outputs, by predicted IoU
        multimask_logits = all_mask_logits[:, 1:, :, :]  # B x (M-1) x 4H x 4W
        multimask_iou_scores = all_iou_scores[:, 1:]  # B x (M-1)
        best = torch.argmax(multimask_iou_scores, dim=-1)  # B
        batch = torch.arange(B, device=all_iou_scores.device)  # B
        best_multimask_logits = rearrange(multimask_logits[batch, best], "b h4 w4 -> b 1 h4 w4")  # B x 1 x 4H x 4W
        best_multimask_iou_scores = rearrange(multimask_iou_scores[batch, best], "b -> b 1")  # B x 1

        # token 0's mask, and whether it is stable
        singlemask_logits = all_mask_logits[:, 0:1, :, :]  # B x 1 x 4H x 4W
        singlemask_iou_scores = all_iou_scores[:, 0:1]  # B x 1
        stability_scores = self.hook_stability_scores(self._get_stability_scores(singlemask_logits))  # B x 1
        is_stable = stability_scores >= self.dynamic_multimask_stability_thresh  # B x 1

        mask_logits_out = torch.where(
            rearrange(is_stable, "b 1 -> b 1 1 1"), singlemask_logits, best_multimask_logits
        )  # B x 1 x 4H x 4W
        iou_scores_out = torch.where(is_stable, singlemask_iou_scores, best_multimask_iou_scores)  # B x 1
        return mask_logits_out, iou_scores_out


def project_high_res_features(
    decoder: MaskDecoder, backbone_s0: torch.Tensor, backbone_s1: torch.Tensor
) -> List[torch.Tensor]:
    """The decoder's ``high_res_features`` from the image encoder's stride-4 and stride-8 feature maps,
    as ``SAM2Base.forward_image`` makes them (outside the decoder's forward, once per image):

      backbone_s0  Ih x C x 4H x 4W  --conv_s0 (1x1)-->  feat_s0  Ih x C/8 x 4H x 4W
      backbone_s1  Ih x C x 2H x 2W  --conv_s1 (1x1)-->  feat_s1  Ih x C/4 x 2H x 2W

    Returns [feat_s0, feat_s1]. Raises ShapeError (nothing runs) on a decoder without
    ``use_high_res_features`` or on misshapen maps."""
    where = "project_high_res_features"
    if not getattr(decoder, "use_high_res_features", False):
        raise ShapeError(f"{where}: the decoder was built with use_high_res_features=False: it has no conv_s0 / conv_s1")
    C = decoder.transformer_dim
    sizes = expect_shape(where, "backbone_s0", backbone_s0, "Ih C 4H 4W", C=C,
                         hint="the stride-4 image features, 4x the image-embedding grid")
    h4, w4 = sizes["4H"], sizes["4W"]
    if h4 % 2 or w4 % 2:
        raise ShapeError(f"{where}: backbone_s0 is {h4} x {w4}; 4H x 4W must be twice the stride-8 grid 2H x 2W")
    expect_shape(where, "backbone_s1", backbone_s1, "Ih C 2H 2W", Ih=sizes["Ih"], C=C,
                 hint="the stride-8 image features, half the size of backbone_s0",
                 **{"2H": h4 // 2, "2W": w4 // 2})
    for name, t in (("backbone_s0", backbone_s0), ("backbone_s1", backbone_s1)):
        expect_like_weights(where, name, t, decoder.conv_s0.weight, owner="decoder")
        expect_finite(where, name, t)
    return [decoder.conv_s0(backbone_s0), decoder.conv_s1(backbone_s1)]  # Ih x C/8 x 4H x 4W, Ih x C/4 x 2H x 2W
