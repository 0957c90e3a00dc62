"""Shape traces through forward hooks.

``with trace_shapes(model) as trace: model(...)`` registers a forward pre-hook and a
forward hook on every module of ``model`` (the hook points included), records one
:class:`TraceRow` per module call in execution order, and removes every hook on exit,
also when the forward raises. The hooks only read: they record shapes, dtypes and
devices (no tensor is kept unless ``keep_tensors=True``) and never return a value,
so the model's outputs are bitwise the same with and without tracing.

Rows of a ``MaskDecoder`` or a ``PromptEncoder`` (ours or the official one; found by
class name, anywhere inside ``model``) are labelled with the documented-shape contract
of :mod:`sam_explain.shape_contract`: ``B x h x T x d = 3 x 8 x 7 x 32``; a row whose
shape disagrees with the contract is flagged (``row.contract == "mismatch"``).
"""

from __future__ import annotations

import fnmatch
import inspect
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import shape_contract as contract

# --- what a row records -----------------------------------------------------------------


class TensorInfo:
    """What the tracer keeps of a tensor: shape, dtype, device; no data, no reference."""

    __slots__ = ("shape", "dtype", "device")

    def __init__(self, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.shape, self.dtype, self.device = shape, dtype, device

    def _key(self) -> Tuple[Any, ...]:
        return (self.shape, self.dtype, self.device)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorInfo) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"TensorInfo(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class Value:
    """A non-tensor argument or output: its repr, and the value itself if it is a plain scalar."""

    __slots__ = ("text", "raw")

    def __init__(self, text: str, raw: Any = None) -> None:
        self.text, self.raw = text, raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Value) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Value({self.text})"


Summary = Union[None, TensorInfo, Value, Tuple["Summary", ...]]
_SCALARS = (bool, int, float, str)


def summarize(x: Any) -> Summary:
    """Tensor -> TensorInfo, tuple/list -> tuple of summaries, None -> None, else Value."""
    if isinstance(x, torch.Tensor):
        return TensorInfo(tuple(x.shape), x.dtype, x.device)
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple([summarize(v) for v in x])
    if isinstance(x, _SCALARS):
        return Value(repr(x), x)
    return Value(type(x).__name__)


def plain(s: Summary) -> Any:
    """A summary as the contract's config readers take it: shapes as tuples of ints."""
    if isinstance(s, TensorInfo):
        return s.shape
    if isinstance(s, Value):
        return s.raw
    if isinstance(s, tuple):
        return tuple(plain(v) for v in s)
    return None


_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


@dataclass(frozen=True)
class ModuleInfo:
    """Static facts about one traced module, computed when the hooks are registered."""

    path: str  # module path from the traced model ("" for the model itself)
    cls: str  # class name
    depth: int  # called modules from the model to this one (the model is 0)
    kind: str  # "hook" for a HookPoint, else "module"
    signature: Optional[inspect.Signature]
    extra: str  # extra_repr(), the fallback description
    component: Optional[str]  # "decoder" / "prompt_encoder" when inside one
    component_path: Optional[str]  # the path of that MaskDecoder / PromptEncoder
    rel_path: Optional[str]  # the path relative to it: the contract's key
    static_values: Tuple[Tuple[str, int], ...]  # symbols known from the component's attributes


class Check(NamedTuple):
    """A value checked against its contract spec."""

    symbols: Optional[Tuple[str, ...]]  # per axis, for a tensor
    expected: Optional[Tuple[Optional[int], ...]]
    ok: bool


