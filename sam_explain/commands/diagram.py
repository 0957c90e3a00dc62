"""``sam-explain diagram``: draw the decoder's architecture, every arrow labelled with its shape."""

from __future__ import annotations

import argparse

from .args import CommandError, nonnegative_int, positive_int, writable_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagram", help="draw the decoder's architecture with the shapes of a traced run")
    p.add_argument("--out", required=True, help="the PNG to write (docs/img/architecture.png is the README's)")
    p.add_argument("--points", type=nonnegative_int, default=1, help="clicks per prompt set (N)")
    p.add_argument("--box", action="store_true")
    p.add_argument("--mask", action="store_true")
    p.add_argument("--batch", type=positive_int, default=1, help="prompt sets (B)")
    p.add_argument("--dpi", type=positive_int, default=80)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..figures.architecture import plot_architecture

    out = writable_path(args.out)
    if args.points == 0 and not args.box and not args.mask:
        raise CommandError("give the decoder a prompt: --points N >= 1, --box or --mask")
    fig = plot_architecture(points=args.points, box=args.box, mask=args.mask, batch=args.batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    print(out)
    return 0
