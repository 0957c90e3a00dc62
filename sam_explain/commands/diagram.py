"""``sam-explain diagram``: draw the decoder's architecture, every arrow labelled with its shape."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagram", help="draw the decoder's architecture with the shapes of a traced run")
    p.add_argument("--out", default="docs/img/architecture.png", help="PNG to write")
    p.add_argument("--points", type=int, default=1, help="clicks per prompt set (N)")
    p.add_argument("--box", action="store_true")
    p.add_argument("--mask", action="store_true")
    p.add_argument("--batch", type=int, default=1, help="prompt sets (B)")
    p.add_argument("--dpi", type=int, default=80)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..figures.architecture import plot_architecture

    fig = plot_architecture(points=args.points, box=args.box, mask=args.mask, batch=args.batch)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    print(out)
    return 0
