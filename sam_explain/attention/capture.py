"""Record the attention probabilities of every Attention module while the decoder runs.

SAM's decoder makes seven attention calls (depth 2), each read from ``Attention.hook_probs``:

  transformer.layers.i.self_attn                    token self-attention   B x h x T x T
  transformer.layers.i.cross_attn_token_to_image    tokens -> image        B x h x T x HW
  transformer.layers.i.cross_attn_image_to_token    image -> tokens        B x h x HW x T
  transformer.final_attn_token_to_image             tokens -> image        B x h x T x HW

(i = 0, 1; h = 8 heads; rows are queries and sum to 1 over the keys.)

Usage::

    with record_attention(decoder) as attn:
        decoder(...)
    attn["transformer.layers.0.cross_attn_token_to_image"]   # B x 8 x T x 4096

The record is filled by forward hooks on the hook points, so it works on any model
built from ``sam_explain.modeling`` or ``sam_explain.sam2`` (keys are module paths relative to the
model given; SAM 2's decoder has one more token, T = 6 + N').
Before anything is stored, the bytes the record would hold are estimated and the
capture is refused (``AttentionMemoryError``) if they exceed ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..modeling import Attention, MaskDecoder
from ..shapes.registry import component_kind
from ..utils.memory import format_size as format_bytes

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB
KINDS = ("token_self", "token_to_image", "image_to_token")
KIND_TITLES = {
    "token_self": "token self-attention",
    "token_to_image": "token-to-image",
    "image_to_token": "image-to-token",
    "other": "attention",
}

LayerSpec = Union[int, str]  # 0, 1, ... or "final"


class AttentionMemoryError(MemoryError):
    """The attention maps asked for would not fit the ``max_bytes`` limit."""


@dataclass(frozen=True)
class AttentionSite:
    """Where one attention map comes from.

    name:  module path, e.g. ``transformer.layers.0.cross_attn_token_to_image``
    layer: the two-way block index (0, 1, ...), ``"final"`` for the last token-to-image
           attention, or None for an Attention outside a TwoWayTransformer
    kind:  ``token_self`` (T x T), ``token_to_image`` (T x HW), ``image_to_token`` (HW x T) or ``other``
    num_heads: h
    """

    name: str
    layer: Optional[LayerSpec]
    kind: str
    num_heads: int

    @property
    def title(self) -> str:
        where = "final" if self.layer == "final" else f"layer {self.layer}" if self.layer is not None else self.name
        return f"{where} {KIND_TITLES[self.kind]}"


def describe_site(name: str, module: Attention) -> AttentionSite:
    """Read the layer and kind of an Attention module from its path."""
    parts = name.split(".")
    leaf = parts[-1]
    layer: Optional[LayerSpec] = None
    if "layers" in parts[:-1]:
        i = parts.index("layers")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            layer = int(parts[i + 1])
    kind = {
        "self_attn": "token_self",
        "cross_attn_token_to_image": "token_to_image",
        "cross_attn_image_to_token": "image_to_token",
        "final_attn_token_to_image": "token_to_image",
    }.get(leaf, "other")
    if leaf == "final_attn_token_to_image":
        layer = "final"
    return AttentionSite(name=name, layer=layer, kind=kind, num_heads=module.num_heads)


def attention_sites(model: nn.Module) -> List[AttentionSite]:
    """Every Attention module of ``model``, in registration order (= call order in SAM)."""
    return [describe_site(n, m) for n, m in model.named_modules() if isinstance(m, Attention)]


def select_sites(
    sites: Sequence[AttentionSite],
    layers: Optional[Iterable[LayerSpec]] = None,
    kinds: Optional[Iterable[str]] = None,
) -> List[AttentionSite]:
    """Keep the sites whose layer is in ``layers`` and kind in ``kinds`` (None keeps all)."""
    if not sites:
        raise ValueError(
            "the model has no sam_explain.modeling Attention modules to record (an official "
            "segment_anything model? load its state_dict into sam_explain's MaskDecoder)"
        )
    if isinstance(layers, (int, str)):
        layers = [layers]
    if isinstance(kinds, str):
        kinds = [kinds]
    layer_set = None if layers is None else set(layers)
    kind_set = None if kinds is None else set(kinds)
    if kind_set is not None:
        unknown = kind_set - set(KINDS) - {"other"}
        if unknown:
            raise ValueError(f"kinds must be among {KINDS}, got {sorted(unknown)}")
    chosen = [
        s for s in sites
        if (layer_set is None or s.layer in layer_set) and (kind_set is None or s.kind in kind_set)
    ]
    if not chosen:
        available = sorted({str(s.layer) for s in sites})
        raise ValueError(
            f"no Attention module matches layers={None if layers is None else sorted(map(str, layer_set))}, "
            f"kinds={None if kinds is None else sorted(kind_set)}; the model has layers {available}"
        )
    return chosen


def site_shape(site: AttentionSite, B: int, T: int, HW: int) -> Tuple[int, int]:
    """(N_q, N_k) of a site in SAM's decoder: T x T, T x HW or HW x T."""
    if site.kind == "token_self":
        return T, T
    if site.kind == "token_to_image":
        return T, HW
    if site.kind == "image_to_token":
        return HW, T
    raise ValueError(f"cannot predict the shape of {site.name} (kind 'other')")


