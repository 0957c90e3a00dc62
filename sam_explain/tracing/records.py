"""What a shape trace records: one ``TraceRow`` per module call, the summaries of its inputs and
outputs (``TensorInfo``, ``Value``, ``DictInfo``), and their check against the shape contract.

Rows of a ``MaskDecoder`` or a ``PromptEncoder`` (ours or the official one; found by class name,
anywhere inside the traced model) are labelled with the documented-shape contract of
:mod:`sam_explain.shapes.contract`: ``B x h x T x d = 3 x 8 x 7 x 32``; a row whose shape
disagrees with the contract is flagged (``row.contract == "mismatch"``). A SAM 2 decoder (same
class name, told apart by ``registry.component_kind``) gets SAM 2's contract
(:mod:`sam_explain.shapes.contract_sam2`).

The rest of the package: ``tracer`` (``trace_shapes``, the hooks that fill the rows), ``views``
(``ShapeTrace``: the rows, filtered and collapsed), ``render`` (tables), ``prompt`` (``trace_prompt``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from ..shapes import contract, registry

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


class DictInfo:
    """A dict argument or output (Sam's ``batched_input`` records): its keys and their summaries."""

    __slots__ = ("items",)

    def __init__(self, items: Tuple[Tuple[str, Any], ...]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DictInfo) and self.items == other.items

    def __hash__(self) -> int:
        return hash(self.items)

    def __repr__(self) -> str:
        return f"DictInfo({dict(self.items)})"


Summary = Union[None, TensorInfo, Value, DictInfo, Tuple["Summary", ...]]
_SCALARS = (bool, int, float, str)


def summarize(x: Any) -> Summary:
    """Tensor -> TensorInfo, tuple/list -> tuple of summaries, dict -> DictInfo, None -> None,
    else Value."""
    if isinstance(x, torch.Tensor):
        return TensorInfo(tuple(x.shape), x.dtype, x.device)
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple([summarize(v) for v in x])
    if isinstance(x, dict):
        return DictInfo(tuple((str(k), summarize(v)) for k, v in x.items()))
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
    component: Optional[str]  # "decoder" / "prompt_encoder" / "sam2_decoder" when inside one
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
                 "tensor", "root", "collapsed", "_cache", "_values")

    def __init__(self, index: int, call: int, info: ModuleInfo, parent: Optional[int],
                 args: Summary, kwargs: Dict[str, Summary], root: Optional["TraceRow"]) -> None:
        self.index = index  # position in execution order
        self.call = call  # which top-level forward of the traced model (0, 1, ...)
        self.info = info
        self.parent = parent  # index of the enclosing call's row, or None
        self.args = args
        self.kwargs = kwargs
        self.output: Summary = None
        self.status = "running"  # "ok" or "raised" once the module returns
        self.tensor: Any = None  # the output itself, with keep_tensors=True
        self.root = root  # the row of the enclosing MaskDecoder / PromptEncoder call, if any
        self.collapsed: Optional[Tuple[str, int, int]] = None  # (same_as path, repeats, rows each)
        self._cache: Optional[Tuple[Any, ...]] = None
        self._values: Optional[Dict[str, int]] = None

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
    def symbol_values(self) -> Dict[str, int]:
        """The symbols' values for this row: its component's attributes (C, h, M, ...) plus
        what the enclosing MaskDecoder / PromptEncoder call was given (B, N', H, W, K, ...)."""
        info = self.info
        if info.component is None:
            return {}
        root = self if info.rel_path == "" else self.root
        holder = root if root is not None else self
        if holder._values is None:
            values = dict(info.static_values)
            if root is not None:
                reader = registry.CONFIG_READERS[info.component]
                inputs = {name: plain(v) for name, v in root.inputs.items()}
                values = reader(None, inputs, values)
            holder._values = values
        return holder._values

    @property
    def entry(self) -> Optional[contract.Entry]:
        if self.info.component is None:
            return None
        return registry.lookup(self.info.component, self.info.rel_path)

    def _checks(self) -> Tuple[Optional[Dict[str, Check]], Optional[Check], Dict[str, int]]:
        if self._cache is None:
            entry = self.entry
            values = self.symbol_values()
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


def value_text(value: Summary, chk: Optional[Check] = None) -> str:
    """``B x T x C = 3 x 7 x 256``; numbers only without a contract; a mismatch shows both."""
    if value is None:
        return "None"
    if isinstance(value, Value):
        return value.text
    if isinstance(value, DictInfo):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items) + "}"
    if isinstance(value, tuple):
        parts = chk.symbols if chk is not None and isinstance(chk.symbols, tuple) and len(chk.symbols) == len(value) \
            and all(isinstance(p, Check) for p in chk.symbols) else [None] * len(value)
        return "(" + ", ".join(value_text(v, p) for v, p in zip(value, parts)) + ")"
    nums = " x ".join(str(n) for n in value.shape) if value.shape else "scalar"
    if chk is None or chk.symbols is None:
        return nums
    sym = " x ".join(chk.symbols)
    if chk.ok:
        return f"{sym} = {nums}"
    want = " x ".join("?" if e is None else str(e) for e in (chk.expected or ()))
    return f"{nums} [contract: {sym} = {want}]"
