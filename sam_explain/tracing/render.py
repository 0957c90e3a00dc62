"""A trace's rows as a table: aligned text, Markdown, HTML, and JSON (schema version 1,
documented in docs/tracing.md). Each function takes a ``ShapeTrace`` (anything with ``rows``,
``title`` and ``mismatches()``)."""

from __future__ import annotations

import html
from typing import Any, Dict, List, Optional

from .records import Check, DictInfo, Summary, TensorInfo, TraceRow, Value, value_text

SCHEMA = "sam-explain/shape-trace"
SCHEMA_VERSION = 1

COLUMNS = ("#", "module path", "class", "in", "out", "dtype", "device", "step")


def _dtype(d: Any) -> str:
    return str(d).replace("torch.", "")


def _tensors(value: Summary) -> List[TensorInfo]:
    if isinstance(value, TensorInfo):
        return [value]
    if isinstance(value, tuple):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, DictInfo):
        return [t for _, v in value.items for t in _tensors(v)]
    return []


def _dtypes_devices(row: TraceRow) -> tuple:
    ts = _tensors(row.output) or [t for v in row.inputs.values() for t in _tensors(v)]
    dtypes = list(dict.fromkeys(_dtype(t.dtype) for t in ts))
    devices = list(dict.fromkeys(str(t.device) for t in ts))
    return ", ".join(dtypes), ", ".join(devices)


def row_cells(row: TraceRow) -> Dict[str, str]:
    """The table cells of one row, as text."""
    if row.info.kind == "hook":
        ins = ""  # a hook point passes its input through
    else:
        checks = row.input_checks
        named = row.inputs
        parts = [(name, value_text(v, checks.get(name))) for name, v in named.items()]
        ins = parts[0][1] if len(parts) == 1 else "; ".join(f"{n}: {t}" for n, t in parts)
    if row.status == "ok":
        out = value_text(row.output, row.output_check)
    else:
        out = f"({row.status})"
    dtype, device = _dtypes_devices(row)
    return {
        "#": str(row.index), "module path": row.path or "(root)", "class": row.module_class,
        "in": ins, "out": out, "dtype": dtype, "device": device, "step": row.step,
        "flag": "!" if row.contract == "mismatch" else "",
    }


def _header(trace) -> str:
    mism = len(trace.mismatches())
    labelled = sum(1 for r in trace.rows if r.contract is not None)
    calls = len({r.call for r in trace.rows})
    text = (f"shape trace: {len(trace.rows)} rows, {calls} call(s); {labelled} checked against "
            f"the shape contract, {mism} mismatch(es)")
    return text + (f" [{trace.title}]" if trace.title else "")


def _clip(s: str, width: Optional[int]) -> str:
    if width is None or len(s) <= width:
        return s
    return s[: max(width - 1, 1)] + "…"


