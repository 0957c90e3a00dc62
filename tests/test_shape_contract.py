"""The documented-shape contract against real runs of the decoder and the prompt encoder.

Every traced module call is compared with the contract evaluated from the test's own
configuration (not from what the tracer read off the run), across a grid of prompts and
model configurations, and with hypothesis-generated prompts.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sam_explain.shapes import contract as sc
from sam_explain.shapes import registry
from sam_explain.shapes import markdown
from sam_explain.prompts import example_prompts
from sam_explain.modeling import build_mask_decoder, build_prompt_encoder
from sam_explain.tracing import TensorInfo, trace_shapes

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards: extra threads only add contention


@functools.lru_cache(maxsize=None)
def models(heads: int = 8, depth: int = 2, grid: tuple = (64, 64)):
    torch.manual_seed(0)
    decoder = build_mask_decoder(num_heads=heads, depth=depth)
    prompt_encoder = build_prompt_encoder(
        image_embedding_size=grid, input_image_size=(16 * grid[0], 16 * grid[1])
    )
    return prompt_encoder, decoder


def expected_sparse(points: int, box: bool) -> int:
    """The issue's rule, written out independently of sc.sparse_length."""
    if points and box:
        return points + 2
    if points:
        return points + 1
    return 2 if box else 0


def run_traced(B=1, points=1, box=False, mask=False, multimask=True, heads=8, depth=2,
               grid=(64, 64), paired=False):
    prompt_encoder, decoder = models(heads, depth, grid)
    prompts = example_prompts(points=points, box=box, mask=mask, batch=B,
                              image_size=prompt_encoder.input_image_size,
                              mask_size=prompt_encoder.mask_input_size)
    images = torch.randn(B if paired else 1, 256, *grid)
    with torch.no_grad(), trace_shapes({"prompt_encoder": prompt_encoder, "mask_decoder": decoder}) as trace:
        sparse, dense = prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=prompts.masks)
        masks, iou = decoder(image_embeddings=images, image_pe=prompt_encoder.get_dense_pe(),
                             sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                             multimask_output=multimask)
    B_eff = B if (points or box or mask) else 1  # no prompt at all: one empty prompt set
    n_sparse = expected_sparse(points, box)
    dec_cfg = sc.DecoderConfig(B=B_eff, sparse_tokens=n_sparse, images=B_eff if paired else 1,
                               H=grid[0], W=grid[1], heads=heads, multimask=multimask)
    pe_cfg = sc.PromptConfig(B=B_eff, points=points or None, box=box, mask=mask, H=grid[0], W=grid[1])
    return trace, dec_cfg, pe_cfg, (masks, iou)


def matches(value, expected) -> bool:
    """A recorded value against an evaluated spec (tuples of ints, nested tuples, None)."""
    if expected is None:
        return value is None
    if isinstance(value, TensorInfo):
        return value.shape == expected
    if isinstance(value, tuple) and not isinstance(value, TensorInfo):
        return len(value) == len(expected) and all(matches(v, e) for v, e in zip(value, expected))
    return False


def assert_contract(trace, dec_cfg, pe_cfg) -> set:
    """Every row has a contract entry, and its inputs and output match it; returns the entries hit."""
    values = {"decoder": dec_cfg.symbols(), "prompt_encoder": pe_cfg.symbols()}
    hit = set()
    for row in trace:
        assert row.status == "ok", row
        entry = row.entry
        assert entry is not None, f"no contract entry for {row.path} ({row.module_class})"
        hit.add((row.info.component, entry.path))
        vals = values[row.info.component]
        want = sc.evaluate(entry.out, vals, entry.bind)
        assert matches(row.output, want), f"{row.path}: out {row.output} but the contract says {want}"
        inputs = row.inputs
        for name, spec in sc.hook_inputs(entry).items():
            got = inputs[name]
            if got is None:  # an optional prompt left out
                continue
            want = sc.evaluate(spec, vals, entry.bind)
            assert matches(got, want), f"{row.path}: input {name} {got} but the contract says {want}"
        # the tracer's own labelling agrees
        assert row.contract == "ok", row
    return hit


