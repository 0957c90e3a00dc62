"""The documented-shape contract: every tensor of the decoder and the prompt encoder
that the docs talk about, with its symbolic shape, in one place.

Each :class:`Entry` is keyed by a module path relative to a ``MaskDecoder`` or a
``PromptEncoder`` (the same names as the state-dict keys; ``*`` stands for a layer
index) and says what goes in and what comes out of that module call, axis by axis,
in the docs' symbols. ``DecoderConfig`` / ``PromptConfig`` turn the symbols into
numbers for one configuration, so the contract can

* label every row of a shape trace (``B x h x T x d = 3 x 8 x 7 x 32``),
* be checked against real runs (tests/test_shape_contract.py), and
* generate docs/shapes.md (:mod:`sam_explain.shapes.markdown`, ``sam-explain shapes-doc``).

A shape spec is a string of space-separated axes (``"B h T d"``); an axis is a
number or a symbol of :meth:`DecoderConfig.symbols` / :meth:`PromptConfig.symbols`.
A tuple of specs describes a tuple of tensors and ``None`` a ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

Spec = Union[None, str, Tuple["Spec", ...]]

# Which contract applies to a module: by class name, so the official modules match too. SAM 2's
# classes have the same names: ``registry.component_kind`` tells its decoder apart ("sam2_decoder").
COMPONENT_CLASSES = {"MaskDecoder": "decoder", "PromptEncoder": "prompt_encoder"}


SYMBOL_GLOSSARY: Tuple[Tuple[str, str], ...] = (
    ("B", "prompt sets"),
    ("I", "images given to the decoder: 1 (shared by the B prompt sets) or B (paired)"),
    ("N", "points per prompt set"),
    ("N'", "sparse prompt tokens: N + 1 (points only), N + 2 (points and a box), 2 (a box only), 0 (neither)"),
    ("T", "tokens in the decoder, 1 + M + N'"),
    ("C", "channels of every embedding and token (256)"),
    ("C/2", "internal channels of a cross-attention (downsample rate 2)"),
    ("C/4, C/8", "channels of the two upscaling stages (64, 32)"),
    ("H x W", "the image-embedding grid (64 x 64); HW = H * W"),
    ("2H x 2W, 4H x 4W", "the grids of the upscaling stages and of the masks (128 x 128, 256 x 256)"),
    ("h", "attention heads (8)"),
    ("d", "channels per head: C/h (32) in the self-attention, (C/2)/h (16) in the cross-attentions"),
    ("M", "mask tokens, num_multimask_outputs + 1 (4)"),
    ("K", "masks returned: M - 1 (3) with multimask_output, 1 without"),
    ("mlp_dim", "hidden width of the transformer's MLP (2048)"),
    ("iou_hidden", "hidden width of the IoU head (256)"),
    ("Cm", "hidden channels of the prompt encoder's mask downscaling (mask_in_chans, 16)"),
)


def sparse_length(points: Optional[int], box: bool) -> int:
    """N', the sparse prompt tokens for N = ``points`` clicks (None: no points) and an optional box.

    N points: N + 1 (the padding point); points and a box: N + 2; a box only: 2; neither: 0.
    """
    n = 0
    if points is not None:
        n += points + (0 if box else 1)
    if box:
        n += 2
    return n


@dataclass(frozen=True)
class DecoderConfig:
    """The numbers behind the decoder's symbols (SAM's defaults; one click, multimask)."""

    B: int = 1
    sparse_tokens: int = 2  # N'
    images: int = 1  # I: 1 or B
    C: int = 256
    H: int = 64
    W: int = 64
    heads: int = 8
    mlp_dim: int = 2048
    M: int = 4
    multimask: bool = True
    iou_hidden: int = 256

    def symbols(self) -> Dict[str, int]:
        C, H, W, h = self.C, self.H, self.W, self.heads
        return {
            "B": self.B, "I": self.images, "N'": self.sparse_tokens, "T": 1 + self.M + self.sparse_tokens,
            "C": C, "C/2": C // 2, "C/4": C // 4, "C/8": C // 8,
            "H": H, "W": W, "HW": H * W, "2H": 2 * H, "2W": 2 * W, "4H": 4 * H, "4W": 4 * W,
            "h": h, "d": C // h, "d_cross": C // 2 // h,
            "M": self.M, "(1+M)": 1 + self.M, "K": self.M - 1 if self.multimask else 1,
            "mlp_dim": self.mlp_dim, "iou_hidden": self.iou_hidden,
        }


@dataclass(frozen=True)
class PromptConfig:
    """The numbers behind the prompt encoder's symbols. ``points`` is N, or None for no points."""

    B: int = 1
    points: Optional[int] = 1
    box: bool = False
    mask: bool = False
    C: int = 256
    H: int = 64
    W: int = 64
    mask_in_chans: int = 16

    def symbols(self) -> Dict[str, int]:
        C, H, W, cm = self.C, self.H, self.W, self.mask_in_chans
        out = {
            "B": self.B, "N'": sparse_length(self.points, self.box), "C": C,
            "H": H, "W": W, "2H": 2 * H, "2W": 2 * W, "4H": 4 * H, "4W": 4 * W,
            "Cm": cm, "Cm/4": cm // 4,
        }
        if self.points is not None:
            out["N"] = self.points
        return out