def map_bytes(
    module: Attention, B: int, n_q: int, n_k: int, elem: int, average_heads: bool, with_qk: bool
) -> int:
    """Bytes kept for one Attention call: its map B x h x N_q x N_k (h -> 1 if averaged), and with
    ``with_qk`` its queries B x h x N_q x d and keys B x h x N_k x d (h d = internal channels)."""
    size = B * (1 if average_heads else module.num_heads) * n_q * n_k * elem
    if with_qk:
        size += B * (n_q + n_k) * module.internal_dim * elem
    return size


def estimate_attention_bytes(
    decoder: nn.Module,
    B: int,
    T: int,
    HW: int = 64 * 64,
    *,
    average_heads: bool = False,
    layers: Optional[Iterable[LayerSpec]] = None,
    kinds: Optional[Iterable[str]] = None,
    with_qk: bool = False,
    dtype: Optional[torch.dtype] = None,
) -> int:
    """Bytes that ``record_attention`` would keep for B prompt sets of T tokens over HW positions.

    Each map is B x h x N_q x N_k (B x 1 x N_q x N_k with ``average_heads``); with ``with_qk``
    the queries B x h x N_q x d and keys B x h x N_k x d are kept too. For SAM (h = 8, fp32)
    a cross-attention map is B x 8 x T x 4096 x 4 bytes: 0.9 MB for B = 1, T = 7.
    """
    sites = select_sites(attention_sites(decoder), layers, kinds)
    if dtype is None:
        dtype = next(decoder.parameters()).dtype
    elem = torch.empty((), dtype=dtype).element_size()
    modules = dict(decoder.named_modules())
    return sum(
        map_bytes(modules[s.name], B, *site_shape(s, B, T, HW), elem, average_heads, with_qk) for s in sites
    )