GRID = [
    dict(),  # one click, SAM's configuration
    dict(B=3, points=1),
    dict(B=2, points=3, box=True),
    dict(B=2, points=0, box=True),
    dict(B=1, points=0, box=False),  # no prompt at all: N' = 0, T = 5
    dict(B=2, points=2, mask=True, grid=(16, 16)),
    dict(B=2, points=1, box=True, mask=True, multimask=False, grid=(16, 16)),
    dict(B=3, points=2, grid=(16, 24)),  # non-square grid
    dict(B=2, points=1, box=True, grid=(24, 16), paired=True),  # one image per prompt set
    dict(B=2, points=2, heads=4, depth=3, grid=(16, 16)),  # non-default heads and depth
    dict(B=1, points=1, heads=16, depth=1, grid=(8, 12), multimask=False, mask=True),
]


@pytest.mark.parametrize("config", GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_grid_matches_contract(config):
    trace, dec_cfg, pe_cfg, (masks, iou) = run_traced(**config)
    hit = assert_contract(trace, dec_cfg, pe_cfg)
    # every decoder entry ran (depth 0 layers aside), and the mask path only with a mask prompt
    dec_entries = {("decoder", e.path) for e in sc.DECODER_CONTRACT}
    assert dec_entries <= hit, dec_entries - hit
    mask_entries = {("prompt_encoder", e.path) for e in sc.PROMPT_ENCODER_CONTRACT
                    if e.path.startswith("mask_downscaling")}
    assert (mask_entries <= hit) == config.get("mask", False)
    # and the number of rows is what the model's structure says: one per called module
    layers = [r for r in trace if r.path.startswith("mask_decoder.transformer.layers.") and r.depth == 2]
    assert len(layers) == config.get("depth", 2)
    K = 3 if config.get("multimask", True) else 1
    assert masks.shape == (dec_cfg.B, K, 4 * dec_cfg.H, 4 * dec_cfg.W)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 3), points=st.integers(0, 4), box=st.booleans(), mask=st.booleans(),
       multimask=st.booleans(), heads=st.sampled_from([4, 8]), depth=st.integers(1, 2),
       grid=st.sampled_from([(8, 8), (8, 12)]), paired=st.booleans())
def test_generated_prompts_match_contract(B, points, box, mask, multimask, heads, depth, grid, paired):
    trace, dec_cfg, pe_cfg, _ = run_traced(B=B, points=points, box=box, mask=mask, multimask=multimask,
                                           heads=heads, depth=depth, grid=grid,
                                           paired=paired and (points > 0 or box or mask))
    assert_contract(trace, dec_cfg, pe_cfg)


def test_sam_numbers_from_the_docs():
    """The numbers the issue states for SAM's configuration, read off a real traced run."""
    trace, *_ = run_traced(B=1, points=1)
    shape = {r.path: r.output_shape for r in trace}
    sa = "mask_decoder.transformer.layers.0.self_attn"
    assert shape[f"{sa}.q_proj"] == (1, 7, 256)  # 256 internal channels
    assert shape[f"{sa}.hook_q"] == (1, 8, 7, 32)  # 32 per head
    for xa in ("mask_decoder.transformer.layers.0.cross_attn_token_to_image",
               "mask_decoder.transformer.layers.1.cross_attn_image_to_token",
               "mask_decoder.transformer.final_attn_token_to_image"):
        assert shape[f"{xa}.q_proj"][-1] == 128  # downsampled to 128
        assert shape[f"{xa}.hook_q"][1:] in ((8, 7, 16), (8, 4096, 16))  # 16 per head
    assert shape["mask_decoder.output_upscaling.0"] == (1, 64, 128, 128)
    assert shape["mask_decoder.output_upscaling.3"] == (1, 32, 256, 256)
    assert shape["mask_decoder.hook_masks"] == (1, 4, 256, 256)  # before the multimask slice
    assert trace.find("mask_decoder")[0].output[0].shape == (1, 3, 256, 256)  # after
    assert shape["prompt_encoder.hook_sparse"] == (1, 2, 256)  # one click + the padding point


@pytest.mark.parametrize("points,box,n_sparse", [(1, False, 2), (4, False, 5), (1, True, 3), (3, True, 5),
                                                 (0, True, 2), (0, False, 0)])