@dataclass(frozen=True)
class Entry:
    """One module call of the contract.

    path: relative to the component (``""`` is the component itself); ``*`` is a layer index.
    out: the shape(s) it returns. inputs: the shapes it takes, by forward-parameter name
    (omitted parameters are not checked). step: the einops pattern or a one-line description.
    bind: symbols shown under one name but valued by another (``{"d": "d_cross"}``).
    """

    path: str
    out: Spec
    step: str
    inputs: Mapping[str, Spec] = field(default_factory=dict)
    bind: Mapping[str, str] = field(default_factory=dict)


def evaluate(spec: Spec, values: Mapping[str, int], bind: Mapping[str, str] = {}) -> object:
    """``"B T C"`` with B=3, T=7, C=256 -> (3, 7, 256); tuples recurse; None stays None.
    An axis whose symbol has no value gives None in its place."""
    if spec is None:
        return None
    if isinstance(spec, tuple):
        return tuple(evaluate(s, values, bind) for s in spec)
    out = []
    for axis in spec.split():
        if axis.isdigit():
            out.append(int(axis))
        else:
            out.append(values.get(bind.get(axis, axis)))
    return tuple(out)


def pretty(spec: str) -> str:
    """``"B h T d"`` -> ``"B x h x T x d"``."""
    return " x ".join(spec.split())


# --- the contract --------------------------------------------------------------------

def _attention(prefix: str, q_len: str, k_len: str, cross: bool, role: str) -> Tuple[Entry, ...]:
    """The entries of one Attention: q from ``q_len`` positions, k and v from ``k_len``."""
    inner = "C/2" if cross else "C"
    bind = {"d": "d_cross"} if cross else {}
    rate = "downsample rate 2: " if cross else ""
    nq, nk = q_len, k_len
    return (
        Entry(prefix, f"B {nq} C", role,
              inputs={"q": f"B {nq} C", "k": f"B {nk} C", "v": f"B {nk} C"}),
        Entry(f"{prefix}.q_proj", f"B {nq} {inner}", f"{rate}queries B x {nq} x C -> B x {nq} x (h d)",
              inputs={"input": f"B {nq} C"}),
        Entry(f"{prefix}.k_proj", f"B {nk} {inner}", f"{rate}keys B x {nk} x C -> B x {nk} x (h d)",
              inputs={"input": f"B {nk} C"}),
        Entry(f"{prefix}.v_proj", f"B {nk} {inner}", f"{rate}values B x {nk} x C -> B x {nk} x (h d)",
              inputs={"input": f"B {nk} C"}),
        Entry(f"{prefix}.hook_q", f"B h {nq} d", "b n_q (h d) -> b h n_q d", bind=bind),
        Entry(f"{prefix}.hook_k", f"B h {nk} d", "b n_k (h d) -> b h n_k d", bind=bind),
        Entry(f"{prefix}.hook_v", f"B h {nk} d", "b n_k (h d) -> b h n_k d", bind=bind),
        Entry(f"{prefix}.hook_logits", f"B h {nq} {nk}", "b h n_q d, b h n_k d -> b h n_q n_k, / sqrt(d)", bind=bind),
        Entry(f"{prefix}.hook_probs", f"B h {nq} {nk}", f"softmax over the {nk} keys", bind=bind),
        Entry(f"{prefix}.hook_out", f"B h {nq} d", "b h n_q n_k, b h n_k d -> b h n_q d", bind=bind),
        Entry(f"{prefix}.out_proj", f"B {nq} C", f"heads merged: b h n_q d -> b n_q (h d), then -> B x {nq} x C",
              inputs={"input": f"B {nq} {inner}"}),
    )


