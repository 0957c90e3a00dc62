"""``sam-explain trace``: run the decoder on a described prompt and print its shape trace."""

from __future__ import annotations

import argparse
import sys

from .args import (
    CommandError, add_model_options, check_memory, device_arg, load_models, nonnegative_int, positive_int,
    size_in_bytes,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace", help="print the shape of every module call of the decoder on an example prompt",
        description="Run the mask decoder on a described prompt (the trained toy model unless --checkpoint or "
                    "--random; SAM 2.1's decoder with --sam2 or a SAM 2 checkpoint) and print one row per module "
                    "call: module path, class, shapes in symbols and numbers, dtype, device, step. With no "
                    "arguments: one click on the default inputs.",
    )
    add_model_options(p)
    p.add_argument("--points", type=nonnegative_int, default=1, help="clicks per prompt set, N (default 1; 0 for none)")
    p.add_argument("--box", action="store_true", help="add a box to each prompt set")
    p.add_argument("--mask", action="store_true", help="add a mask prompt to each prompt set")
    p.add_argument("--batch", type=positive_int, default=1, help="prompt sets, B (default 1)")
    p.add_argument("--single-mask", action="store_true", help="multimask_output=False")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--format", default="text", choices=["text", "markdown", "json", "html"])
    p.add_argument("--path", help="only rows at or under this module path (or a glob, e.g. '*.hook_probs')")
    p.add_argument("--depth", type=nonnegative_int, help="only rows at most this deep (the decoder is 0)")
    p.add_argument("--hooks-only", action="store_true", help="only hook points")
    p.add_argument("--collapse", action="store_true", help="fold repeated blocks (layers 1.. like layer 0)")
    p.add_argument("--prompt-encoder", action="store_true",
                   help="trace the prompt encoder too (paths prompt_encoder.* and mask_decoder.*)")
    p.add_argument("--width", type=positive_int, help="text format: clip every cell to this many characters")
    p.add_argument("--max-memory", type=size_in_bytes, help="refuse a run estimated above this (default: half "
                                                            "of the available memory), e.g. 4G")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tracing import trace_prompt
    from ..tracing.prompt import DTYPES
    from ..utils.memory import decoder_bytes

    if args.points == 0 and not args.box and not args.mask:
        raise CommandError("give the decoder a prompt: --points N >= 1, --box or --mask")
    models = load_models(args, seed=args.seed)
    if args.path is not None:
        check_path(args.path, models, args.prompt_encoder)
    h, w = models.prompt_encoder.image_embedding_size
    check_memory(decoder_bytes(args.batch, models.decoder.transformer_dim, h, w), args.max_memory,
                 f"the decoder on B = {args.batch} prompt sets")
    dtype = DTYPES[args.dtype]
    trace = trace_prompt(
        points=args.points, box=args.box, mask=args.mask, batch=args.batch,
        multimask_output=not args.single_mask,
        decoder=models.decoder.to(device=args.device, dtype=dtype),
        prompt_encoder=models.prompt_encoder.to(device=args.device, dtype=dtype),
        image_embeddings=models.image_embeddings, high_res_features=models.high_res_features,
        include_prompt_encoder=args.prompt_encoder, seed=args.seed,
    )
    trace.title += f"; {models.label}"
    if args.collapse:  # before filtering, so that a block folds as a whole
        trace = trace.collapse()
    if args.path is not None or args.depth is not None or args.hooks_only:
        full = trace
        trace = trace.filter(args.path, max_depth=args.depth, kind="hook" if args.hooks_only else None)
        if not len(trace):
            paths = sorted({r.path.split(".")[0] for r in full if r.path})
            raise CommandError(f"no row matches --path {args.path!r}"
                               + (f" --depth {args.depth}" if args.depth is not None else "")
                               + (" --hooks-only" if args.hooks_only else "")
                               + f"; the top-level paths are {paths}")
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


def check_path(path: str, models, with_prompt_encoder: bool) -> None:
    """Refuse, before running anything, a --path that names no module of what will be traced."""
    import fnmatch

    if with_prompt_encoder:
        named = [f"prompt_encoder.{n}".rstrip(".") for n, _ in models.prompt_encoder.named_modules()]
        named += [f"mask_decoder.{n}".rstrip(".") for n, _ in models.decoder.named_modules()]
    else:
        named = [n for n, _ in models.decoder.named_modules()]
    glob = any(ch in path for ch in "*?[")
    if not any(fnmatch.fnmatchcase(n, path) if glob else (n == path or n.startswith(path + ".")) for n in named):
        tops = sorted({n.split(".")[0] for n in named if n})
        raise CommandError(f"no row matches --path {path!r}: no module has that path; the top-level paths are {tops}")