def test_sparse_length_rule(points, box, n_sparse):
    assert sc.sparse_length(points or None, box) == n_sparse
    prompt_encoder, _ = models()
    prompts = example_prompts(points=points, box=box, batch=2)
    sparse, _ = prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=None)
    assert sparse.shape[1] == n_sparse


def test_tracer_flags_a_wrong_contract(monkeypatch):
    """A contract that disagrees with the model shows as a mismatch (so the checks above can fail)."""
    wrong = sc.Entry("hook_tokens", "B M C", "deliberately wrong")
    real_lookup = registry.lookup

    def lookup(component, path):
        return wrong if (component, path) == ("decoder", "hook_tokens") else real_lookup(component, path)

    monkeypatch.setattr(registry, "lookup", lookup)
    trace, *_ = run_traced(B=2, points=1, grid=(8, 8))
    bad = trace.mismatches()
    assert [r.path for r in bad] == ["mask_decoder.hook_tokens"]
    assert "7 x 256 [contract: B x M x C = 2 x 4 x 256]" in trace.to_text()
    with pytest.raises(AssertionError):
        assert_contract(trace, *run_traced(B=2, points=1, grid=(8, 8))[1:3])


def test_shapes_doc_is_current():
    text = (ROOT / markdown.SHAPES_DOC).read_text(encoding="utf-8") if (ROOT / markdown.SHAPES_DOC).exists() else ""
    assert text == markdown.render_shapes_markdown(), (
        f"{markdown.SHAPES_DOC} is stale: regenerate it with `{markdown.REGENERATE}` and commit it"
    )


def test_shapes_doc_check_command(tmp_path):
    from sam_explain.cli import main

    out = tmp_path / "shapes.md"
    assert main(["shapes-doc", "--output", str(out)]) == 0
    assert main(["shapes-doc", "--output", str(out), "--check"]) == 0
    out.write_text(out.read_text() + "edited\n")
    assert main(["shapes-doc", "--output", str(out), "--check"]) == 1


def test_torchinfo_parameter_counts():
    torchinfo = pytest.importorskip("torchinfo")
    prompt_encoder, decoder = models(grid=(8, 8))
    prompts = example_prompts(points=2, box=True, batch=2, image_size=prompt_encoder.input_image_size)
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=None)
    stats = torchinfo.summary(
        decoder, verbose=0, device="cpu",
        input_data={"image_embeddings": torch.randn(1, 256, 8, 8), "image_pe": prompt_encoder.get_dense_pe(),
                    "sparse_prompt_embeddings": sparse, "dense_prompt_embeddings": dense,
                    "multimask_output": True},
    )
    assert stats.total_params == 4_058_340
    with_mask = example_prompts(points=2, box=True, mask=True, batch=2, image_size=prompt_encoder.input_image_size,
                                mask_size=prompt_encoder.mask_input_size)
    stats = torchinfo.summary(prompt_encoder, verbose=0, device="cpu",  # torchinfo cannot take None inputs
                              input_data={"points": with_mask.points, "boxes": with_mask.boxes,
                                          "masks": with_mask.masks})
    assert stats.total_params == 6_220
    doc = markdown.render_shapes_markdown()
    assert "| 4,058,340 |" in doc and "| 6,220 |" in doc


def test_documented_tensors_at_a_glance():
    """Every named tensor of docs/shapes.md's first table, against a real run with SAM's numbers."""
    trace, dec_cfg, pe_cfg, _ = run_traced(B=1, points=1, mask=True)
    values = {"decoder": dec_cfg.symbols(), "prompt_encoder": pe_cfg.symbols()}
    doc = markdown.render_shapes_markdown()
    for name, (component, path, which) in sc.DOCUMENTED.items():
        rows = [r for r in trace if r.info.component == component and r.entry is not None
                and r.entry.path == path]
        assert rows, f"{name}: no traced call of {path}"
        entry = rows[0].entry
        want = sc.evaluate(entry.out, values[component], entry.bind)
        for r in rows:
            assert matches(r.output, want), f"{name}: {r.path} gave {r.output}, the docs say {want}"
        numbers = " x ".join(map(str, want)) if isinstance(want[0], int) else None
        if numbers:
            assert f"| {name} |" in doc and f"| {numbers} |" in doc