def _mlp(prefix: str, widths: Sequence[str], role: str) -> Tuple[Entry, ...]:
    """An ``MLP`` of len(widths) - 1 linear layers, ReLU between them."""
    entries = [Entry(prefix, f"B {widths[-1]}", role, inputs={"x": f"B {widths[0]}"})]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        entries.append(Entry(f"{prefix}.layers.{i}", f"B {b}", f"linear {a} -> {b}" + (", then ReLU" if i < len(widths) - 2 else ""),
                             inputs={"input": f"B {a}"}))
    return tuple(entries)


LAYER = "transformer.layers.*"

DECODER_CONTRACT: Tuple[Entry, ...] = (
    Entry("", ("B K 4H 4W", "B K"), "masks and IoU after the multimask slice: tokens 1..M-1, or token 0",
          inputs={"image_embeddings": "I C H W", "image_pe": "1 C H W",
                  "sparse_prompt_embeddings": "B N' C", "dense_prompt_embeddings": "B C H W"}),
    Entry("hook_output_tokens", "B (1+M) C", "iou_token ++ mask_tokens: (1+M) x C, repeat 't c -> b t c'"),
    Entry("hook_tokens", "B T C", "cat(output tokens, sparse prompts) on the token axis: T = 1 + M + N'"),
    Entry("hook_src", "B C H W", "repeat '1 c h w -> b c h w' (if I = 1), + dense prompt"),
    Entry("hook_pos_src", "B C H W", "image_pe: repeat '1 c h w -> b c h w'"),
    Entry("transformer", ("B T C", "B HW C"), "two-way transformer: (queries = tokens, keys = image)",
          inputs={"image_embedding": "B C H W", "image_pe": "B C H W", "point_embedding": "B T C"}),
    Entry(LAYER, ("B T C", "B HW C"), "one two-way block: self-attn, token->image, MLP, image->token",
          inputs={"queries": "B T C", "keys": "B HW C", "query_pe": "B T C", "key_pe": "B HW C"}),
    *_attention(f"{LAYER}.self_attn", "T", "T", cross=False, role="1. the tokens attend to each other"),
    Entry(f"{LAYER}.norm1", "B T C", "queries after the self-attention (LayerNorm over C)"),
    *_attention(f"{LAYER}.cross_attn_token_to_image", "T", "HW", cross=True,
                role="2. token -> image: T queries over HW keys"),
    Entry(f"{LAYER}.norm2", "B T C", "queries after token -> image (LayerNorm over C)"),
    Entry(f"{LAYER}.mlp", "B T C", "3. MLP on each token", inputs={"x": "B T C"}),
    Entry(f"{LAYER}.mlp.lin1", "B T mlp_dim", "linear C -> mlp_dim", inputs={"input": "B T C"}),
    Entry(f"{LAYER}.mlp.act", "B T mlp_dim", "ReLU", inputs={"input": "B T mlp_dim"}),
    Entry(f"{LAYER}.mlp.lin2", "B T C", "linear mlp_dim -> C", inputs={"input": "B T mlp_dim"}),
    Entry(f"{LAYER}.norm3", "B T C", "queries after the MLP (LayerNorm over C)"),
    *_attention(f"{LAYER}.cross_attn_image_to_token", "HW", "T", cross=True,
                role="4. image -> token: HW queries over T keys"),
    Entry(f"{LAYER}.norm4", "B HW C", "keys (the image) after image -> token (LayerNorm over C)"),
    *_attention("transformer.final_attn_token_to_image", "T", "HW", cross=True,
                role="final token -> image attention"),
    Entry("transformer.norm_final_attn", "B T C", "the queries leaving the transformer (LayerNorm over C)"),
    Entry("hook_hs", "B T C", "hs: the tokens after the transformer"),
    Entry("hook_iou_token_out", "B C", "hs[:, 0]: the IoU token"),
    Entry("hook_mask_tokens_out", "B M C", "hs[:, 1:1+M]: the mask tokens"),
    Entry("output_upscaling", "B C/8 4H 4W", "upscale 4x: b (h w) c -> b c h w, two stride-2 transposed convs",
          inputs={"input": "B C H W"}),
    Entry("output_upscaling.0", "B C/4 2H 2W", "transposed conv 2x2, stride 2: C -> C/4, H x W -> 2H x 2W",
          inputs={"input": "B C H W"}),
    Entry("output_upscaling.1", "B C/4 2H 2W", "LayerNorm2d over C/4", inputs={"x": "B C/4 2H 2W"}),
    Entry("output_upscaling.2", "B C/4 2H 2W", "GELU", inputs={"input": "B C/4 2H 2W"}),
    Entry("output_upscaling.3", "B C/8 4H 4W", "transposed conv 2x2, stride 2: C/4 -> C/8, 2H x 2W -> 4H x 4W",
          inputs={"input": "B C/4 2H 2W"}),
    Entry("output_upscaling.4", "B C/8 4H 4W", "GELU", inputs={"input": "B C/8 4H 4W"}),
    Entry("hook_upscaled_embedding", "B C/8 4H 4W", "the upscaled image embedding"),
    *_mlp("output_hypernetworks_mlps.*", ("C", "C", "C", "C/8"), "hypernetwork MLP of one mask token: C -> C/8"),
    Entry("hook_hyper_in", "B M C/8", "stack of the M hypernetwork outputs on axis 1"),
    Entry("hook_masks", "B M 4H 4W", "b m c8, b c8 h4 w4 -> b m h4 w4 (all M, before the multimask slice)"),
    *_mlp("iou_prediction_head", ("C", "iou_hidden", "iou_hidden", "M"), "IoU head on the IoU token: C -> M"),
    Entry("hook_iou_pred", "B M", "predicted IoU of all M masks, before the multimask slice"),
)