class TraceRow:
    """One module call: what went in, what came out, and what the contract says about it."""

    __slots__ = ("index", "call", "info", "parent", "args", "kwargs", "output", "status",
                 "tensor", "trace", "collapsed", "_cache")

    def __init__(self, index: int, call: int, info: ModuleInfo, parent: Optional[int],
                 args: Summary, kwargs: Dict[str, Summary], trace: "ShapeTrace") -> None:
        self.index = index  # position in execution order
        self.call = call  # which top-level forward of the traced model (0, 1, ...)
        self.info = info
        self.parent = parent  # index of the enclosing call's row, or None
        self.args = args
        self.kwargs = kwargs
        self.output: Summary = None
        self.status = "running"  # "ok" or "raised" once the module returns
        self.tensor: Any = None  # the output itself, with keep_tensors=True
        self.trace = trace
        self.collapsed: Optional[Tuple[str, int, int]] = None  # (same_as path, repeats, rows each)
        self._cache: Optional[Tuple[Any, ...]] = None

    # -- plain facts
    @property
    def path(self) -> str:
        return self.info.path

    @property
    def module_class(self) -> str:
        return self.info.cls

    @property
    def depth(self) -> int:
        return self.info.depth

    @property
    def kind(self) -> str:
        return "collapsed" if self.collapsed else self.info.kind

    @property
    def inputs(self) -> Dict[str, Summary]:
        """The inputs by forward-parameter name (``arg0``, ... where the signature is unknown)."""
        sig = self.info.signature
        if sig is not None:
            try:
                bound = sig.bind(*(self.args or ()), **self.kwargs)
                return dict(bound.arguments)
            except TypeError:
                pass
        named = {f"arg{i}": v for i, v in enumerate(self.args or ())}
        named.update(self.kwargs)
        return named

    @property
    def output_shape(self) -> Optional[Tuple[int, ...]]:
        """The shape of the output if it is one tensor, else None."""
        return self.output.shape if isinstance(self.output, TensorInfo) else None

    # -- the contract
    @property
    def entry(self) -> Optional[contract.Entry]:
        if self.info.component is None:
            return None
        return contract.lookup(self.info.component, self.info.rel_path)

    def _checks(self) -> Tuple[Optional[Dict[str, Check]], Optional[Check], Dict[str, int]]:
        if self._cache is None:
            entry = self.entry
            values = self.trace.symbol_values(self)
            if entry is None:
                self._cache = (None, None, values)
            else:
                ins = contract.hook_inputs(entry)
                inputs = self.inputs
                in_checks = {
                    name: check(inputs[name], spec, values, entry.bind, optional=True)
                    for name, spec in ins.items() if name in inputs
                }
                out_check = check(self.output, entry.out, values, entry.bind, optional=False)
                self._cache = (in_checks, out_check, values)
        return self._cache

    @property
    def contract(self) -> Optional[str]:
        """"ok", "mismatch", or None where the contract says nothing about this module."""
        if self.status != "ok":
            return None
        in_checks, out_check, _ = self._checks()
        if out_check is None:
            return None
        ok = out_check.ok and all(c.ok for c in in_checks.values())
        return "ok" if ok else "mismatch"

    @property
    def step(self) -> str:
        """The einops pattern or one-line description of this step."""
        if self.collapsed:
            same_as, repeats, size = self.collapsed
            return f"same shapes as {same_as or '(root)'}: {repeats} repeat(s) of {size} row(s) collapsed"
        entry = self.entry
        if entry is not None:
            return entry.step
        if self.info.kind == "hook":
            return "hook point"
        return self.info.extra

    def __repr__(self) -> str:
        from .render import value_text

        return (f"TraceRow({self.index}: {self.path or '(root)'} {self.module_class}, "
                f"out {value_text(self.output, self.output_check)})")

    @property
    def output_check(self) -> Optional[Check]:
        return self._checks()[1] if self.status == "ok" else None

    @property
    def input_checks(self) -> Dict[str, Check]:
        return (self._checks()[0] or {}) if self.status == "ok" else {}


def check(value: Summary, spec: contract.Spec, values: Mapping[str, int],
          bind: Mapping[str, str], optional: bool) -> Check:
    """Compare a recorded value with a spec; nested tuples recurse into a tuple of Checks."""
    if spec is None:
        return Check(None, None, value is None)
    if value is None:
        return Check(None, None, optional)  # an optional input left out
    if isinstance(spec, tuple):
        if not isinstance(value, tuple) or len(value) != len(spec):
            return Check(None, None, False)
        parts = tuple(check(v, s, values, bind, optional) for v, s in zip(value, spec))
        return Check(parts, None, all(p.ok for p in parts))  # symbols holds the parts
    if not isinstance(value, TensorInfo):
        return Check(None, None, False)
    axes = tuple(spec.split())
    expected = contract.evaluate(spec, values, bind)
    ok = len(axes) == len(value.shape) and all(e is None or e == a for e, a in zip(expected, value.shape))
    return Check(axes, expected, ok)


# --- the trace ---------------------------------------------------------------------------


