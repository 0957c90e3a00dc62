"""``sam-explain trace``: run the decoder on a described prompt and print its shape trace."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace", help="print the shape of every module call of the decoder on an example prompt",
        description="Run the mask decoder on a described prompt (random weights unless --checkpoint) and "
                    "print one row per module call: module path, class, shapes in symbols and numbers, "
                    "dtype, device, step. With no arguments: one click on the default inputs.",
    )
    p.add_argument("--points", type=int, default=1, help="clicks per prompt set, N (default 1; 0 for none)")
    p.add_argument("--box", action="store_true", help="add a box to each prompt set")
    p.add_argument("--mask", action="store_true", help="add a mask prompt to each prompt set")
    p.add_argument("--batch", type=int, default=1, help="prompt sets, B (default 1)")
    p.add_argument("--single-mask", action="store_true", help="multimask_output=False")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--format", default="text", choices=["text", "markdown", "json", "html"])
    p.add_argument("--path", help="only rows at or under this module path (or a glob, e.g. '*.hook_probs')")
    p.add_argument("--depth", type=int, help="only rows at most this deep (the decoder is 0)")
    p.add_argument("--hooks-only", action="store_true", help="only hook points")
    p.add_argument("--collapse", action="store_true", help="fold repeated blocks (layers 1.. like layer 0)")
    p.add_argument("--prompt-encoder", action="store_true",
                   help="trace the prompt encoder too (paths prompt_encoder.* and mask_decoder.*)")
    p.add_argument("--width", type=int, help="text format: clip every cell to this many characters")
    p.add_argument("--checkpoint", help="an official SAM, decoder-only or Hugging Face checkpoint (default: random weights)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..tracing import trace_prompt
    from ..tracing.prompt import DTYPES

    if args.points < 0 or args.batch < 1:
        print(f"sam-explain trace: need --points N >= 0 and --batch B >= 1, got N = {args.points}, "
              f"B = {args.batch}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"sam-explain trace: --device {args.device} asked for, but CUDA is not available here",
              file=sys.stderr)
        return 2
    decoder = prompt_encoder = None
    dtype = DTYPES[args.dtype]
    if args.checkpoint:
        from ..checkpoint import load_sam_checkpoint

        parts = load_sam_checkpoint(args.checkpoint)
        prompt_encoder = parts.prompt_encoder.to(device=args.device, dtype=dtype)
        decoder = parts.mask_decoder.to(device=args.device, dtype=dtype)
    trace = trace_prompt(
        points=args.points, box=args.box, mask=args.mask, batch=args.batch,
        multimask_output=not args.single_mask, decoder=decoder, prompt_encoder=prompt_encoder,
        device=args.device, dtype=dtype, include_prompt_encoder=args.prompt_encoder, seed=args.seed,
    )
    if args.collapse:  # before filtering, so that a block folds as a whole
        trace = trace.collapse()
    if args.path is not None or args.depth is not None or args.hooks_only:
        trace = trace.filter(args.path, max_depth=args.depth, kind="hook" if args.hooks_only else None)
    if args.format == "text":
        out = trace.to_text(max_width=args.width)
    elif args.format == "markdown":
        out = trace.to_markdown()
    elif args.format == "json":
        out = trace.to_json()
    else:
        out = trace.to_html()
    sys.stdout.write(out.rstrip("\n") + "\n")
    return 1 if trace.mismatches() else 0