PROMPT_ENCODER_CONTRACT: Tuple[Entry, ...] = (
    Entry("", ("B N' C", "B C H W"), "prompts -> (sparse, dense) embeddings",
          inputs={"points": ("B N 2", "B N"), "boxes": "B 4", "masks": "B 1 4H 4W"}),
    Entry("pe_layer", "C H W", "get_dense_pe(): random Fourier features of every grid cell (x, y)"),
    Entry("hook_sparse", "B N' C", "points (+ padding point) and box corners: N' = N + 1, N + 2, 2 or 0"),
    Entry("mask_downscaling", "B C H W", "mask prompt B x 1 x 4H x 4W -> B x C x H x W",
          inputs={"input": "B 1 4H 4W"}),
    Entry("mask_downscaling.0", "B Cm/4 2H 2W", "conv 2x2, stride 2: 1 -> Cm/4, 4H x 4W -> 2H x 2W",
          inputs={"input": "B 1 4H 4W"}),
    Entry("mask_downscaling.1", "B Cm/4 2H 2W", "LayerNorm2d over Cm/4", inputs={"x": "B Cm/4 2H 2W"}),
    Entry("mask_downscaling.2", "B Cm/4 2H 2W", "GELU", inputs={"input": "B Cm/4 2H 2W"}),
    Entry("mask_downscaling.3", "B Cm H W", "conv 2x2, stride 2: Cm/4 -> Cm, 2H x 2W -> H x W",
          inputs={"input": "B Cm/4 2H 2W"}),
    Entry("mask_downscaling.4", "B Cm H W", "LayerNorm2d over Cm", inputs={"x": "B Cm H W"}),
    Entry("mask_downscaling.5", "B Cm H W", "GELU", inputs={"input": "B Cm H W"}),
    Entry("mask_downscaling.6", "B C H W", "conv 1x1: Cm -> C", inputs={"input": "B Cm H W"}),
    Entry("hook_dense", "B C H W", "the downscaled mask, or no_mask_embed repeated '1 c -> b c h w'"),
)

