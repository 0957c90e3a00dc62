"""``trace_shapes``: forward hooks on every module of a model that fill a ``ShapeTrace``.

``with trace_shapes(model) as trace: model(...)`` registers a forward pre-hook and a
forward hook on every module of ``model`` (the hook points included), records one
:class:`TraceRow` per module call in execution order, and removes every hook on exit,
also when the forward raises. The hooks only read: they record shapes, dtypes and
devices (no tensor is kept unless ``keep_tensors=True``) and never return a value,
so the model's outputs are bitwise the same with and without tracing.
"""

from __future__ import annotations

import inspect
import sys
import threading
import weakref
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from torch import nn

from ..shapes import registry
from .records import _CONTAINERS, ModuleInfo, TraceRow, summarize
from .views import ShapeTrace

def _component_of(path: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> Tuple[Optional[str], Optional[str]]:
    """(component kind, component path) of the nearest MaskDecoder / PromptEncoder at or above ``path``
    (SAM's, SAM 2's or the official ones: ``registry.component_kind``)."""
    parts = path.split(".") if path else []
    for n in range(len(parts), -1, -1):
        p = ".".join(parts[:n])
        kind = registry.component_kind(modules[p]) if p in modules else None
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
                reader = registry.CONFIG_READERS[component]
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
    Tracers may be nested or reused; each one records on its own, and only the calls made by the
    thread that entered it (another thread running the same model is not mixed in).

    Tracing never changes what it traces. Hook points marked ``on_demand`` (the image encoder's
    n x n attention maps, which it builds only when they are hooked) are left out of the trace,
    so the encoder keeps its fused attention and its outputs stay bitwise the same. With
    ``on_demand=True`` they are traced too, and the encoder then builds its maps: the explicit
    attention, slower (1.7x for vit_b on a CPU), with more memory (a global block's map is
    B x h x 4096 x 4096), and equal to the fused one up to float rounding (about 1e-6).
    """

    def __init__(self, model: Union[nn.Module, Mapping[str, nn.Module]], *, keep_tensors: bool = False,
                 on_demand: bool = False) -> None:
        if isinstance(model, nn.Module):
            self._models: List[Tuple[str, nn.Module]] = [("", model)]
        elif isinstance(model, Mapping) and all(isinstance(m, nn.Module) for m in model.values()):
            self._models = list(model.items())
        else:
            raise TypeError(f"trace_shapes: model must be an nn.Module or a mapping of names to modules, "
                            f"got {type(model).__name__}")
        self.keep_tensors = keep_tensors
        self.on_demand = on_demand
        self.trace = ShapeTrace()
        self._thread: Optional[int] = None
        self._handles: List[Any] = []
        self._stack: List[int] = []
        self._open_roots: Dict[Optional[str], TraceRow] = {}  # component path -> its running call
        self._calls = 0

    def __enter__(self) -> ShapeTrace:
        if self._handles:
            raise RuntimeError("trace_shapes: this tracer is already active; make a new one to nest")
        self._thread = threading.get_ident()
        try:
            for prefix, model in self._models:
                for module, info in _hookable(model, prefix):
                    if getattr(module, "on_demand", False) and not self.on_demand:
                        continue  # hooking it would make the module compute it
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
        self._open_roots.clear()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make_pre(self, info: ModuleInfo):
        rows, stack, open_roots = self.trace.rows, self._stack, self._open_roots
        is_hook = info.kind == "hook"
        is_root = info.rel_path == ""
        component_path = info.component_path

        def pre_hook(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
            if threading.get_ident() != self._thread:
                return  # another thread's call
            if stack:
                parent: Optional[int] = stack[-1]
            else:
                parent = None
                self._calls += 1
            kw = {k: summarize(v) for k, v in kwargs.items()} if kwargs else {}
            # a hook point's input is its output: recorded once, in the post-hook
            root = open_roots.get(component_path) if component_path is not None else None
            row = TraceRow(len(rows), self._calls - 1, info, parent, None if is_hook else summarize(args), kw, root)
            if is_root:
                open_roots[component_path] = row
            stack.append(row.index)
            rows.append(row)

        return pre_hook

    def _make_post(self, info: ModuleInfo):
        rows, stack, keep, open_roots = self.trace.rows, self._stack, self.keep_tensors, self._open_roots
        is_root = info.rel_path == ""

        def post_hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if threading.get_ident() != self._thread:
                return
            while stack:
                row = rows[stack.pop()]
                if row.info is info:
                    break
                row.status = "raised"  # a call below this one never returned
            else:
                return
            if is_root:  # this component's call is over (an outer call of it may resume)
                if row.root is not None:
                    open_roots[info.component_path] = row.root
                else:
                    open_roots.pop(info.component_path, None)
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
