"""``ShapeTrace``: the rows of a shape trace in execution order, with views (filter, collapse) and
the tables of ``render``."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import replace
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import render
from .records import ModuleInfo, TraceRow

class ShapeTrace:
    """The rows recorded by :func:`trace_shapes`, in execution order.

    Shows itself as a table: ``print(trace)`` (aligned text), rich HTML in Jupyter,
    ``trace.to_markdown()``, ``trace.to_json()`` (schema in docs/tracing.md).
    ``trace.filter(path=..., max_depth=...)`` and ``trace.collapse()`` return new views.
    """

    def __init__(self, rows: Optional[List[TraceRow]] = None, *, title: str = "") -> None:
        self.rows: List[TraceRow] = [] if rows is None else rows
        self.title = title
        self.result: Any = None  # what the traced call returned, where the caller kept it

    # -- sequence protocol
    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[TraceRow]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> TraceRow:
        return self.rows[i]

    def find(self, path: str) -> List[TraceRow]:
        """Every row of the module at ``path`` (one per call)."""
        return [r for r in self.rows if r.path == path]

    def mismatches(self) -> List[TraceRow]:
        """Rows whose shapes disagree with the documented-shape contract."""
        return [r for r in self.rows if r.contract == "mismatch"]

    # -- views
    def filter(self, path: Optional[str] = None, *, max_depth: Optional[int] = None,
               min_depth: Optional[int] = None, kind: Optional[str] = None,
               call: Optional[int] = None) -> "ShapeTrace":
        """Rows of the modules at or under ``path`` (a module path such as
        ``"transformer.layers.0"``, or a glob such as ``"*.hook_probs"``), with
        ``min_depth <= depth <= max_depth``, of ``kind`` ("hook" or "module"), of
        top-level ``call``. Depth counts called modules from the traced model (0)."""
        def keep(r: TraceRow) -> bool:
            if path is not None:
                if any(ch in path for ch in "*?["):
                    if not fnmatch.fnmatchcase(r.path, path):
                        return False
                elif path and not (r.path == path or r.path.startswith(path + ".")):
                    return False
            if max_depth is not None and r.depth > max_depth:
                return False
            if min_depth is not None and r.depth < min_depth:
                return False
            if kind is not None and r.info.kind != kind:
                return False
            if call is not None and r.call != call:
                return False
            return True

        desc = ", ".join(f"{k}={v!r}" for k, v in (("path", path), ("max_depth", max_depth),
                         ("min_depth", min_depth), ("kind", kind), ("call", call)) if v is not None)
        return ShapeTrace([r for r in self.rows if keep(r)], title=_join(self.title, f"filter({desc})"))

    def collapse(self) -> "ShapeTrace":
        """Fold repeated blocks: a layer (``...layers.1``, ``...mlps.2``) whose calls have
        the same classes and shapes as the layer before it becomes one summary row."""
        return ShapeTrace(_collapse(self.rows), title=_join(self.title, "collapsed"))

    # -- rendering (see render.py)
    def to_text(self, max_width: Optional[int] = None) -> str:
        return render.to_text(self, max_width=max_width)

    def to_markdown(self) -> str:
        return render.to_markdown(self)

    def to_html(self) -> str:
        return render.to_html(self)

    def to_dict(self) -> Dict[str, Any]:
        return render.to_dict(self)

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_markdown_(self) -> str:  # used by front ends without HTML
        return self.to_markdown()


def _join(a: str, b: str) -> str:
    return f"{a}, {b}" if a else b


def _subtree_end(rows: Sequence[TraceRow], i: int) -> int:
    """One past the last row of the call at ``rows[i]`` (its descendants follow it)."""
    head = rows[i]
    prefix = head.path + "." if head.path else ""
    j = i + 1
    while j < len(rows) and rows[j].call == head.call and rows[j].path.startswith(prefix) \
            and rows[j].path != head.path and (prefix or rows[j].depth > head.depth):
        j += 1
    return j


def _signature(rows: Sequence[TraceRow], head_path: str) -> Tuple[Any, ...]:
    n = len(head_path)
    return tuple((r.path[n:], r.module_class, r.args, tuple(sorted(r.kwargs.items())), r.output)
                 for r in rows)


def _collapse(rows: Sequence[TraceRow]) -> List[TraceRow]:
    out: List[TraceRow] = []
    i = 0
    while i < len(rows):
        head = rows[i]
        j = _subtree_end(rows, i)
        out.append(head)
        out.extend(_collapse(rows[i + 1:j]))
        parent, _, last = head.path.rpartition(".")
        if not last.isdigit() or j - i == 1:  # only blocks (a layer with calls inside) fold
            i = j
            continue
        sig = _signature(rows[i:j], head.path)
        repeats, first, k = 0, None, j
        while k < len(rows):
            nxt = rows[k]
            p2, _, l2 = nxt.path.rpartition(".")
            if p2 != parent or not l2.isdigit() or nxt.call != head.call:
                break
            end = _subtree_end(rows, k)
            if _signature(rows[k:end], nxt.path) != sig:
                break
            first = first or nxt
            repeats += 1
            k = end
        if repeats:
            a = first.path.rpartition(".")[2]
            b = rows[k - 1].path[len(parent) + 1 if parent else 0:].split(".")[0]
            name = (f"{parent}." if parent else "") + (a if repeats == 1 else f"{a}-{b}")
            summary = TraceRow(first.index, first.call, _renamed(first.info, name),
                               first.parent, first.args, first.kwargs, first.root)
            summary.output, summary.status = first.output, first.status
            summary.collapsed = (head.path, repeats, j - i)
            out.append(summary)
        i = k
    return out


def _renamed(info: ModuleInfo, path: str) -> ModuleInfo:
    return replace(info, path=path)