# The tensors the docs talk about by name -> (component, module path, "out" or an input name).
DOCUMENTED: Dict[str, Tuple[str, str, str]] = {
    "output_tokens": ("decoder", "hook_output_tokens", "out"),
    "tokens": ("decoder", "hook_tokens", "out"),
    "src (after the repeat and the dense addition)": ("decoder", "hook_src", "out"),
    "pos_src": ("decoder", "hook_pos_src", "out"),
    "queries (the tokens inside the transformer)": ("decoder", f"{LAYER}.norm1", "out"),
    "keys (the image inside the transformer)": ("decoder", f"{LAYER}.norm4", "out"),
    "self-attention q, k, v projections (internal channels)": ("decoder", f"{LAYER}.self_attn.q_proj", "out"),
    "self-attention q": ("decoder", f"{LAYER}.self_attn.hook_q", "out"),
    "self-attention k, v": ("decoder", f"{LAYER}.self_attn.hook_k", "out"),
    "self-attention logits, probabilities": ("decoder", f"{LAYER}.self_attn.hook_probs", "out"),
    "token -> image q projection (internal channels)": ("decoder", f"{LAYER}.cross_attn_token_to_image.q_proj", "out"),
    "token -> image q": ("decoder", f"{LAYER}.cross_attn_token_to_image.hook_q", "out"),
    "token -> image k, v": ("decoder", f"{LAYER}.cross_attn_token_to_image.hook_k", "out"),
    "token -> image logits, probabilities": ("decoder", f"{LAYER}.cross_attn_token_to_image.hook_probs", "out"),
    "image -> token q": ("decoder", f"{LAYER}.cross_attn_image_to_token.hook_q", "out"),
    "image -> token k, v": ("decoder", f"{LAYER}.cross_attn_image_to_token.hook_k", "out"),
    "image -> token logits, probabilities": ("decoder", f"{LAYER}.cross_attn_image_to_token.hook_probs", "out"),
    "final token -> image logits, probabilities": ("decoder", "transformer.final_attn_token_to_image.hook_probs", "out"),
    "hs": ("decoder", "hook_hs", "out"),
    "iou_token_out": ("decoder", "hook_iou_token_out", "out"),
    "mask_tokens_out": ("decoder", "hook_mask_tokens_out", "out"),
    "upscaling stage 1": ("decoder", "output_upscaling.0", "out"),
    "upscaling stage 2 (upscaled_embedding)": ("decoder", "hook_upscaled_embedding", "out"),
    "hyper_in": ("decoder", "hook_hyper_in", "out"),
    "masks, before the multimask slice": ("decoder", "hook_masks", "out"),
    "iou_pred, before the multimask slice": ("decoder", "hook_iou_pred", "out"),
    "masks, iou_pred returned (after the slice)": ("decoder", "", "out"),
    "sparse embeddings": ("prompt_encoder", "hook_sparse", "out"),
    "dense embeddings": ("prompt_encoder", "hook_dense", "out"),
    "mask downscaling stage 1": ("prompt_encoder", "mask_downscaling.0", "out"),
    "mask downscaling stage 2": ("prompt_encoder", "mask_downscaling.3", "out"),
    "image_pe (get_dense_pe)": ("prompt_encoder", "pe_layer", "out"),
}

CONTRACTS: Dict[str, Tuple[Entry, ...]] = {
    "decoder": DECODER_CONTRACT,
    "prompt_encoder": PROMPT_ENCODER_CONTRACT,
}


