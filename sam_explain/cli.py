"""``sam-explain`` / ``python -m sam_explain``: one subcommand per module in
``sam_explain.commands``; each module defines ``register(subparsers)`` which adds
its parser and sets ``func`` (a callable taking the parsed args, returning an exit code)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

COMMAND_MODULES = [
    "sam_explain.commands.demo",
    "sam_explain.commands.trace",
    "sam_explain.commands.shapes_doc",
    "sam_explain.commands.attention",
    "sam_explain.commands.diagram",
    "sam_explain.commands.predict",
    "sam_explain.commands.toy",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam-explain", description="Look inside SAM's mask decoder while it runs."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:  # ShapeError and CheckpointError are ValueErrors
        # a bad argument or file: its message, not a traceback
        raise SystemExit(f"sam-explain {args.command}: {err}") from err
