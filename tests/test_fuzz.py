"""Malformed shapes, dtypes, values and files thrown at every public entry point (hypothesis).

Each call must either return a correct result (the documented shapes, finite values) or raise one
of the project's typed errors (ShapeError, CheckpointError, AttentionMemoryError, or the ValueError /
TypeError the docs name), and afterwards the models' parameters and every hook (the modules' own
and the global ones) must be as they were. Derandomized, so CI sees the same cases every run.
"""

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.modules import module as torch_module

from sam_explain import (
    AttentionMemoryError, SamPredictor, ShapeError, build_mask_decoder, build_prompt_encoder, record_attention,
    trace_shapes,
)
from sam_explain.checkpoint import CheckpointError, load_sam_checkpoint
from sam_explain.modeling.build import make_sam, randomize_
from sam_explain.testing import TINY_SAM

FUZZ = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TYPED = (ShapeError, CheckpointError, AttentionMemoryError, ValueError, TypeError)
C, GRID = 32, 8  # a small decoder: C = 32, an 8 x 8 grid (4H = 32), 128 x 128 inputs


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    decoder = randomize_(build_mask_decoder(transformer_dim=C, num_heads=2, mlp_dim=64, iou_head_hidden_dim=32))
    prompt_encoder = randomize_(build_prompt_encoder(embed_dim=C, image_embedding_size=(GRID, GRID),
                                                     input_image_size=(128, 128)), 1)
    sam = make_sam(**TINY_SAM)
    return decoder.eval(), prompt_encoder.eval(), sam


def snapshot(*modules):
    """Everything a failed call must leave as it was: parameters, buffers and hooks."""
    state = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
             for mod in modules for m in mod.modules()]
    globals_ = (len(torch_module._global_forward_hooks), len(torch_module._global_forward_pre_hooks))
    return state, hooks, globals_


def assert_unchanged(before, *modules):
    state, hooks, globals_ = snapshot(*modules)
    assert hooks == before[1] and globals_ == before[2], "a hook was left behind"
    for old, new in zip(before[0], state):
        assert all(torch.equal(old[k], new[k]) for k in old), "a parameter changed"


# --- tensors that may be wrong in every way ---

DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.bool, torch.complex64]


@st.composite
def tensors(draw, shape):
    """A tensor of ``shape`` (sometimes of another shape), some dtype, sometimes with a NaN or an inf."""
    if draw(st.integers(0, 3)) == 0:
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=5)))
    elif draw(st.integers(0, 3)) == 0:
        shape = tuple(s + draw(st.sampled_from([-1, 1])) if s > 1 else s for s in shape)
    dtype = draw(st.sampled_from(DTYPES)) if draw(st.integers(0, 2)) == 0 else torch.float32
    t = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99)))) * 50
    if t.numel() and draw(st.integers(0, 3)) == 0:
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return t.to(dtype)


def anything(shape):
    return st.one_of(tensors(shape), tensors(shape), tensors(shape),
                     st.sampled_from([None, 3, "x", [1.0, 2.0], np.zeros(shape, dtype=np.float32)]))


def check_decoder_result(out, B, K):
    masks, iou = out
    assert masks.shape == (B, K, 4 * GRID, 4 * GRID) and iou.shape == (B, K)
    assert torch.isfinite(masks).all() and torch.isfinite(iou).all()


@FUZZ
@given(data=st.data())
def test_prompt_encoder_and_decoder(models, data):
    decoder, prompt_encoder, _ = models
    B = data.draw(st.integers(1, 3))
    N = data.draw(st.integers(1, 3))
    coords = data.draw(anything((B, N, 2)))
    labels = data.draw(st.one_of(tensors((B, N)), st.just(torch.ones(B, N, dtype=torch.int64)),
                                 st.just(torch.full((B, N), 0.9)), st.just(torch.full((B, N), 2)),
                                 st.just(torch.ones(B, N, dtype=torch.int64)[:, :1])))
    boxes = data.draw(st.one_of(st.none(), anything((B, 4))))
    masks = data.draw(st.one_of(st.none(), anything((B, 1, 4 * GRID, 4 * GRID))))
    multimask = data.draw(st.sampled_from([True, False, np.bool_(True), 1, "yes"]))
    before = snapshot(decoder, prompt_encoder)
    try:
        with torch.no_grad(), record_attention(decoder, max_bytes=data.draw(st.sampled_from([0, 1 << 30]))):
            sparse, dense = prompt_encoder(points=(coords, labels), boxes=boxes, masks=masks)
            image = data.draw(anything((1, C, GRID, GRID)))
            out = decoder(image, prompt_encoder.get_dense_pe(), sparse, dense, multimask)
    except TYPED:
        pass
    else:
        assert labels.dtype != torch.bool and bool(((labels == 0) | (labels == 1) | (labels == -1)).all())
        check_decoder_result(out, B, 3 if multimask else 1)
    assert_unchanged(before, decoder, prompt_encoder)


@FUZZ
@given(data=st.data())
def test_decoder_alone_under_a_trace(models, data):
    decoder, prompt_encoder, _ = models
    B = data.draw(st.integers(1, 3))
    args = [data.draw(anything(s)) for s in ((data.draw(st.sampled_from([1, B])), C, GRID, GRID), (1, C, GRID, GRID),
                                             (B, 2, C), (B, C, GRID, GRID))]
    before = snapshot(decoder)
    try:
        with torch.no_grad(), trace_shapes(decoder):
            out = decoder(*args, multimask_output=True)
    except TYPED:
        pass
    else:
        check_decoder_result(out, B, 3)
    assert_unchanged(before, decoder)


