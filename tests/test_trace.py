"""The shape tracer: hooks in and out, outputs untouched, tables in every format, the CLI."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

import sam_explain
from sam_explain import ShapeError, trace_prompt, trace_shapes
from sam_explain.cli import main
from sam_explain.prompts import example_prompts, run_decoder
from sam_explain.modeling import build_mask_decoder, build_prompt_encoder
from sam_explain.testing import build_official_pair

ROOT = Path(__file__).resolve().parents[1]
GRID = (16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny forwards: extra threads only add contention


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    return build_prompt_encoder(image_embedding_size=GRID, input_image_size=(256, 256)), build_mask_decoder()


def decoder_inputs(prompt_encoder, B=3, points=1, box=False, mask=False, dtype=torch.float32, device="cpu"):
    prompts = example_prompts(points=points, box=box, mask=mask, batch=B, image_size=(256, 256),
                              mask_size=prompt_encoder.mask_input_size).to(device)
    if prompts.masks is not None:
        prompts.masks = prompts.masks.to(dtype)
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=prompts.masks)
    gen = torch.Generator().manual_seed(1)
    return dict(image_embeddings=torch.randn(1, 256, *GRID, generator=gen).to(device=device, dtype=dtype),
                image_pe=prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense)


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("multimask", [True, False])
def test_outputs_bitwise_equal_and_hooks_removed(parts, multimask):
    prompt_encoder, decoder = parts
    inputs = decoder_inputs(prompt_encoder, box=True)
    with torch.no_grad():
        plain = decoder(**inputs, multimask_output=multimask)
        with trace_shapes(decoder) as trace:
            assert not no_hooks(decoder)
            traced = decoder(**inputs, multimask_output=multimask)
    assert no_hooks(decoder)
    for a, b in zip(plain, traced):
        assert torch.equal(a, b)
    assert len(trace) == 135  # every module call of SAM's decoder, depth 2
    assert trace[0].path == "" and trace[0].module_class == "MaskDecoder"
    assert [r.index for r in trace] == list(range(len(trace)))
    assert not trace.mismatches()


def test_forward_that_raises_leaves_no_hooks(parts):
    prompt_encoder, decoder = parts
    inputs = decoder_inputs(prompt_encoder)
    inputs["dense_prompt_embeddings"] = inputs["dense_prompt_embeddings"][:1]  # B = 1 where 3 are expected
    seen = []
    users_hook = decoder.transformer.register_forward_hook(lambda m, a, out: seen.append(len(out)))
    with pytest.raises(ShapeError, match="dense_prompt_embeddings must be B x C x H x W"):
        with trace_shapes(decoder) as trace:
            decoder(**inputs, multimask_output=True)
    assert list(decoder.transformer._forward_hooks) == [users_hook.id]  # the user's hook stays
    users_hook.remove()
    assert no_hooks(decoder)
    assert len(trace) == 1 and trace[0].status == "raised"
    assert "(raised)" in trace.to_text()


def test_exception_inside_a_nested_call_marks_the_open_calls():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), Boom()))
    with pytest.raises(RuntimeError):
        with trace_shapes(model) as trace:
            model(torch.ones(2, 4))
    assert [(r.path, r.status) for r in trace] == [("", "raised"), ("0", "ok"), ("1", "raised"),
                                                   ("1.0", "ok"), ("1.1", "raised")]
    assert no_hooks(model)


def test_nested_and_repeated_tracers(parts):
    prompt_encoder, decoder = parts
    inputs = decoder_inputs(prompt_encoder, B=1)
    with torch.no_grad():
        with trace_shapes(decoder) as outer:
            decoder(**inputs, multimask_output=True)
            with trace_shapes(decoder.transformer) as inner:
                decoder(**inputs, multimask_output=False)
            assert not no_hooks(decoder)  # the inner tracer removed only its own hooks
            decoder(**inputs, multimask_output=True)
        assert no_hooks(decoder)
        with trace_shapes(decoder) as again:
            decoder(**inputs, multimask_output=True)
    assert len(outer) == 3 * 135 and {r.call for r in outer} == {0, 1, 2}
    assert len(inner) == 1 + 2 * 42 + 11 + 1 and inner[0].path == "" and inner[0].module_class == "TwoWayTransformer"
    assert [r.output for r in outer.filter(call=0)] == [r.output for r in again]
    assert outer.filter(call=1)[0].output[0].shape == (1, 1, 64, 64)  # single mask
    # rows of the inner tracer are not labelled (no MaskDecoder above them), and not wrong
    assert all(r.contract is None for r in inner)
    tracer = trace_shapes(decoder)
    with tracer:
        with pytest.raises(RuntimeError, match="already active"):
            tracer.__enter__()
    assert no_hooks(decoder)


def test_no_tensor_is_kept_unless_asked(parts):
    prompt_encoder, decoder = parts
    inputs = decoder_inputs(prompt_encoder, B=2)
    for keep in (False, True):
        with torch.no_grad(), trace_shapes(decoder, keep_tensors=keep) as trace:
            masks, _ = decoder(**inputs, multimask_output=True)
        ref = weakref.ref(masks)
        del masks
        gc.collect()
        if keep:
            assert ref() is not None and trace[0].tensor[0] is ref()
            assert trace.find("hook_masks")[0].tensor.shape == (2, 4, 64, 64)
        else:
            assert ref() is None
            assert all(r.tensor is None for r in trace)


def test_labels_in_symbols_and_numbers(parts):
    prompt_encoder, decoder = parts
    inputs = decoder_inputs(prompt_encoder, B=3, points=1)
    with torch.no_grad(), trace_shapes(decoder) as trace:
        decoder(**inputs, multimask_output=True)
    text = trace.to_text()
    assert "B x h x T x d = 3 x 8 x 7 x 32" in text  # the self-attention
    assert "B x h x T x d = 3 x 8 x 7 x 16" in text  # a cross-attention
    assert "B x h x T x HW = 3 x 8 x 7 x 256" in text
    assert "(B x K x 4H x 4W = 3 x 3 x 64 x 64, B x K = 3 x 3)" in text
    assert "multimask_output: True" in text
    row = trace.find("transformer.layers.0.cross_attn_token_to_image.hook_probs")[0]
    assert row.contract == "ok" and row.kind == "hook" and row.depth == 4
    assert row.output_check.symbols == ("B", "h", "T", "HW")
    assert row.step == "softmax over the HW keys"
    assert "float32" in text and "cpu" in text


def test_formats(parts):
    prompt_encoder, decoder = parts
    inputs = decoder_inputs(prompt_encoder, B=2, points=2, box=True)
    with torch.no_grad(), trace_shapes(decoder) as trace:
        decoder(**inputs, multimask_output=True)
    html = trace._repr_html_()
    assert html.count("<tr") == len(trace) + 1 and "B x h x T x d = 2 x 8 x 9 x 32" in html
    md = trace.to_markdown()
    assert md.count("\n| ") == len(trace) + 1 and "| `transformer.layers.1.norm4` |" in md
    data = json.loads(trace.to_json())
    assert data["schema"] == "sam-explain/shape-trace" and data["version"] == 1
    assert len(data["rows"]) == len(trace)
    q = next(r for r in data["rows"] if r["path"] == "transformer.layers.0.self_attn.hook_q")
    assert q["output"] == {"type": "tensor", "shape": [2, 8, 9, 32], "dtype": "float32", "device": "cpu",
                           "symbols": ["B", "h", "T", "d"], "expected": [2, 8, 9, 32]}
    root = data["rows"][0]
    assert root["output"]["type"] == "tuple" and root["inputs"][4] == {
        "name": "multimask_output", "value": {"type": "value", "repr": "True"}}
    assert root["contract"] == "ok" and root["parent"] is None and root["kind"] == "module"


def test_filter_and_collapse(parts):
    prompt_encoder, decoder = parts
    inputs = decoder_inputs(prompt_encoder, B=1)
    with torch.no_grad(), trace_shapes(decoder) as trace:
        decoder(**inputs, multimask_output=True)
    layer0 = trace.filter("transformer.layers.0")
    assert len(layer0) == 42 and all(r.path.startswith("transformer.layers.0") for r in layer0)
    assert len(trace.filter("transformer.layers.0.self_attn", kind="hook")) == 6
    assert [r.depth for r in trace.filter(max_depth=1)] == [0] + [1] * 18  # 11 hook points, transformer, upscaling, 4 + 1 MLPs
    assert {r.path.rsplit(".", 1)[-1] for r in trace.filter("*.hook_probs")} == {"hook_probs"}
    assert len(trace.filter("*.hook_probs")) == 7  # 3 attentions x 2 layers + the final one
    assert all(r.depth >= 3 for r in trace.filter(min_depth=3))
    folded = trace.collapse()
    paths = [r.path for r in folded]
    assert "transformer.layers.1" in paths and "transformer.layers.1.norm1" not in paths
    assert "output_hypernetworks_mlps.1-3" in paths and "output_hypernetworks_mlps.2" not in paths
    assert len(folded) == len(trace) - 42 - 12 + 2
    summary = folded.find("transformer.layers.1")[0]
    assert summary.kind == "collapsed" and summary.collapsed == ("transformer.layers.0", 1, 42)
    assert "same shapes as transformer.layers.0" in folded.to_text()
    assert "collapsed" in json.dumps(folded.to_dict())


def test_generic_module_and_mapping(parts):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
    with trace_shapes(model) as trace:
        out = model(torch.randn(5, 3, 8, 8))
    assert [r.output_shape for r in trace] == [(5, 2), (5, 8, 6, 6), (5, 8, 6, 6), (5, 288), (5, 2)]
    assert trace[4].step == "in_features=288, out_features=2, bias=True"
    assert all(r.contract is None for r in trace) and "5 x 288" in trace.to_text()
    assert out.shape == (5, 2)
    prompt_encoder, decoder = parts
    with trace_shapes({"prompt_encoder": prompt_encoder, "decoder": decoder}) as both:
        decoder(**decoder_inputs(prompt_encoder, B=2, mask=True), multimask_output=True)
    assert both[0].path == "prompt_encoder"  # decoder_inputs() ran the prompt encoder inside the block
    assert {r.path.split(".")[0] for r in both} == {"prompt_encoder", "decoder"}
    assert not both.mismatches()
    with pytest.raises(TypeError, match="nn.Module or a mapping"):
        trace_shapes([decoder])


def test_official_decoder_is_labelled_too():
    decoder, prompt_encoder = build_official_pair(image_embedding_size=(8, 8), input_image_size=(128, 128))
    coords = torch.tensor([[[30.0, 40.0], [70.0, 90.0]]])
    labels = torch.tensor([[1, 0]])
    with torch.no_grad(), trace_shapes({"pe": prompt_encoder, "dec": decoder}) as trace:
        sparse, dense = prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        decoder(image_embeddings=torch.randn(1, 256, 8, 8), image_pe=prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
    checked = [r for r in trace if r.contract is not None]
    assert len(checked) > 60 and not trace.mismatches()
    assert trace.find("dec.transformer.layers.0.norm4")[0].output_check.symbols == ("B", "HW", "C")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_on_cpu(parts, dtype):
    prompt_encoder, decoder = parts
    pe, dec = build_prompt_encoder(image_embedding_size=GRID, input_image_size=(256, 256)), build_mask_decoder()
    pe.load_state_dict(prompt_encoder.state_dict())
    dec.load_state_dict(decoder.state_dict())
    torch_dtype = getattr(torch, dtype)
    pe, dec = pe.to(torch_dtype), dec.to(torch_dtype)
    trace = trace_prompt(points=2, box=True, mask=True, batch=2, decoder=dec, prompt_encoder=pe,
                         include_prompt_encoder=True)
    assert not trace.mismatches() and all(r.status == "ok" for r in trace)
    assert trace.find("mask_decoder.hook_masks")[0].output.dtype == torch_dtype
    assert dtype in trace.to_text()
    inputs = decoder_inputs(pe, B=2, dtype=torch_dtype)
    with torch.no_grad():
        plain = dec(**inputs, multimask_output=True)
        with trace_shapes(dec):
            traced = dec(**inputs, multimask_output=True)
    assert all(torch.equal(a, b) for a, b in zip(plain, traced))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda(parts, dtype):
    prompt_encoder, decoder = parts
    pe = build_prompt_encoder(image_embedding_size=GRID, input_image_size=(256, 256))
    pe.load_state_dict(prompt_encoder.state_dict())
    dec = build_mask_decoder()
    dec.load_state_dict(decoder.state_dict())
    pe, dec = pe.to("cuda", dtype), dec.to("cuda", dtype)
    inputs = decoder_inputs(pe, B=2, dtype=dtype, device="cuda")
    with torch.no_grad():
        plain = dec(**inputs, multimask_output=True)
        with trace_shapes(dec) as trace:
            traced = dec(**inputs, multimask_output=True)
    assert all(torch.equal(a, b) for a, b in zip(plain, traced))
    assert not trace.mismatches() and "cuda:0" in trace.to_text()


def test_trace_prompt_one_liner():
    trace = sam_explain.trace_prompt(points=2, box=True, batch=2)
    assert trace.title.startswith("B = 2, 2 point(s), a box")
    assert trace.find("hook_tokens")[0].output_shape == (2, 9, 256)
    assert trace.result[0].shape == (2, 3, 256, 256) and not trace.mismatches()


def test_cli_trace(capsys):
    assert main(["trace", "--batch", "2", "--points", "3", "--box", "--single-mask",
                 "--path", "transformer.layers.0.self_attn", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["rows"]) == 11
    assert data["rows"][4]["output"]["shape"] == [2, 8, 10, 32]  # T = 5 + 3 + 2
    assert main(["trace", "--mask", "--prompt-encoder", "--depth", "1", "--format", "markdown",
                 "--collapse"]) == 0
    md = capsys.readouterr().out
    assert "`prompt_encoder.mask_downscaling`" in md and "B x 1 x 4H x 4W = 1 x 1 x 256 x 256" in md
    assert main(["trace", "--hooks-only", "--width", "40"]) == 0
    text = capsys.readouterr().out
    assert "HookPoint" in text and "Linear" not in text
    with pytest.raises(SystemExit) as exit_:  # argparse refuses it: status 2
        main(["trace", "--batch", "0"])
    assert exit_.value.code == 2


def test_python_m_trace_default():
    out = subprocess.run([sys.executable, "-m", "sam_explain", "trace", "--depth", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "B x K x 4H x 4W = 1 x 3 x 256 x 256" in out.stdout
    assert "sparse_prompt_embeddings: B x N' x C = 1 x 2 x 256" in out.stdout


def test_json_schema_doc_matches_the_output():
    """The example row in docs/tracing.md is a real row of the default one-click trace."""
    doc = (ROOT / "docs" / "tracing.md").read_text(encoding="utf-8")
    start = doc.index("```json\n") + len("```json\n")
    example = json.loads(doc[start:doc.index("```", start)])
    data = sam_explain.trace_prompt().to_dict()
    assert example["schema"] == data["schema"] and example["version"] == data["version"]
    assert example["title"] == data["title"]
    assert example["rows"][0] == data["rows"][example["rows"][0]["index"]]


def test_module_info_cache_follows_the_model():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with trace_shapes(model) as first:
        model(torch.ones(1, 4))
    model[1] = nn.Sequential(nn.Tanh(), nn.Linear(4, 2))  # the tree changed: re-read it
    with trace_shapes(model) as second:
        model(torch.ones(1, 4))
    assert [r.path for r in first] == ["", "0", "1"]
    assert [(r.path, r.module_class, r.depth) for r in second] == [
        ("", "Sequential", 0), ("0", "Linear", 1), ("1", "Sequential", 1), ("1.0", "Tanh", 2), ("1.1", "Linear", 2)]
    ref = weakref.ref(model)
    del model, first, second
    gc.collect()
    assert ref() is None  # the cache keeps no model alive


def test_tracing_leaves_no_reference_cycles(parts):
    """Rows point down to their component's row, never back to the trace: everything is freed
    by reference counting, without waiting for the cycle collector."""
    prompt_encoder, decoder = parts
    inputs = decoder_inputs(prompt_encoder, B=1)
    with torch.no_grad():
        with trace_shapes(decoder):
            decoder(**inputs, multimask_output=True)
        gc.collect()
        gc.disable()
        try:
            with trace_shapes(decoder) as trace:
                decoder(**inputs, multimask_output=True)
            trace.collapse().to_text()
            trace.filter("transformer").to_html()
            del trace
            assert gc.collect() == 0
        finally:
            gc.enable()


def test_sam_wrapper_is_traced_and_labelled(parts):
    """A whole Sam (tiny image encoder): the decoder's and prompt encoder's rows are labelled
    under their paths, the image encoder's rows show numbers only, dict inputs are shown."""
    from sam_explain.modeling.image_encoder import ImageEncoderViT
    from sam_explain.modeling.sam import Sam

    torch.manual_seed(0)
    encoder = ImageEncoderViT(img_size=128, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=256)
    prompt_encoder = build_prompt_encoder(image_embedding_size=(8, 8), input_image_size=(128, 128))
    sam = Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=parts[1]).eval()
    batched = [{"image": torch.rand(3, 128, 128) * 255, "original_size": (100, 128),
                "point_coords": torch.tensor([[[40.0, 50.0], [90.0, 60.0]]]), "point_labels": torch.tensor([[1, 0]])}]
    with trace_shapes(sam) as trace:
        out = sam(batched, multimask_output=True)
    assert out[0]["masks"].shape == (1, 3, 100, 128)
    assert not trace.mismatches()
    assert trace.find("mask_decoder.transformer.layers.0.self_attn.hook_q")[0].contract == "ok"
    assert trace.find("prompt_encoder.hook_sparse")[0].output_check.symbols == ("B", "N'", "C")
    assert all(r.contract is None for r in trace.filter("image_encoder"))
    text = trace.filter(max_depth=0).to_text()
    assert "batched_input: ({image: 3 x 128 x 128, original_size: (100, 128)" in text
    assert json.loads(trace.filter(max_depth=0).to_json())["rows"][0]["inputs"][0]["value"]["items"][0]["type"] == "dict"
    assert no_hooks(sam)