class ShapeTrace:
    """The rows recorded by :func:`trace_shapes`, in execution order.

    Shows itself as a table: ``print(trace)`` (aligned text), rich HTML in Jupyter,
    ``trace.to_markdown()``, ``trace.to_json()`` (schema in docs/tracing.md).
    ``trace.filter(path=..., max_depth=...)`` and ``trace.collapse()`` return new views.
    """

    def __init__(self, rows: Optional[List[TraceRow]] = None, *, source: Optional["ShapeTrace"] = None,
                 title: str = "") -> None:
        self.rows: List[TraceRow] = [] if rows is None else rows
        self._source = source if source is not None else self
        self.title = title
        self._values: Dict[int, Dict[str, int]] = {}
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

    # -- symbols
    def symbol_values(self, row: TraceRow) -> Dict[str, int]:
        """The symbol values for ``row``: its component's attributes, plus what the
        enclosing MaskDecoder / PromptEncoder call was given (B, N', H, W, ...)."""
        src = self._source
        if src is not self:
            return src.symbol_values(row)
        info = row.info
        if info.component is None:
            return {}
        root = row
        all_rows = self.rows
        while root is not None and root.info.path != info.component_path:
            root = all_rows[root.parent] if root.parent is not None else None
        key = root.index if root is not None else -1
        if key not in self._values:
            values = dict(info.static_values)
            if root is not None:
                reader = contract.CONFIG_READERS[info.component]
                inputs = {name: plain(v) for name, v in root.inputs.items()}
                values = reader(None, inputs, values)
            self._values[key] = values
        return self._values[key]

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
        return ShapeTrace([r for r in self.rows if keep(r)], source=self._source,
                          title=_join(self.title, f"filter({desc})"))

    def collapse(self) -> "ShapeTrace":
        """Fold repeated blocks: a layer (``...layers.1``, ``...mlps.2``) whose calls have
        the same classes and shapes as the layer before it becomes one summary row."""
        return ShapeTrace(_collapse(self.rows), source=self._source, title=_join(self.title, "collapsed"))

    # -- rendering (see render.py)
    def to_text(self, max_width: Optional[int] = None) -> str:
        from .render import to_text

        return to_text(self, max_width=max_width)

    def to_markdown(self) -> str:
        from .render import to_markdown

        return to_markdown(self)

    def to_html(self) -> str:
        from .render import to_html

        return to_html(self)

    def to_dict(self) -> Dict[str, Any]:
        from .render import to_dict

        return to_dict(self)

    def to_json(self, indent: Optional[int] = 2) -> str:
        import json

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
                               first.parent, first.args, first.kwargs, first.trace)
            summary.output, summary.status = first.output, first.status
            summary.collapsed = (head.path, repeats, j - i)
            out.append(summary)
        i = k
    return out


def _renamed(info: ModuleInfo, path: str) -> ModuleInfo:
    from dataclasses import replace

    return replace(info, path=path)


# --- the tracer --------------------------------------------------------------------------


