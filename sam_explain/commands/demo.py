"""``sam-explain demo``: run the decoder once on an example prompt, print what went in and came out.

By default the trained toy model on one of its scenes; ``--checkpoint`` for real weights, ``--random``
for an untrained decoder (labelled as such); ``--sam2`` (or a SAM 2 checkpoint) for SAM 2.1's decoder."""

from __future__ import annotations

import argparse

import torch

from .args import CommandError, add_model_options, check_memory, load_models, nonnegative_int, positive_int, \
    size_in_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the decoder once and print its inputs and outputs")
    add_model_options(p)
    p.add_argument("--points", type=nonnegative_int, default=1, help="clicks per prompt set (N)")
    p.add_argument("--box", action="store_true", help="add a box to each prompt set")
    p.add_argument("--mask", action="store_true", help="add a mask prompt to each prompt set")
    p.add_argument("--batch", type=positive_int, default=1, help="prompt sets (B)")
    p.add_argument("--single-mask", action="store_true", help="multimask_output=False")
    p.add_argument("--max-memory", type=size_in_bytes, help="refuse a run estimated above this (default: half "
                                                            "of the available memory), e.g. 4G")
    p.add_argument("--seed", type=int, default=0, help="the example prompts' seed (and the toy scene's)")
    p.set_defaults(func=run)


def describe(name: str, t: torch.Tensor, symbols: str) -> str:
    numbers = " x ".join(str(s) for s in t.shape)
    return f"  {name:<28} {symbols:<18} = {numbers:<22} {str(t.dtype).replace('torch.', '')}"


def run(args: argparse.Namespace) -> int:
    from ..prompts import example_prompts, run_decoder
    from ..utils.memory import decoder_bytes

    if args.points == 0 and not args.box and not args.mask:
        raise CommandError("give the decoder a prompt: --points N >= 1, --box or --mask")
    models = load_models(args, seed=args.seed)
    prompt_encoder, decoder = models.prompt_encoder, models.decoder
    h, w = prompt_encoder.image_embedding_size
    check_memory(decoder_bytes(args.batch, decoder.transformer_dim, h, w), args.max_memory,
                 f"the decoder on B = {args.batch} prompt sets")
    print(models.label)
    prompts = example_prompts(
        points=args.points, box=args.box, mask=args.mask, batch=args.batch,
        image_size=prompt_encoder.input_image_size, mask_size=prompt_encoder.mask_input_size, seed=args.seed,
    )
    image_embeddings = models.image_embeddings
    object_scores = features = None
    if models.sam2:
        from ..sam2 import boxes_as_points, run_sam2_decoder

        features = models.high_res_features
        masks, iou_pred, _, object_scores, sparse, dense = run_sam2_decoder(
            prompt_encoder, decoder, image_embeddings, prompts, multimask_output=not args.single_mask,
            high_res_features=features)
        prompts = boxes_as_points(prompts)  # as the prompt encoder got them
    else:
        masks, iou_pred, sparse, dense = run_decoder(
            prompt_encoder, decoder, image_embeddings, prompts, multimask_output=not args.single_mask
        )
    print("in:")
    if prompts.points is not None:
        print(describe("point coords", prompts.points[0], "B x N x 2"))
        print(describe("point labels", prompts.points[1], "B x N"))
    if prompts.boxes is not None:
        print(describe("boxes", prompts.boxes, "B x 4"))
    if prompts.masks is not None:
        print(describe("mask input", prompts.masks, "B x 1 x 4H x 4W"))
    print(describe("image_embeddings", image_embeddings, "1 x C x H x W"))
    if features is not None:
        print(describe("high_res_features[0]", features[0], "1 x C/8 x 4H x 4W"))
        print(describe("high_res_features[1]", features[1], "1 x C/4 x 2H x 2W"))
    print(describe("image_pe", prompt_encoder.get_dense_pe(), "1 x C x H x W"))
    print(describe("sparse_prompt_embeddings", sparse, "B x N' x C"))
    print(describe("dense_prompt_embeddings", dense, "B x C x H x W"))
    print("out:")
    k = "1" if args.single_mask else "3"
    print(describe("masks (logits)", masks, f"B x {k} x 4H x 4W"))
    print(describe("iou_predictions", iou_pred, f"B x {k}"))
    if object_scores is not None:
        print(describe("object_score_logits", object_scores, "B x 1"))
    for b in range(masks.shape[0]):
        ious = ", ".join(f"{v:.3f}" for v in iou_pred[b].tolist())
        area = ", ".join(f"{v:.1%}" for v in (masks[b] > 0).float().mean(dim=(-1, -2)).tolist())
        score = "" if object_scores is None else (
            f", object score {object_scores[b, 0].item():+.2f} "
            f"({'> 0: an object is there' if object_scores[b, 0] > 0 else '<= 0: no object; the video path blanks the masks'})")
        print(f"  prompt set {b}: predicted IoU [{ious}], mask area [{area}]{score}")
    return 0
