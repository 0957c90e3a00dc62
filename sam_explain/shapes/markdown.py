"""docs/shapes.md, generated from the shape contract (``sam-explain shapes-doc``)."""

from __future__ import annotations

from typing import Mapping, Sequence, Tuple

from .contract import (
    DECODER_CONTRACT, DOCUMENTED, CONTRACTS, PROMPT_ENCODER_CONTRACT, SYMBOL_GLOSSARY, DecoderConfig, Entry,
    PromptConfig, Spec, evaluate, hook_inputs, pretty, sparse_length,
)

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


def _table(entries: Sequence[Entry], values: Mapping[str, int]) -> str:
    lines = ["| module path | in | out (symbols) | out (SAM) | step |", "|---|---|---|---|---|"]
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
    ]
    return "\n".join(out)