@FUZZ
@given(data=st.data())
def test_predictor(models, data):
    """One argument at a time is wrong (or none): each wrong kind meets otherwise sound calls."""
    _, _, sam = models
    predictor = SamPredictor(sam)
    h, w, N = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 3))
    wrong = data.draw(st.sampled_from([None, "image", "coords", "labels", "box", "mask", "multimask"]))
    invalid = {
        "image": [np.zeros((h, w), np.uint8), np.zeros((h, w, 3), np.float32), np.zeros((h, w, 4), np.uint8),
                  np.zeros((0, w, 3), np.uint8), "image.png"],
        "coords": [np.full((N, 2), np.nan), np.full((N, 3), 5.0), np.full((N + 1, 2), 5.0), None],
        "labels": [np.full(N, 0.9), np.full(N, 2), np.ones(N, bool), None],
        "box": [np.array([np.inf, 0, 1, 1]), np.zeros(3)],
        "mask": [np.zeros((1, 32, 32), bool), np.zeros((1, 16, 16), np.float32), np.full((1, 32, 32), np.nan, np.float32)],
        "multimask": [1, "no", None],
    }
    valid = {"image": np.zeros((h, w, 3), np.uint8), "coords": np.full((N, 2), 5.0), "labels": np.ones(N, np.int64),
             "box": data.draw(st.sampled_from([None, np.array([1.0, 1.0, 9.0, 9.0])])),
             "mask": data.draw(st.sampled_from([None, np.zeros((1, 32, 32), np.float32)])),
             "multimask": data.draw(st.sampled_from([True, False, np.bool_(False)]))}
    arg = {name: data.draw(st.sampled_from(invalid[name])) if name == wrong else value for name, value in valid.items()}
    before = snapshot(sam)
    try:
        predictor.set_image(arg["image"])
        masks, iou, low = predictor.predict(point_coords=arg["coords"], point_labels=arg["labels"], box=arg["box"],
                                            mask_input=arg["mask"], multimask_output=arg["multimask"])
    except TYPED:
        assert wrong is not None, "a sound call was refused"
    else:
        assert wrong is None, f"a wrong {wrong} was taken: {arg[wrong]!r}"
        k = 3 if arg["multimask"] else 1
        assert masks.shape == (k, h, w) and iou.shape == (k,) and low.shape == (k, 32, 32)
        assert np.isfinite(iou).all() and np.isfinite(low).all()
    assert_unchanged(before, sam)


@FUZZ
@given(data=st.data())
def test_sam_forward(models, data):
    _, _, sam = models
    record = {"image": data.draw(anything((3, 96, 128))),
              "original_size": data.draw(st.sampled_from([(90, 120), (0, 120), (90,), "90x120", (90.5, 120)]))}
    if data.draw(st.booleans()):
        record["point_coords"] = data.draw(anything((1, 1, 2)))
        if data.draw(st.integers(0, 4)):
            record["point_labels"] = torch.ones(1, 1, dtype=torch.int64)
    if data.draw(st.integers(0, 5)) == 0:
        record.pop("original_size")
    before = snapshot(sam)
    try:
        out = sam([record], multimask_output=data.draw(st.sampled_from([True, False, "no"])))
    except TYPED:
        pass
    else:
        assert out[0]["masks"].shape[-2:] == tuple(record["original_size"])
    assert_unchanged(before, sam)


def serialised(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_checkpoint_files(models, data, tmp_path_factory):
    decoder, _, _ = models
    good = decoder.state_dict()
    key = data.draw(st.sampled_from(sorted(good)))
    kind = data.draw(st.sampled_from(["shape", "dtype", "nan", "drop", "extra", "zero", "bytes", "truncate",
                                      "wrap", "int_key", "list"]))
    sd = dict(good)
    if kind == "shape":
        sd[key] = torch.zeros(*(s + 1 for s in sd[key].shape)) if sd[key].dim() else torch.zeros(2)
    elif kind == "dtype":
        sd[key] = sd[key].to(data.draw(st.sampled_from([torch.int8, torch.bool, torch.complex64, torch.float16])))
    elif kind == "nan":
        sd[key] = torch.full_like(sd[key], math.nan)
    elif kind == "drop":
        sd.pop(key)
    elif kind == "extra":
        sd[f"transformer.layers.{data.draw(st.integers(2, 500))}.norm1.weight"] = torch.ones(C)
    elif kind == "zero":
        sd[key] = torch.zeros(0, *sd[key].shape[1:])
    blob = serialised({"model": sd, "epoch": 1} if kind == "wrap" else {0: torch.ones(1)} if kind == "int_key"
                      else [sd] if kind == "list" else sd)
    if kind == "bytes":
        blob = bytes(data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=64)))
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(1, len(blob) - 1))]
    path = tmp_path_factory.mktemp("fuzz") / "w.pth"
    path.write_bytes(blob)
    try:
        parts = load_sam_checkpoint(path, num_heads=2)
    except CheckpointError:
        assert kind != "wrap" and not (kind == "dtype" and sd[key].dtype == torch.float16)
    else:
        assert kind in ("wrap", "dtype"), kind  # the file was sound (float16 weights are fine)
        loaded = parts.mask_decoder.state_dict()
        assert all(torch.equal(loaded[k], sd[k].float()) for k in good)
