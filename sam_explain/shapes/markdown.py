"""docs/shapes.md, generated from the shape contract (``sam-explain shapes-doc``)."""

from __future__ import annotations

from typing import Mapping, Sequence, Tuple

from .contract import (
    DECODER_CONTRACT, DOCUMENTED, CONTRACTS, PROMPT_ENCODER_CONTRACT, SYMBOL_GLOSSARY, DecoderConfig, Entry,
    PromptConfig, Spec, evaluate, hook_inputs, pretty, sparse_length,
)
from .contract_sam2 import SAM2_DECODER_CONTRACT, SAM2_SYMBOL_GLOSSARY, Sam2DecoderConfig

SHAPES_DOC = "docs/shapes.md"
REGENERATE = "python -m sam_explain shapes-doc --output docs/shapes.md"


def _fmt(spec: Spec, values: Mapping[str, int], bind: Mapping[str, str]) -> Tuple[str, str]:
    if spec is None:
        return "None", "None"
    if isinstance(spec, tuple):
        parts = [_fmt(s, values, bind) for s in spec]
        return "(" + ", ".join(p[0] for p in parts) + ")", "(" + ", ".join(p[1] for p in parts) + ")"
    nums = evaluate(spec, values, bind)
    return pretty(spec), " x ".join("?" if n is None else str(n) for n in nums)


def _table(entries: Sequence[Entry], values: Mapping[str, int], model: str = "SAM") -> str:
    lines = [f"| module path | in | out (symbols) | out ({model}) | step |", "|---|---|---|---|---|"]
    for e in entries:
        ins = hook_inputs(e)
        in_txt = "<br>".join(
            f"{name}: {_fmt(spec, values, e.bind)[0]}" for name, spec in ins.items()
        ) if not e.path.rsplit(".", 1)[-1].startswith("hook_") else "(same)"
        sym, num = _fmt(e.out, values, e.bind)
        path = e.path or "(the module itself)"
        lines.append(f"| `{path}` | {in_txt} | {sym} | {num} | {e.step.replace('|', '/')} |")
    return "\n".join(lines)


def _glance(dec: Mapping[str, int], pe: Mapping[str, int]) -> str:
    lines = ["| tensor | where (module path) | symbols | SAM |", "|---|---|---|---|"]
    for name, (component, path, which) in DOCUMENTED.items():
        entry = next(e for e in CONTRACTS[component] if e.path == path)
        spec = entry.out if which == "out" else entry.inputs[which]
        sym, num = _fmt(spec, dec if component == "decoder" else pe, entry.bind)
        where = ("prompt_encoder." if component == "prompt_encoder" else "") + (path or "(the decoder's output)")
        lines.append(f"| {name} | `{where}` | {sym} | {num} |")
    return "\n".join(lines)


