"""``sam-explain shapes-doc``: write docs/shapes.md from the shape contract (or check it is current)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .args import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shapes-doc", help="generate docs/shapes.md from sam_explain/shapes/contract.py")
    p.add_argument("--output", help="write to this file (default: print)")
    p.add_argument("--check", action="store_true", help="exit 1 if --output differs from what would be written")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..shapes.markdown import REGENERATE, render_shapes_markdown

    if args.check and not args.output:
        raise CommandError("--check compares a file with what would be written: give it with --output PATH")
    text = render_shapes_markdown()
    if not args.output:
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            print(f"{path} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0