def to_text(trace, max_width: Optional[int] = None) -> str:
    """Aligned columns for a terminal, a module's inputs one per line; ``max_width`` clips each cell."""
    table = []  # rows of cells, each cell a list of lines
    top = min((r.depth for r in trace.rows), default=0)
    for r in trace.rows:
        c = row_cells(r)
        c["module path"] = "  " * (r.depth - top) + c["module path"]
        c["#"] = c["flag"] + c["#"]
        cells = [c[k].split("; ") if k == "in" else [c[k]] for k in COLUMNS]
        table.append([[_clip(line, max_width) for line in cell] for cell in cells])
    widths = [max([len(h)] + [len(line) for row in table for line in row[i]]) for i, h in enumerate(COLUMNS)]
    lines = [_header(trace)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    for row in table:
        for k in range(max(len(cell) for cell in row)):
            parts = [(cell[k] if k < len(cell) else "").ljust(w) for cell, w in zip(row, widths)]
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _md(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(trace) -> str:
    """A Markdown (GitHub pipe) table."""
    lines = [f"*{_header(trace)}*", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in trace.rows:
        c = row_cells(r)
        cells = [
            c["flag"] + c["#"], f"`{c['module path']}`", c["class"], "<br>".join(_md(p) for p in c["in"].split("; ")),
            _md(c["out"]),
            c["dtype"], c["device"], _md(c["step"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_CSS = (
    "<style>"
    ".sam-trace{border-collapse:collapse;font-size:12px}"
    ".sam-trace td,.sam-trace th{padding:2px 8px;text-align:left;vertical-align:top;border-bottom:1px solid #ddd}"
    ".sam-trace td.shape{font-family:monospace;white-space:nowrap}"
    ".sam-trace tr.hook td{color:#2a5d9f}"
    ".sam-trace tr.collapsed td{font-style:italic;color:#777}"
    ".sam-trace tr.mismatch td{background:#fdd}"
    "</style>"
)


def to_html(trace) -> str:
    """A self-contained HTML table (what Jupyter shows)."""
    out = [_CSS, '<table class="sam-trace">', f"<caption>{html.escape(_header(trace))}</caption>", "<tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in COLUMNS] + ["</tr>"]
    top = min((r.depth for r in trace.rows), default=0)
    for r in trace.rows:
        c = row_cells(r)
        cls = " ".join(x for x in (r.info.kind if not r.collapsed else "collapsed",
                                   "mismatch" if c["flag"] else "") if x)
        ins = "<br>".join(html.escape(p) for p in c["in"].split("; ")) if c["in"] else ""
        out.append(
            f'<tr class="{cls}"><td>{html.escape(c["flag"] + c["#"])}</td>'
            f'<td class="shape" style="padding-left:{0.5 + 1.2 * (r.depth - top):.1f}em">{html.escape(c["module path"])}</td>'
            f'<td>{html.escape(c["class"])}</td><td class="shape">{ins}</td>'
            f'<td class="shape">{html.escape(c["out"])}</td><td>{html.escape(c["dtype"])}</td>'
            f'<td>{html.escape(c["device"])}</td><td>{html.escape(c["step"])}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def value_json(value: Summary, chk: Optional[Check] = None) -> Any:
    """One value in the JSON schema: null, a tensor, a tuple, or a plain value."""
    if value is None:
        return None
    if isinstance(value, Value):
        return {"type": "value", "repr": value.text}
    if isinstance(value, DictInfo):
        return {"type": "dict", "items": {k: value_json(v) for k, v in value.items}}
    if isinstance(value, tuple):
        parts = chk.symbols if chk is not None and isinstance(chk.symbols, tuple) and len(chk.symbols) == len(value) \
            and all(isinstance(p, Check) for p in chk.symbols) else [None] * len(value)
        return {"type": "tuple", "items": [value_json(v, p) for v, p in zip(value, parts)]}
    has = chk is not None and chk.symbols is not None
    return {
        "type": "tensor", "shape": list(value.shape), "dtype": _dtype(value.dtype), "device": str(value.device),
        "symbols": list(chk.symbols) if has else None,
        "expected": [e for e in chk.expected] if has and chk.expected is not None else None,
    }


def to_dict(trace) -> Dict[str, Any]:
    """The trace as plain data; see docs/tracing.md for the schema."""
    rows = []
    for r in trace.rows:
        checks = r.input_checks
        out_chk = r.output_check
        rows.append({
            "index": r.index, "call": r.call, "path": r.path, "class": r.module_class, "depth": r.depth,
            "kind": r.kind, "parent": r.parent, "status": r.status,
            "inputs": [{"name": n, "value": value_json(v, checks.get(n))} for n, v in r.inputs.items()],
            "output": value_json(r.output, out_chk) if r.status == "ok" else None,
            "step": r.step, "contract": r.contract,
            "collapsed": None if not r.collapsed else {
                "same_as": r.collapsed[0], "repeats": r.collapsed[1], "rows_each": r.collapsed[2]},
        })
    return {"schema": SCHEMA, "version": SCHEMA_VERSION, "title": trace.title, "rows": rows}