def hook_inputs(entry: Entry) -> Mapping[str, Spec]:
    """A hook point (``hook_*``) takes what it returns; other entries list their inputs."""
    if entry.path.rsplit(".", 1)[-1].startswith("hook_"):
        return {"x": entry.out}
    if not entry.inputs and isinstance(entry.out, str) and entry.path.rsplit(".", 1)[-1].startswith("norm"):
        return {"input": entry.out}
    return entry.inputs


# --- configurations read from a module and a call --------------------------------------

def decoder_config(decoder: object, inputs: Mapping[str, object],
                   known: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
    """Symbol values for a MaskDecoder call. ``inputs`` maps forward-parameter names to
    shapes (tuples of ints) or, for ``multimask_output``, its value; missing keys leave
    the symbols they define unknown. ``known``: values already read from the module."""
    values: Dict[str, int] = dict(known or {})
    transformer = getattr(decoder, "transformer", None)
    C = getattr(decoder, "transformer_dim", None)
    M = getattr(decoder, "num_mask_tokens", values.get("M"))
    heads = getattr(transformer, "num_heads", None)
    if C is not None:
        values.update({"C": C, "C/2": C // 2, "C/4": C // 4, "C/8": C // 8})
        if heads:
            values.update({"h": heads, "d": C // heads, "d_cross": C // 2 // heads})
    if M is not None:
        values.update({"M": M, "(1+M)": 1 + M})
    if getattr(transformer, "mlp_dim", None) is not None:
        values["mlp_dim"] = transformer.mlp_dim
    iou_head = getattr(decoder, "iou_prediction_head", None)
    if iou_head is not None and hasattr(iou_head, "layers") and len(iou_head.layers) > 1:
        values["iou_hidden"] = iou_head.layers[0].out_features
    sparse = inputs.get("sparse_prompt_embeddings")
    if isinstance(sparse, tuple) and len(sparse) == 3:
        values.update({"B": sparse[0], "N'": sparse[1]})
        if M is not None:
            values["T"] = 1 + M + sparse[1]
    image = inputs.get("image_embeddings")
    if isinstance(image, tuple) and len(image) == 4:
        I, _, H, W = image
        values.update({"I": I, "H": H, "W": W, "HW": H * W, "2H": 2 * H, "2W": 2 * W, "4H": 4 * H, "4W": 4 * W})
    multimask = inputs.get("multimask_output")
    if isinstance(multimask, bool) and M is not None:
        values["K"] = M - 1 if multimask else 1
    return values


def prompt_encoder_config(encoder: object, inputs: Mapping[str, object],
                          known: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
    """Symbol values for a PromptEncoder call (see :func:`decoder_config`). ``inputs`` holds
    ``points`` as a pair of shapes or None, ``boxes`` and ``masks`` as shapes or None."""
    values: Dict[str, int] = dict(known or {})
    C = getattr(encoder, "embed_dim", None)
    if C is not None:
        values["C"] = C
    size = getattr(encoder, "image_embedding_size", None)
    if size is not None:
        H, W = size
        values.update({"H": H, "W": W, "2H": 2 * H, "2W": 2 * W, "4H": 4 * H, "4W": 4 * W})
    convs = getattr(encoder, "mask_downscaling", None)
    if convs is not None and len(convs) > 3:
        cm = convs[3].out_channels
        values.update({"Cm": cm, "Cm/4": cm // 4})
    if not inputs:
        return values
    points, boxes, masks = inputs.get("points"), inputs.get("boxes"), inputs.get("masks")
    n_points = None
    if isinstance(points, tuple) and len(points) == 2 and isinstance(points[0], tuple):
        values["B"], n_points = points[0][0], points[0][1]
        values["N"] = n_points
    elif isinstance(boxes, tuple):
        values["B"] = boxes[0]
    elif isinstance(masks, tuple):
        values["B"] = masks[0]
    else:
        values["B"] = 1
    values["N'"] = sparse_length(n_points, isinstance(boxes, tuple))
    return values


CONFIG_READERS = {"decoder": decoder_config, "prompt_encoder": prompt_encoder_config}
