"""``sam-explain`` / ``python -m sam_explain``: one subcommand per module in
``sam_explain.commands``; each module defines ``register(subparsers)`` which adds
its parser and sets ``func`` (a callable taking the parsed args, returning an exit code).

A user's mistake (a bad argument, a file that cannot be read, a shape that does not fit) ends with
one line on stderr, ``sam-explain COMMAND: what was expected and what was given``, and exit status 1
(2 for an argument argparse refuses),
never a traceback; ``SAM_EXPLAIN_DEBUG=1`` shows the traceback. An error that is not the user's
(a bug) says so in one line too, with the traceback under SAM_EXPLAIN_DEBUG=1."""

from __future__ import annotations

import argparse
import importlib
import os
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
    "sam_explain.commands.export_onnx",
]


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line: ``sam-explain COMMAND: error: ...``, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sam-explain", description="Look inside SAM's mask decoder while it runs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
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
    except BrokenPipeError:  # the reader went away (``sam-explain trace | head``): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not complain
        return 1
    except (ValueError, TypeError, OSError, MemoryError) as err:  # ShapeError, CheckpointError, CommandError
        if os.environ.get("SAM_EXPLAIN_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__  # one line
        raise SystemExit(f"sam-explain {args.command}: {message}") from err
    except KeyboardInterrupt:
        raise SystemExit(f"sam-explain {args.command}: interrupted") from None
    except Exception as err:  # not the user's mistake: say so, in one line
        if os.environ.get("SAM_EXPLAIN_DEBUG"):
            raise
        raise SystemExit(f"sam-explain {args.command}: internal error, {type(err).__name__}: "
                         f"{' '.join(str(err).split())[:300]} (a bug: SAM_EXPLAIN_DEBUG=1 shows the traceback)") from err
