"""Interventions: change one tensor of a run and watch what the masks do (TransformerLens-style).

    with se.intervene(decoder, se.zero("transformer.layers.0.cross_attn_image_to_token")):
        masks, iou = decoder(...)          # this run without layer 0's image-to-token attention

Each intervention names a hook point or a module by its path in the model (the paths of a shape
trace, ``trace.filter(...)``), and says what becomes of its output:

  zero(path)               the output replaced by zeros (an ablation)
  replace(path, value)     by ``value``: a tensor of the same shape (another prompt's, from a cache),
                           or a function of the output
  swap_tokens(i, j)        the decoder's output tokens i and j exchanged (``hook_output_tokens``;
                           0 is the IoU token, 1 + m mask token m)
  drop_tokens(*indices)    sparse prompt tokens removed before the decoder runs (e.g. -1, the
                           padding point that comes last when there is no box)

``intervene(model, *interventions, cache=(paths...))`` applies them for the ``with`` block; with
``cache`` it also keeps the outputs of those paths (``run.cache[path]``), to patch them into another
run. Shape traces and attention records opened inside the block see the changed tensors. Every
hook is removed on exit, also when the forward raises; a path that names nothing is refused (with
the paths that exist) before any hook is registered.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

__all__ = ["Intervention", "drop_tokens", "intervene", "replace", "swap_tokens", "zero"]


@dataclass(frozen=True)
class Intervention:
    """What to do to one module's output (``edit``) or to the model's inputs (``edit_inputs``)."""

    path: str  # module path in the model ("" for the model itself)
    description: str
    edit: Optional[Callable[[Any], Any]] = None  # output -> new output
    edit_inputs: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None  # bound arguments -> new ones


def zero(path: str) -> Intervention:
    """Replace the output of ``path`` (a tensor, or a tuple of tensors) by zeros."""
    def edit(output):
        if isinstance(output, tuple):
            return tuple(torch.zeros_like(t) for t in output)
        return torch.zeros_like(output)
    return Intervention(path, f"zero {path}", edit=edit)


def replace(path: str, value: Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]) -> Intervention:
    """Replace the output of ``path`` by ``value`` (same shape), or by ``value(output)``."""
    def edit(output):
        new = value(output) if callable(value) else value
        if not isinstance(new, torch.Tensor) or new.shape != output.shape:
            got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise ValueError(f"replace({path!r}): the new output must have the shape of the old one, "
                             f"{' x '.join(map(str, output.shape))}, got {got}")
        return new.to(output.dtype)
    return Intervention(path, f"replace {path}", edit=edit)


def swap_tokens(i: int, j: int, path: str = "hook_output_tokens") -> Intervention:
    """Exchange output tokens i and j (B x (1+M) x C at ``hook_output_tokens``: 0 is the IoU token,
    1 + m is mask token m) before the transformer reads them."""
    def edit(tokens):
        order = list(range(tokens.shape[1]))
        order[i], order[j] = order[j], order[i]
        return tokens[:, order]  # B x (1+M) x C, rows i and j exchanged
    return Intervention(path, f"swap tokens {i} and {j}", edit=edit)


def drop_tokens(*indices: int) -> Intervention:
    """Remove these sparse prompt tokens (indices into N', negative from the end) from the decoder's
    ``sparse_prompt_embeddings`` (B x N' x C) before it runs."""
    def edit_inputs(arguments):
        sparse = arguments["sparse_prompt_embeddings"]
        n = sparse.shape[1]
        gone = {k % n for k in indices}
        keep = [k for k in range(n) if k not in gone]
        return {**arguments, "sparse_prompt_embeddings": sparse[:, keep]}  # B x (N' - dropped) x C
    return Intervention("", f"drop sparse tokens {list(indices)}", edit_inputs=edit_inputs)


@dataclass
class Run:
    """What ``intervene`` yields: the interventions in force, and the cached outputs by path."""

    interventions: Sequence[Intervention]
    cache: Dict[str, Any] = field(default_factory=dict)


class intervene:
    """Apply ``interventions`` to ``model`` while the ``with`` block runs (see the module docstring)."""

    def __init__(self, model: nn.Module, *interventions: Intervention, cache: Iterable[str] = ()) -> None:
        for item in interventions:
            if not isinstance(item, Intervention):
                raise TypeError(f"intervene: expected Intervention objects (zero, replace, swap_tokens, drop_tokens), "
                                f"got {type(item).__name__}")
        self.model = model
        self.run = Run(list(interventions))
        self.cache_paths = list(cache)
        self._handles: List[Any] = []

    def __enter__(self) -> Run:
        modules = dict(self.model.named_modules())
        wanted = [i.path for i in self.run.interventions] + self.cache_paths
        missing = [p for p in wanted if p not in modules]
        if missing:
            hooks = sorted(n for n in modules if n.rsplit(".", 1)[-1].startswith("hook_"))
            raise ValueError(f"intervene: no module at {missing}; the hook points are {hooks[:12]}"
                             + (f" and {len(hooks) - 12} more" if len(hooks) > 12 else ""))
        try:
            for item in self.run.interventions:
                module = modules[item.path]
                if item.edit_inputs is not None:
                    self._handles.append(module.register_forward_pre_hook(_input_hook(module, item.edit_inputs),
                                                                          with_kwargs=True))
                if item.edit is not None:
                    self._handles.append(module.register_forward_hook(lambda m, a, out, edit=item.edit: edit(out)))
            for path in self.cache_paths:
                self._handles.append(modules[path].register_forward_hook(
                    lambda m, a, out, path=path: self.run.cache.__setitem__(path, _detached(out))))
        except BaseException:
            self._remove()
            raise
        return self.run

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _detached(output):
    if isinstance(output, tuple):
        return tuple(_detached(t) for t in output)
    return output.detach() if isinstance(output, torch.Tensor) else output


def _input_hook(module: nn.Module, edit: Callable[[Dict[str, Any]], Dict[str, Any]]):
    signature = inspect.signature(module.forward)

    def hook(mod, args, kwargs):
        bound = signature.bind(*args, **kwargs)
        return (), edit(dict(bound.arguments))
    return hook