def test_tracing_the_image_encoder_changes_nothing_it_computes():
    """Shape tracing (and a global module hook, as torchinfo registers) leaves the encoder on its fused
    attention: the embedding is bitwise the same. Asked for (on_demand=True), the maps are traced."""

    from torch.nn.modules.module import register_module_forward_hook

    from sam_explain.modeling.build import make_sam
    from sam_explain.testing import TINY_SAM

    torch.manual_seed(0)
    encoder = make_sam(**TINY_SAM).image_encoder
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        plain = encoder(x)
        with trace_shapes(encoder) as trace:
            traced = encoder(x)
        handle = register_module_forward_hook(lambda module, args, out: None)
        try:
            hooked = encoder(x)
        finally:
            handle.remove()
        with trace_shapes(encoder, on_demand=True) as full:
            encoder(x)
    assert torch.equal(plain, traced) and torch.equal(plain, hooked)
    assert not trace.filter("*.hook_probs") and not trace.mismatches()
    assert [r.output_shape for r in full.find("blocks.1.attn.hook_probs")] == [(1, 2, 64, 64)]


def test_two_threads_tracing_one_decoder_keep_their_own_rows(parts):
    import threading

    prompt_encoder, decoder = parts
    image = torch.randn(1, 256, *GRID)
    traces, errors = {}, []
    barrier = threading.Barrier(2)

    def work(B: int) -> None:
        try:
            prompts = example_prompts(points=1, batch=B, image_size=(256, 256))
            with torch.no_grad(), trace_shapes(decoder) as trace:
                barrier.wait()
                for _ in range(3):
                    run_decoder(prompt_encoder, decoder, image, prompts)
            traces[B] = trace
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(B,)) for B in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for B, trace in traces.items():
        assert {r.call for r in trace} == {0, 1, 2} and all(r.status == "ok" for r in trace)
        assert {r.output_shape[0] for r in trace.find("hook_tokens")} == {B}  # only this thread's prompt sets
        assert len(trace) == 3 * len(trace.filter(call=0))
