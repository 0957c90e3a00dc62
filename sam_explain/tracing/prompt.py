"""One call from a described prompt to its shape trace (the notebook one-liner and the CLI)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..modeling import build_mask_decoder, build_prompt_encoder
from ..prompts import example_prompts
from ..shapes.registry import component_kind
from .tracer import trace_shapes
from .views import ShapeTrace

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def trace_prompt(
    points: int = 1,
    box: bool = False,
    mask: bool = False,
    batch: int = 1,
    multimask_output: bool = True,
    *,
    decoder: Optional[nn.Module] = None,
    prompt_encoder: Optional[nn.Module] = None,
    image_embeddings: Optional[torch.Tensor] = None,
    high_res_features: Optional[Sequence[torch.Tensor]] = None,
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    include_prompt_encoder: bool = False,
    keep_tensors: bool = False,
    seed: int = 0,
) -> ShapeTrace:
    """Run the prompt encoder and the decoder on an example prompt and return the decoder's trace.

    ``points`` clicks (N), an optional ``box`` and ``mask`` prompt, for ``batch`` prompt sets (B)
    (see ``sam_explain.prompts.example_prompts``). Without ``decoder`` / ``prompt_encoder`` it
    builds SAM's with seeded random weights, on ``device`` in ``dtype`` (default cpu, float32);
    modules you pass are used where they are. ``image_embeddings`` defaults to seeded noise,
    1 x C x H x W. With ``include_prompt_encoder`` the trace holds both modules, under the paths
    ``prompt_encoder.*`` and ``mask_decoder.*``. ``trace.result`` is (masks, iou_pred).

    A SAM 2 decoder (``sam_explain.sam2``) runs as SAM 2's image predictor runs it: a box as two points
    labelled 2 and 3, ``repeat_image`` for one image, and ``high_res_features`` [feat_s0 1 x C/8 x 4H x 4W,
    feat_s1 1 x C/4 x 2H x 2W] (default: stand-ins, the image embedding repeated through conv_s0 / conv_s1);
    ``trace.result`` is then (masks, iou_pred, sam_tokens_out, object_score_logits).

        sam_explain.trace_prompt(points=2, box=True, batch=3)
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"trace_prompt: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    if decoder is None or prompt_encoder is None:
        torch.manual_seed(seed)
    if decoder is None:
        decoder = build_mask_decoder().to(device=device or "cpu", dtype=dtype or torch.float32)
    if prompt_encoder is None:
        prompt_encoder = build_prompt_encoder().to(device=device or "cpu", dtype=dtype or torch.float32)
    weight = next(decoder.parameters())
    device, dtype = weight.device, weight.dtype

    prompts = example_prompts(
        points=points, box=box, mask=mask, batch=batch, seed=seed,
        image_size=tuple(prompt_encoder.input_image_size), mask_size=tuple(prompt_encoder.mask_input_size),
    ).to(device)
    if prompts.masks is not None:
        prompts.masks = prompts.masks.to(dtype)
    if image_embeddings is None:
        gen = torch.Generator().manual_seed(seed)
        h, w = prompt_encoder.image_embedding_size
        image_embeddings = torch.randn(1, decoder.transformer_dim, h, w, generator=gen)
    image_embeddings = image_embeddings.to(device=device, dtype=dtype)

    sam2 = component_kind(decoder) == "sam2_decoder"
    extra = {}
    if sam2:
        from ..sam2 import boxes_as_points, stand_in_high_res_features

        prompts = boxes_as_points(prompts)  # a box as two points, as SAM 2's image predictor gives it
        if high_res_features is None:
            high_res_features = stand_in_high_res_features(decoder, image_embeddings)
        extra = {"repeat_image": image_embeddings.shape[0] == 1,
                 "high_res_features": None if high_res_features is None
                 else [f.to(device=device, dtype=dtype) for f in high_res_features]}
    elif high_res_features is not None:
        raise ValueError("trace_prompt: high_res_features are for a SAM 2 decoder; this one is SAM's")

    def run():
        sparse, dense = prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=prompts.masks)
        return decoder(
            image_embeddings=image_embeddings, image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask_output, **extra,
        )

    target = {"prompt_encoder": prompt_encoder, "mask_decoder": decoder} if include_prompt_encoder else decoder
    with torch.no_grad(), trace_shapes(target, keep_tensors=keep_tensors) as trace:
        trace.result = run()
    desc = f"B = {batch}, " + (f"{points} point(s)" if points else "no points") + (", a box" if box else "") + (", a mask" if mask else "")
    trace.title = desc + ("" if multimask_output else ", single mask") + f", {str(dtype).replace('torch.', '')} on {device}"
    return trace
