"""Attention maps of SAM's decoder: capture (``record_attention``), token names, and a one-call
``capture_attention`` that runs prompt encoder + decoder and returns every map with its token names."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
from torch import nn

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

    ``prompts`` is a ``sam_explain.example.Prompts`` (points/boxes in input-frame pixels).
    The record also carries ``token_names`` (B lists of T names), ``prompts``,
    ``input_image_size``, ``masks`` and ``iou_pred``. Options as in :func:`record_attention`.
    """
    from ..example import run_decoder

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


__all__ = [
    "AttentionMemoryError", "AttentionRecord", "AttentionSite", "DEFAULT_MAX_BYTES", "KINDS",
    "attention_sites", "capture_attention", "estimate_attention_bytes", "record_attention",
    "token_names", "token_positions",
]