def _component_of(path: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> Tuple[Optional[str], Optional[str]]:
    """(component kind, component path) of the nearest MaskDecoder / PromptEncoder at or above ``path``."""
    parts = path.split(".") if path else []
    for n in range(len(parts), -1, -1):
        p = ".".join(parts[:n])
        kind = contract.COMPONENT_CLASSES.get(type(modules[p]).__name__) if p in modules else None
        if kind:
            return kind, p
    return None, None


_SIGNATURES: Dict[type, Optional[inspect.Signature]] = {}


def _signature_of(module: nn.Module) -> Optional[inspect.Signature]:
    cls = type(module)
    if cls not in _SIGNATURES:
        try:
            _SIGNATURES[cls] = inspect.signature(module.forward)
        except (TypeError, ValueError):
            _SIGNATURES[cls] = None
    return _SIGNATURES[cls]


def _module_infos(model: nn.Module, prefix: str) -> List[Tuple[nn.Module, ModuleInfo]]:
    named = dict(model.named_modules(prefix=prefix))
    statics: Dict[str, Tuple[Tuple[str, int], ...]] = {}  # per component path
    out = []
    for path, module in named.items():
        if isinstance(module, _CONTAINERS):
            continue
        parts = path.split(".") if path else []
        root_parts = prefix.split(".") if prefix else []
        depth = sum(
            1 for n in range(len(root_parts) + 1, len(parts) + 1)
            if not isinstance(named.get(".".join(parts[:n])), _CONTAINERS)
        )
        component, component_path = _component_of(path, module, named)
        rel = None
        static: Tuple[Tuple[str, int], ...] = ()
        if component is not None:
            rel = path[len(component_path):].lstrip(".") if component_path else path
            if component_path not in statics:
                reader = contract.CONFIG_READERS[component]
                statics[component_path] = tuple(reader(named[component_path], {}).items())
            static = statics[component_path]
        is_hook = type(module).__name__ == "HookPoint"
        try:
            extra = module.extra_repr()
        except Exception:  # an extra_repr that fails must not stop tracing
            extra = ""
        out.append((module, ModuleInfo(
            path=path, cls=type(module).__name__, depth=depth, kind="hook" if is_hook else "module",
            signature=_signature_of(module), extra=extra, component=component,
            component_path=component_path, rel_path=rel, static_values=static,
        )))
    return out


_INFO_CACHE: "weakref.WeakKeyDictionary[nn.Module, Dict[str, Tuple[Tuple[Any, ...], List[ModuleInfo]]]]" = \
    weakref.WeakKeyDictionary()


def _hookable(model: nn.Module, prefix: str) -> List[Tuple[nn.Module, ModuleInfo]]:
    """``_module_infos``, remembered per model while its module tree stays the same (no module
    is referenced by the cache, so it keeps nothing alive)."""
    named = list(model.named_modules(prefix=prefix))
    key = tuple((n, id(m)) for n, m in named)
    per_model = _INFO_CACHE.setdefault(model, {})
    hit = per_model.get(prefix)
    if hit is None or hit[0] != key:
        pairs = _module_infos(model, prefix)
        per_model[prefix] = (key, [info for _, info in pairs])
        return pairs
    by_path = {n: m for n, m in named}
    return [(by_path[info.path], info) for info in hit[1]]


class trace_shapes:
    """Record the shapes of every module call of ``model`` while the ``with`` block runs.

    ``model`` is an ``nn.Module`` or a mapping ``{name: module}`` (paths then start with
    the name). ``keep_tensors=True`` also keeps each call's output (``row.tensor``),
    which holds on to memory; by default only shapes, dtypes and devices are kept.

        with trace_shapes(decoder) as trace:
            decoder(image_embeddings, image_pe, sparse, dense, multimask_output=True)
        trace                                  # the table (HTML in Jupyter)
        trace.filter("transformer.layers.0")   # one block
        print(trace.collapse().to_markdown())

    Hooks are registered on entry and removed on exit, also when the forward raises
    (the rows then end with the call that raised, ``status == "raised"``).
    Tracers may be nested or reused; each one records on its own.
    """

    def __init__(self, model: Union[nn.Module, Mapping[str, nn.Module]], *, keep_tensors: bool = False) -> None:
        if isinstance(model, nn.Module):
            self._models: List[Tuple[str, nn.Module]] = [("", model)]
        elif isinstance(model, Mapping) and all(isinstance(m, nn.Module) for m in model.values()):
            self._models = list(model.items())
        else:
            raise TypeError(f"trace_shapes: model must be an nn.Module or a mapping of names to modules, "
                            f"got {type(model).__name__}")
        self.keep_tensors = keep_tensors
        self.trace = ShapeTrace()
        self._handles: List[Any] = []
        self._stack: List[int] = []
        self._calls = 0

    def __enter__(self) -> ShapeTrace:
        if self._handles:
            raise RuntimeError("trace_shapes: this tracer is already active; make a new one to nest")
        try:
            for prefix, model in self._models:
                for module, info in _hookable(model, prefix):
                    self._handles.append(module.register_forward_pre_hook(
                        self._make_pre(info), with_kwargs=True))
                    self._handles.append(module.register_forward_hook(
                        self._make_post(info), with_kwargs=True, always_call=True))
        except BaseException:
            self._remove()
            raise
        return self.trace

    def __exit__(self, *exc: Any) -> None:
        self._remove()
        for i in self._stack:  # calls that never returned
            self.trace.rows[i].status = "raised"
        self._stack.clear()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make_pre(self, info: ModuleInfo):
        rows, stack, trace = self.trace.rows, self._stack, self.trace
        is_hook = info.kind == "hook"

        def pre_hook(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
            if stack:
                parent: Optional[int] = stack[-1]
            else:
                parent = None
                self._calls += 1
            kw = {k: summarize(v) for k, v in kwargs.items()} if kwargs else {}
            # a hook point's input is its output: recorded once, in the post-hook
            row = TraceRow(len(rows), self._calls - 1, info, parent, None if is_hook else summarize(args), kw, trace)
            stack.append(row.index)
            rows.append(row)

        return pre_hook

    def _make_post(self, info: ModuleInfo):
        rows, stack, keep = self.trace.rows, self._stack, self.keep_tensors

        def post_hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            while stack:
                row = rows[stack.pop()]
                if row.info is info:
                    break
                row.status = "raised"  # a call below this one never returned
            else:
                return
            if output is None and sys.exc_info()[0] is not None:
                row.status = "raised"
                return
            row.output = summarize(output)
            if row.args is None:  # a hook point
                row.args = (row.output,)
            row.status = "ok"
            if keep:
                row.tensor = output

        return post_hook