class AttentionRecord(Mapping[str, Tensor]):
    """Attention maps keyed by module path, in call order.

    ``record[name]`` is B x h x N_q x N_k (B x 1 x N_q x N_k if heads were averaged).
    Also: ``sites`` (name -> AttentionSite), ``q`` and ``k`` (name -> B x h x n x d, only
    with ``with_qk``), ``grid_size`` (H, W), ``estimated_bytes``, ``nbytes``, and, when filled by
    :func:`capture_attention`, ``token_names`` (one list of T names per prompt set),
    ``prompts``, ``input_image_size``, ``masks`` and ``iou_pred``.
    """

    def __init__(self, sites: Sequence[AttentionSite], average_heads: bool, max_bytes: int) -> None:
        self.sites: Dict[str, AttentionSite] = {s.name: s for s in sites}
        self.probs: Dict[str, Tensor] = {}
        self.q: Dict[str, Tensor] = {}
        self.k: Dict[str, Tensor] = {}
        self.average_heads = average_heads
        self.max_bytes = max_bytes
        self.estimated_bytes: Optional[int] = None
        self.grid_size: Optional[Tuple[int, int]] = None
        self.token_names: Optional[List[List[str]]] = None
        self.prompts: Any = None
        self.input_image_size: Tuple[int, int] = (1024, 1024)
        self.masks: Optional[Tensor] = None
        self.iou_pred: Optional[Tensor] = None

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self.probs[name]
        except KeyError:
            raise KeyError(f"no attention recorded for {name!r}; recorded: {list(self.probs)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.probs)

    def __len__(self) -> int:
        return len(self.probs)

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded tensors."""
        tensors = list(self.probs.values()) + list(self.q.values()) + list(self.k.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def num_prompt_sets(self) -> int:
        """B, the prompt sets recorded."""
        if not self.probs:
            raise ValueError("nothing recorded yet: run the model inside the record_attention block")
        return next(iter(self.probs.values())).shape[0]

    @property
    def num_tokens(self) -> int:
        """T, read from the first map that has tokens on an axis."""
        for name, t in self.probs.items():
            kind = self.sites[name].kind
            if kind in ("token_self", "token_to_image"):
                return t.shape[-2]
            if kind == "image_to_token":
                return t.shape[-1]
        raise ValueError("no token attention recorded")

    def grid(self) -> Tuple[int, int]:
        """(H, W) of the image-embedding grid (from the decoder input, else a square HW)."""
        if self.grid_size is not None:
            return self.grid_size
        for name, t in self.probs.items():
            kind = self.sites[name].kind
            hw = t.shape[-1] if kind == "token_to_image" else t.shape[-2] if kind == "image_to_token" else None
            if hw is not None:
                side = int(round(math.sqrt(hw)))
                if side * side == hw:
                    return side, side
        raise ValueError("cannot tell the H x W grid; set record.grid_size")

    def names(self, prompt_set: int = 0) -> List[str]:
        """The T token names of one prompt set (``token 0`` ... when unknown)."""
        if self.token_names is not None:
            return list(self.token_names[prompt_set])
        return [f"token {i}" for i in range(self.num_tokens)]

    def token_index(self, token: Union[int, str], prompt_set: int = 0) -> int:
        """0..T-1 for a token given by index or name (``mask0``, ``point1 (-)`` or ``point1``, ``pad``)."""
        names = self.names(prompt_set)
        if isinstance(token, int) or hasattr(token, "__index__") and not isinstance(token, str):
            if not 0 <= int(token) < len(names):
                raise ValueError(f"token index must be in 0..T-1 = 0..{len(names) - 1}, got {token}")
            return int(token)
        if token in names:
            return names.index(token)
        matches = [i for i, n in enumerate(names) if n.split(" (")[0] == token]  # "point0" for "point0 (+)"
        if len(matches) == 1:
            return matches[0]
        raise ValueError(f"no token named {token!r} in prompt set {prompt_set}; tokens are {names}")

    def map(
        self,
        kind: str = "token_to_image",
        layer: LayerSpec = 0,
        token: Optional[Union[int, str]] = None,
        head: Union[str, int] = "mean",
        prompt_set: int = 0,
    ) -> Tensor:
        """One map, by what it means rather than its module path:

          token_to_image  H x W: where ``token`` reads the image
          image_to_token  H x W: how much each image position reads ``token``
          token_self      T x T (rows: query tokens), or ``token``'s row, T

        ``head`` is ``"mean"`` (over heads) or a head index; ``layer`` 0, 1, ... or ``"final"``.
        """
        names = self.by(layer=layer, kind=kind)
        if not names:
            have = [(s.layer, s.kind) for n, s in self.sites.items() if n in self.probs]
            raise ValueError(f"no {kind} attention recorded at layer {layer!r}; recorded (layer, kind): {have}")
        B = self.num_prompt_sets
        if not 0 <= prompt_set < B:
            raise ValueError(f"prompt_set must be in 0..B-1 = 0..{B - 1}, got {prompt_set}")
        maps = self.probs[names[0]][prompt_set]  # h x N_q x N_k
        if head == "mean":
            m = maps.mean(0)  # N_q x N_k
        elif isinstance(head, int) and 0 <= head < maps.shape[0] and not self.average_heads:
            m = maps[head]
        else:
            raise ValueError(f"head must be 'mean' or an index in 0..h-1 = 0..{maps.shape[0] - 1}"
                             + (" (the record holds head-averaged maps: use 'mean')" if self.average_heads else "")
                             + f", got {head!r}")
        if kind == "token_self":
            return m if token is None else m[self.token_index(token, prompt_set)]  # T x T or T
        if token is None:
            raise ValueError(f"a {kind} map needs a token; tokens are {self.names(prompt_set)}")
        t = self.token_index(token, prompt_set)
        H, W = self.grid()
        row = m[t] if kind == "token_to_image" else m[:, t]  # HW
        return row.reshape(H, W)  # H x W

    def by(self, layer: Optional[LayerSpec] = None, kind: Optional[str] = None) -> List[str]:
        """Names of the recorded maps of a layer and/or kind, in call order."""
        return [
            n for n in self.probs
            if (layer is None or self.sites[n].layer == layer) and (kind is None or self.sites[n].kind == kind)
        ]

    def __repr__(self) -> str:
        rows = [f"  {n}: {' x '.join(map(str, t.shape))}" for n, t in self.probs.items()]
        return "AttentionRecord(\n" + "\n".join(rows) + f"\n)  # {format_bytes(self.nbytes)}"


def _refuse(estimate: int, max_bytes: int, what: str) -> None:
    raise AttentionMemoryError(
        f"record_attention: {what} would hold an estimated {format_bytes(estimate)} ({estimate} bytes) "
        f"of attention maps, over the limit max_bytes = {format_bytes(max_bytes)} ({max_bytes} bytes); "
        f"use fewer prompt sets B, keep fewer layers (layers=...), average heads (average_heads=True), "
        f"or raise max_bytes"
    )


def _decoder_sizes(args: tuple, kwargs: dict) -> Optional[Tuple[int, int, int, int]]:
    """(B, T, H, W) from MaskDecoder.forward's inputs, or None if they are not tensors as expected."""
    names = ["image_embeddings", "image_pe", "sparse_prompt_embeddings", "dense_prompt_embeddings"]
    given = dict(zip(names, args))
    given.update({k: v for k, v in kwargs.items() if k in names})
    emb, sparse = given.get("image_embeddings"), given.get("sparse_prompt_embeddings")
    if not (isinstance(emb, Tensor) and emb.dim() == 4 and isinstance(sparse, Tensor) and sparse.dim() == 3):
        return None  # the decoder's own checks will say what is wrong
    return sparse.shape[0], sparse.shape[1], emb.shape[2], emb.shape[3]


@contextlib.contextmanager
def record_attention(
    model: nn.Module,
    *,
    device: Optional[Union[str, torch.device]] = None,
    average_heads: bool = False,
    layers: Optional[Iterable[LayerSpec]] = None,
    kinds: Optional[Iterable[str]] = None,
    with_qk: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[AttentionRecord]:
    """Record the attention probabilities of ``model``'s Attention modules during the ``with`` block.

    Arguments:
      model: a MaskDecoder, or any module built from ``sam_explain.modeling`` Attention modules.
      device: where to keep the maps: None keeps them where they were computed (no copy),
        ``"cpu"`` (or any device) moves each map there as soon as it is computed.
      average_heads: keep the mean over the h heads, B x 1 x N_q x N_k, instead of every head.
      layers: keep only these layers (ints and/or ``"final"``); None keeps all.
      kinds: keep only these kinds (``token_self``, ``token_to_image``, ``image_to_token``).
      with_qk: also keep the per-head queries and keys (``record.q``, ``record.k``), B x h x n x d.
      max_bytes: refuse (AttentionMemoryError, before the forward runs) a capture whose
        estimated size exceeds this; default 1 GiB.

    Yields an :class:`AttentionRecord`, filled as the model runs (a model called twice inside
    the block keeps the last call's maps). The hooks are removed on exit, also when the
    forward raises; the model's outputs are unchanged (the hooks only read).
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"record_attention: max_bytes must be a whole number of bytes >= 0, got {max_bytes!r}")
    sites = select_sites(attention_sites(model), layers, kinds)
    modules = dict(model.named_modules())
    record = AttentionRecord(sites, average_heads, max_bytes)
    handles: List[RemovableHandle] = []

    def keep(t: Tensor) -> Tensor:
        t = t.detach()
        return t if device is None else t.to(device)

    def decoder_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        sizes = _decoder_sizes(args, kwargs)
        if sizes is None:
            return
        B, T, H, W = sizes
        # the output tokens come first: 1 + M in SAM; SAM 2 puts an object-score token before them
        T = T + int(bool(getattr(module, "pred_obj_scores", False))) + 1 + module.num_mask_tokens
        prefix = "" if module is model else next(n for n, m in modules.items() if m is module) + "."
        mine = [s for s in sites if s.name.startswith(prefix) and s.kind != "other"]
        elem = torch.empty((), dtype=module.iou_token.weight.dtype).element_size()
        estimate = sum(
            map_bytes(modules[s.name], B, *site_shape(s, B, T, H * W), elem, average_heads, with_qk) for s in mine
        )
        record.estimated_bytes = estimate
        record.grid_size = (H, W)
        if estimate > max_bytes:
            _refuse(estimate, max_bytes, f"this forward (B = {B}, T = {T}, HW = {H} x {W})")
        for store in (record.probs, record.q, record.k):  # a new forward replaces the last one's maps
            for s in mine:
                store.pop(s.name, None)

    def attention_pre_hook(site: AttentionSite):
        # A guard for models without a MaskDecoder around the Attention: refuse before this map exists.
        def hook(module: Attention, args: tuple, kwargs: dict) -> None:
            q = kwargs.get("q", args[0] if len(args) > 0 else None)
            k = kwargs.get("k", args[1] if len(args) > 1 else None)
            if not (isinstance(q, Tensor) and isinstance(k, Tensor) and q.dim() == 3 and k.dim() == 3):
                return
            B, n_q, n_k = q.shape[0], q.shape[1], k.shape[1]
            size = map_bytes(module, B, n_q, n_k, module.q_proj.weight.element_size(), average_heads, with_qk)
            old = record.nbytes - _site_bytes(record, site.name)
            if old + size > max_bytes:
                _refuse(old + size, max_bytes, f"recording {site.name} (B x h x N_q x N_k = "
                        f"{B} x {module.num_heads} x {n_q} x {n_k})")
        return hook

    def probs_hook(site: AttentionSite):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            probs = output.detach()
            if average_heads:
                probs = probs.mean(dim=1, keepdim=True)  # B x h x N_q x N_k -> B x 1 x N_q x N_k
            record.probs[site.name] = keep(probs)
        return hook

    def qk_hook(site: AttentionSite, store: Dict[str, Tensor]):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            store[site.name] = keep(output)
        return hook

    try:
        for m in modules.values():
            if isinstance(m, MaskDecoder) or component_kind(m) == "sam2_decoder":
                handles.append(m.register_forward_pre_hook(decoder_pre_hook, with_kwargs=True))
        for s in sites:
            attn = modules[s.name]
            handles.append(attn.register_forward_pre_hook(attention_pre_hook(s), with_kwargs=True))
            handles.append(attn.hook_probs.register_forward_hook(probs_hook(s)))
            if with_qk:
                handles.append(attn.hook_q.register_forward_hook(qk_hook(s, record.q)))
                handles.append(attn.hook_k.register_forward_hook(qk_hook(s, record.k)))
        yield record
    finally:
        for handle in handles:
            handle.remove()
    # keep the call order of the model, not of dict insertion after re-recording
    record.probs = {s.name: record.probs[s.name] for s in sites if s.name in record.probs}


def _site_bytes(record: AttentionRecord, name: str) -> int:
    return sum(
        t.numel() * t.element_size()
        for store in (record.probs, record.q, record.k) if name in store for t in [store[name]]
    )
