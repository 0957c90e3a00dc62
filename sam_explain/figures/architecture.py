"""The decoder's architecture as a diagram whose every arrow is labelled with its shape.

The labels are not typed in: they come from a traced run of the prompt encoder and the
decoder (``trace_prompt``), in the contract's symbols and in numbers, so the picture is
right for whatever configuration it is drawn from.

    fig = plot_architecture()                    # SAM's decoder, one click, B = 1
    fig = plot_architecture(points=2, box=True, batch=3)
    fig.savefig("docs/img/architecture.png")
"""

from __future__ import annotations

from typing import Dict, Tuple

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..tracing.render import value_text
from .figure import Figure

# box name -> (x, y centre, label, colour); the canvas is 12 x 13 units
BOXES: Dict[str, Tuple[float, float, str, str]] = {
    "prompts": (2.0, 12.2, "prompts\npoints, box, mask", "#f2f2f2"),
    "image": (9.5, 12.2, "image encoder\n(not part of the decoder)", "#f2f2f2"),
    "prompt_encoder": (2.0, 10.4, "PromptEncoder", "#dbe9f6"),
    "output_tokens": (5.4, 10.4, "iou_token + mask_tokens", "#fde9d9"),
    "concat": (3.7, 8.4, "concatenate tokens", "#fde9d9"),
    "repeat": (9.5, 8.4, "repeat over B, + dense", "#e2efda"),
    "transformer": (6.5, 6.3, "TwoWayTransformer\n2 blocks + final token-to-image attention", "#fff2cc"),
    "iou_head": (1.8, 4.0, "IoU head (MLP)", "#fde9d9"),
    "hypernet": (5.0, 4.0, "hypernetwork MLPs\n(one per mask token)", "#fde9d9"),
    "upscale": (9.6, 4.0, "output_upscaling\n2 x ConvTranspose (4x)", "#e2efda"),
    "product": (7.2, 1.9, "masks = hyper_in . upscaled", "#fff2cc"),
    "slice": (3.2, 0.5, "multimask slice: tokens 1..3 (or 0)", "#f2f2f2"),
}

# (from, to, trace path of the tensor on the arrow, what it is, where along the arrow the label sits)
ARROWS = [
    ("prompts", "prompt_encoder", None, None, 0.5),
    ("prompt_encoder", "concat", "prompt_encoder.hook_sparse", "sparse", 0.45),
    ("prompt_encoder", "repeat", "prompt_encoder.hook_dense", "dense", 0.72),
    ("image", "repeat", "mask_decoder", "image_embeddings", 0.5),
    ("output_tokens", "concat", "mask_decoder.hook_output_tokens", "output tokens", 0.3),
    ("concat", "transformer", "mask_decoder.hook_tokens", "tokens", 0.5),
    ("repeat", "transformer", "mask_decoder.hook_src", "src (and pos_src, the same shape)", 0.5),
    ("transformer", "iou_head", "mask_decoder.hook_iou_token_out", "iou_token_out", 0.6),
    ("transformer", "hypernet", "mask_decoder.hook_mask_tokens_out", "mask_tokens_out", 0.45),
    ("transformer", "upscale", "mask_decoder.transformer", "keys (image side)", 0.5),
    ("upscale", "product", "mask_decoder.hook_upscaled_embedding", "upscaled", 0.5),
    ("hypernet", "product", "mask_decoder.hook_hyper_in", "hyper_in", 0.5),
    ("product", "slice", "mask_decoder.hook_masks", "masks (all M)", 0.5),
    ("iou_head", "slice", "mask_decoder.hook_iou_pred", "iou_pred (all M)", 0.5),
]


def arrow_labels(trace) -> Dict[Tuple[str, str], str]:
    """The label of each arrow, from the traced run: ``name: symbols = numbers``."""
    labels = {}
    for src, dst, path, what, _ in ARROWS:
        if path is None:
            continue
        row = trace.find(path)[0]
        if what == "image_embeddings":
            text = value_text(row.inputs["image_embeddings"], row.input_checks.get("image_embeddings"))
        elif what == "keys (image side)":
            chk = row.output_check
            parts = chk.symbols if chk is not None and isinstance(chk.symbols, tuple) else (None, None)
            text = value_text(row.output[1], parts[1])
        else:
            text = value_text(row.output, row.output_check)
        labels[(src, dst)] = f"{what}\n{text}"
    return labels


def plot_architecture(points: int = 1, box: bool = False, mask: bool = False, batch: int = 1,
                      trace=None, **trace_kwargs) -> Figure:
    """Draw the decoder's data flow; each arrow names its tensor and shape from a traced run.

    Pass a ``trace`` from ``trace_prompt(..., include_prompt_encoder=True)`` to label a run of
    your own (your checkpoint, your prompt); otherwise one is made for the described prompt.
    """
    if trace is None:
        from ..tracing import trace_prompt

        trace = trace_prompt(points=points, box=box, mask=mask, batch=batch,
                             include_prompt_encoder=True, **trace_kwargs)
    labels = arrow_labels(trace)
    masks_row = trace.find("mask_decoder")[0]

    fig = Figure(figsize=(12, 13))
    ax = fig.add_axes([0, 0, 1, 0.94])
    ax.set_xlim(0, 12)
    ax.set_ylim(-0.4, 13)
    ax.axis("off")
    half_w, half_h = 1.45, 0.42
    for name, (x, y, text, colour) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x - half_w, y - half_h), 2 * half_w, 2 * half_h,
                                    boxstyle="round,pad=0.08", facecolor=colour, edgecolor="#555555"))
        ax.text(x, y, text, ha="center", va="center", fontsize=9, fontweight="bold")
    for src, dst, _, _, t in ARROWS:
        (x0, y0, *_), (x1, y1, *_) = BOXES[src], BOXES[dst]
        ax.add_patch(FancyArrowPatch((x0, y0 - half_h - 0.08), (x1, y1 + half_h + 0.08),
                                     arrowstyle="-|>", mutation_scale=14, color="#333333", lw=1.2))
        if (src, dst) in labels:
            ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), labels[(src, dst)], ha="center", va="center",
                    fontsize=7.5, color="#1f3b73",
                    bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.9))
    outputs = value_text(masks_row.output, masks_row.output_check)
    ax.text(3.2, -0.25, f"returned (masks, iou_pred): {outputs}", ha="center", va="center",
            fontsize=8, color="#1f3b73")
    fig.suptitle("SAM's mask decoder: every arrow labelled with its shape (symbols = numbers)\n"
                 f"from a traced run: {trace.title}", fontsize=11)
    return fig