def render_shapes_markdown() -> str:
    """The text of docs/shapes.md, generated from the contract above."""
    dec_cfg = DecoderConfig()
    pe_cfg = PromptConfig(points=1, box=False, mask=True)
    dec = dec_cfg.symbols()
    pe = pe_cfg.symbols()
    out = [
        "<!-- Generated from sam_explain/shapes/contract.py; do not edit. Regenerate with:",
        f"     {REGENERATE} -->",
        "# Shapes: the documented-shape contract",
        "",
        "Every tensor the docs name, by module path (the same names as the state-dict keys; "
        "`*` is a layer index), with its symbolic shape and its size in SAM's configuration. "
        "The tracer (`sam_explain.trace_shapes`, see [tracing.md](tracing.md)) labels its rows "
        "with these shapes and flags a row that disagrees; the tests run the decoder over a grid "
        "of configurations and check every traced shape against this table.",
        "",
        "## Symbols",
        "",
        "| symbol | meaning |",
        "|---|---|",
        *[f"| {s} | {m} |" for s, m in SYMBOL_GLOSSARY],
        "",
        "## At a glance",
        "",
        "SAM's configuration, one click (N' = 2, T = 7), B = 1, multimask output; the prompt "
        "encoder's rows with a mask prompt. The full tables follow.",
        "",
        _glance(dec, pe),
        "",
        "## Parameter counts",
        "",
        "`torchinfo.summary` runs both modules with their multi-input forwards "
        "(see [tracing.md](tracing.md#torchinfo)):",
        "",
        "| module | parameters |",
        "|---|---|",
        "| MaskDecoder (SAM's configuration) | 4,058,340 |",
        "| PromptEncoder (SAM's configuration) | 6,220 |",
        "",
        "## The prompt encoder's sparse length rule",
        "",
        "| prompt | N' |",
        "|---|---|",
        f"| N points | N + 1 (a padding point is appended; N = 1 gives {sparse_length(1, False)}) |",
        f"| N points and a box | N + 2 (N = 1 gives {sparse_length(1, True)}) |",
        f"| a box only | {sparse_length(None, True)} |",
        f"| no points, no box | {sparse_length(None, False)} |",
        "",
        "The decoder then works on T = 1 + M + N' tokens (7 for one click).",
        "",
        "## MaskDecoder",
        "",
        f"SAM's numbers below: B = {dec_cfg.B}, one click (N' = {dec_cfg.sparse_tokens}, "
        f"T = {dec['T']}), C = {dec_cfg.C}, H x W = {dec_cfg.H} x {dec_cfg.W}, h = {dec_cfg.heads}, "
        f"M = {dec_cfg.M}, multimask_output=True (K = {dec['K']}). "
        f"In the self-attention d = C/h = {dec['d']} (internal channels C = {dec['C']}); in the three "
        f"cross-attentions the projections downsample to C/2 = {dec['C/2']} channels, "
        f"d = (C/2)/h = {dec['d_cross']}.",
        "",
        _table(DECODER_CONTRACT, dec),
        "",
        "## PromptEncoder",
        "",
        f"SAM's numbers below: B = {pe_cfg.B}, one click and a mask prompt (N' = {pe[chr(78) + chr(39)]}), "
        f"C = {pe_cfg.C}, H x W = {pe_cfg.H} x {pe_cfg.W}, Cm = {pe_cfg.mask_in_chans}. "
        "`pe_layer` runs when `get_dense_pe()` is called; `mask_downscaling` only with a mask prompt.",
        "",
        _table(PROMPT_ENCODER_CONTRACT, pe),
        "",
        *_sam2_section(),
    ]
    return "\n".join(out)


def _sam2_section() -> Sequence[str]:
    """SAM 2's decoder (``contract_sam2``): what it adds to the symbols, and its table."""
    cfg = Sam2DecoderConfig()
    v = cfg.symbols()
    new_rows = ", ".join(f"`{e.path}`" for e in SAM2_DECODER_CONTRACT
                         if e.path and ".mlp.layers." not in e.path and not any(d.path == e.path for d in DECODER_CONTRACT))
    return [
        "## SAM 2's MaskDecoder",
        "",
        "SAM 2 and SAM 2.1 (`sam_explain.sam2.MaskDecoder` and the official `sam2` one; the tracer tells them "
        "from SAM's by their attributes `pred_obj_scores` and `use_high_res_features`). SAM 2's prompt encoder "
        "has the prompt encoder's rows above. See [sam2.md](sam2.md).",
        "",
        "### Symbols SAM 2 adds or changes",
        "",
        "| symbol | meaning |",
        "|---|---|",
        *[f"| {s} | {m} |" for s, m in SAM2_SYMBOL_GLOSSARY],
        "",
        "| module | parameters |",
        "|---|---|",
        "| MaskDecoder (SAM 2.1's configuration) | 4,215,109 |",
        "",
        f"SAM 2.1's numbers below (every flag on): B = {cfg.B}, one click through the image predictor "
        f"(N' = {cfg.sparse_tokens}: the click and the padding point; T = {v['T']}), O = {v['O']}, C = {cfg.C}, "
        f"H x W = {cfg.H} x {cfg.W}, h = {cfg.heads}, M = {cfg.M}, Ih = {v['Ih']}, multimask_output=True "
        f"(K = {v['K']}, K_ptr = {v['K_ptr']}). Rows SAM does not have: {new_rows}; the block MLP's "
        "`mlp.layers.0` / `mlp.layers.1` are SAM's `mlp.lin1` / `mlp.lin2`. With `use_high_res_features` the "
        "upscaling's modules are called one by one (no `output_upscaling` row); `conv_s0` / `conv_s1` run "
        "outside the decoder's forward; `hook_stability_scores` only with multimask_output=False and the "
        "stability switch, in eval mode.",
        "",
        _table(SAM2_DECODER_CONTRACT, v, model="SAM 2.1"),
        "",
    ]
