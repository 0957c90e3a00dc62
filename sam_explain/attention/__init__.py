"""Attention maps of SAM's decoder, as tensors (no matplotlib here; the pictures are in ``figures``).

  capture     record_attention (hooks on the hook points), AttentionRecord, the memory estimate
  tokens      the names of the T tokens, from the prompts
  inputs      stand-in inputs for an untrained decoder: a placeholder image and embedding
  here        capture_attention (prompt encoder + decoder in one call), and the same around a
              SamPredictor's ``predict`` (predict_and_record, predict_with_attention)
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Union

import numpy as np
import torch
from torch import nn

from ..prompts import Prompts, run_decoder
from .capture import (
    DEFAULT_MAX_BYTES, KINDS, AttentionMemoryError, AttentionRecord, AttentionSite, attention_sites,
    estimate_attention_bytes, record_attention,
)
from .tokens import token_names, token_positions


@torch.no_grad()
def capture_attention(
    prompt_encoder: nn.Module,
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    prompts,
    multimask_output: bool = True,
    *,
    device: Optional[Union[str, torch.device]] = None,
    average_heads: bool = False,
    layers: Optional[Iterable] = None,
    kinds: Optional[Iterable[str]] = None,
    with_qk: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> AttentionRecord:
    """Run the prompt encoder and the decoder on ``prompts`` and return every attention map.

    ``prompts`` is a ``sam_explain.prompts.Prompts`` (points/boxes in input-frame pixels).
    The record also carries ``token_names`` (B lists of T names), ``prompts``,
    ``input_image_size``, ``masks`` and ``iou_pred``. Options as in :func:`record_attention`.
    """
    with record_attention(
        decoder, device=device, average_heads=average_heads, layers=layers, kinds=kinds,
        with_qk=with_qk, max_bytes=max_bytes,
    ) as record:
        masks, iou_pred, _, _ = run_decoder(prompt_encoder, decoder, image_embeddings, prompts, multimask_output)
    record.token_names = token_names(prompts, decoder.num_mask_tokens)
    record.prompts = prompts
    record.input_image_size = tuple(prompt_encoder.input_image_size)
    record.masks, record.iou_pred = masks, iou_pred
    return record


@torch.no_grad()
def predict_and_record(predictor, multimask_output: bool = True, *, point_coords=None, point_labels=None,
                       box=None, mask_input=None, **record_kwargs):
    """``predictor.predict(...)`` (a ``SamPredictor`` with its image set; prompts in original-image
    pixels) inside ``record_attention`` on its decoder. Returns (masks k x H0 x W0, iou k,
    low_res k x 4H x 4W, record); the record carries the token names, the prompts in the input
    frame and the input size, so that the figures can draw it over the photo."""
    decoder = predictor.model.mask_decoder
    with record_attention(decoder, **record_kwargs) as record:
        masks, iou, low_res = predictor.predict(point_coords=point_coords, point_labels=point_labels, box=box,
                                                mask_input=mask_input, multimask_output=multimask_output)
    points = boxes = None
    if point_coords is not None:
        coords = predictor.transform.apply_coords(np.asarray(point_coords), predictor.original_size)  # N x 2
        points = (torch.as_tensor(coords, dtype=torch.float32)[None],
                  torch.as_tensor(np.asarray(point_labels), dtype=torch.int64)[None])  # 1 x N x 2, 1 x N
    if box is not None:
        boxes = torch.as_tensor(predictor.transform.apply_boxes(np.asarray(box), predictor.original_size),
                                dtype=torch.float32)  # 1 x 4
    record.prompts = Prompts(points=points, boxes=boxes)
    record.token_names = token_names(record.prompts, decoder.num_mask_tokens)
    record.input_image_size = (predictor.model.image_encoder.img_size,) * 2
    record.masks, record.iou_pred = torch.as_tensor(low_res)[None], torch.as_tensor(iou)[None]
    return masks, iou, low_res, record


def returned_mask_tokens(multimask_output: bool, num_mask_tokens: int = 4) -> List[str]:
    """The names of the mask tokens behind the returned masks: mask1..mask{M-1}, or mask0."""
    return [f"mask{t}" for t in (range(1, num_mask_tokens) if multimask_output else range(0, 1))]


def predict_with_attention(predictor, multimask_output: bool = True, **prompts):
    """``predictor.predict(...)`` plus the final token-to-image attention of each returned mask's
    token: returns (masks k x H0 x W0, iou k, low_res k x 4H x 4W, attention k x h x H x W, float32
    on the CPU)."""
    masks, iou, low_res, record = predict_and_record(predictor, multimask_output, layers="final",
                                                      kinds="token_to_image", **prompts)
    names = returned_mask_tokens(multimask_output, predictor.model.mask_decoder.num_mask_tokens)
    H, W = record.grid()
    probs = record[record.by(layer="final")[0]][0]  # h x T x HW, the only prompt set
    rows = [record.token_index(name) for name in names]
    attention = probs[:, rows, :].unflatten(-1, (H, W)).transpose(0, 1)  # k x h x H x W
    return masks, iou, low_res, attention.float().cpu()


__all__ = [
    "AttentionMemoryError", "AttentionRecord", "AttentionSite", "DEFAULT_MAX_BYTES", "KINDS",
    "attention_sites", "capture_attention", "estimate_attention_bytes", "predict_and_record", "predict_with_attention",
    "record_attention", "returned_mask_tokens",
    "token_names", "token_positions",
]
