"""Prompts through SAM 2's decoder side: boxes as points, one call through prompt encoder + decoder,
the names of the T tokens, and the seven attention maps.

  boxes_as_points       what SAM2ImagePredictor does with a box: two points labelled 2 and 3, put
                        before the clicks, and no box (so the padding point is appended)
  run_sam2_decoder      prompt encoder, then decoder (SAM's ``run_decoder``, with SAM 2's arguments)
  sam2_token_names      T = O + 1 + M + N' names per prompt set: ``obj_score``, ``iou``, ``mask0``...
  capture_sam2_attention  run_sam2_decoder inside ``record_attention``, with the token names
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..attention import DEFAULT_MAX_BYTES, AttentionRecord, record_attention
from ..attention.tokens import LABEL_SUFFIX, output_token_names
from ..prompts import Prompts

__all__ = ["boxes_as_points", "capture_sam2_attention", "run_sam2_decoder", "sam2_token_names"]


def boxes_as_points(prompts: Prompts) -> Prompts:
    """Prompts as SAM 2's image predictor gives them to its prompt encoder: each box B x 4 becomes
    two points B x 2 x 2 labelled 2 (top-left) and 3 (bottom-right), placed before the clicks;
    ``boxes`` is None. One box and N clicks: B x (2 + N) points, N' = 2 + N + 1 (the padding point)."""
    if prompts.boxes is None:
        return prompts
    boxes = prompts.boxes
    corners = boxes.reshape(-1, 2, 2)  # B x 2 x 2: (x0, y0), (x1, y1)
    corner_labels = torch.tensor([[2, 3]], dtype=torch.int64, device=boxes.device).repeat(boxes.shape[0], 1)  # B x 2
    if prompts.points is not None:
        coords, labels = prompts.points
        points = (torch.cat([corners, coords], dim=1),  # B x (2 + N) x 2
                  torch.cat([corner_labels, labels.to(corner_labels.dtype)], dim=1))  # B x (2 + N)
    else:
        points = (corners, corner_labels)
    return Prompts(points=points, boxes=None, masks=prompts.masks)


@torch.no_grad()
def run_sam2_decoder(
    prompt_encoder: nn.Module,
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    prompts: Prompts,
    multimask_output: bool = True,
    *,
    high_res_features: Optional[Sequence[torch.Tensor]] = None,
    repeat_image: Optional[bool] = None,
    box_as_points: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM 2's prompt encoder, then its decoder, without autograd.

    Arguments:
      image_embeddings: 1 x C x H x W (repeated over the B prompt sets) or B x C x H x W.
      prompts: B prompt sets in input-image pixels.
      high_res_features: [feat_s0, feat_s1] (``project_high_res_features``), for a decoder with
        use_high_res_features.
      repeat_image: default: True for one image, False for B images.
      box_as_points: give a box as two points labelled 2 and 3, as SAM 2's image predictor does
        (``boxes_as_points``); False gives it through ``boxes=`` as SAM does.

    Returns (masks, iou_pred, sam_tokens_out, object_score_logits, sparse, dense).
    """
    if box_as_points:
        prompts = boxes_as_points(prompts)
    if repeat_image is None:
        repeat_image = image_embeddings.shape[0] == 1
    sparse, dense = prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=prompts.masks)
    masks, iou_pred, sam_tokens_out, object_score_logits = decoder(
        image_embeddings=image_embeddings,
        image_pe=prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=repeat_image,
        high_res_features=None if high_res_features is None else list(high_res_features),
    )
    return masks, iou_pred, sam_tokens_out, object_score_logits, sparse, dense


def sam2_token_names(prompts: Prompts, decoder: nn.Module, box_as_points: bool = True) -> List[List[str]]:
    """T names per prompt set (B lists), in the decoder's order: ``obj_score`` (with pred_obj_scores),
    ``iou``, ``mask0`` ... ``mask{M-1}``, then the sparse tokens: ``box corner 0`` / ``box corner 1``
    for labels 2 / 3, ``point{i} (+)`` / ``(-)`` / ``(pad)`` for the clicks, ``pad`` for the padding
    point, and a box given through ``boxes=`` last (``box_as_points=False``)."""
    if box_as_points:
        prompts = boxes_as_points(prompts)
    head = (["obj_score"] if getattr(decoder, "pred_obj_scores", False) else []) + \
        output_token_names(decoder.num_mask_tokens)
    names = []
    for b in range(prompts.batch):
        sparse: List[str] = []
        if prompts.points is not None:
            clicks = 0
            for lab in prompts.points[1][b].tolist():
                lab = int(lab)
                if lab in (2, 3):
                    sparse.append(f"box corner {lab - 2}")
                else:
                    sparse.append(f"point{clicks} {LABEL_SUFFIX.get(lab, f'(label {lab})')}")
                    clicks += 1
            if prompts.boxes is None:
                sparse.append("pad")
        if prompts.boxes is not None:
            sparse += ["box corner 0", "box corner 1"]
        names.append(head + sparse)
    return names


@torch.no_grad()
def capture_sam2_attention(
    prompt_encoder: nn.Module,
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    prompts: Prompts,
    multimask_output: bool = True,
    *,
    high_res_features: Optional[Sequence[torch.Tensor]] = None,
    repeat_image: Optional[bool] = None,
    box_as_points: bool = True,
    device: Optional[Union[str, torch.device]] = None,
    average_heads: bool = False,
    layers: Optional[Iterable] = None,
    kinds: Optional[Iterable[str]] = None,
    with_qk: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> AttentionRecord:
    """``run_sam2_decoder`` inside ``record_attention``: every attention map of SAM 2's decoder
    (B x h x N_q x N_k, T = O + 1 + M + N' tokens). The record also carries ``token_names``,
    ``prompts`` (as the prompt encoder got them), ``input_image_size``, ``masks``, ``iou_pred`` and,
    beyond SAM's record, ``object_score_logits`` and ``sam_tokens_out``. Options as in ``record_attention``."""
    given = boxes_as_points(prompts) if box_as_points else prompts
    with record_attention(decoder, device=device, average_heads=average_heads, layers=layers, kinds=kinds,
                          with_qk=with_qk, max_bytes=max_bytes) as record:
        masks, iou_pred, sam_tokens_out, object_score_logits, _, _ = run_sam2_decoder(
            prompt_encoder, decoder, image_embeddings, given, multimask_output,
            high_res_features=high_res_features, repeat_image=repeat_image, box_as_points=False)
    record.token_names = sam2_token_names(given, decoder, box_as_points=False)
    record.prompts = given
    record.input_image_size = tuple(prompt_encoder.input_image_size)
    record.masks, record.iou_pred = masks, iou_pred
    record.object_score_logits, record.sam_tokens_out = object_score_logits, sam_tokens_out
    return record
