"""record_attention: every map of SAM's decoder, checked three ways (rows sum to 1, the softmax of
the captured q and k, the official code's own softmax with the same weights), plus its options,
its memory limit, and that it leaves the model as it was."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

from sam_explain.attention import (
    AttentionMemoryError, capture_attention, estimate_attention_bytes, record_attention,
    token_names,
)
from sam_explain.prompts import example_prompts
from sam_explain.modeling import build_mask_decoder, build_prompt_encoder
from sam_explain.shapes.check import ShapeError
from sam_explain.testing import build_official_pair, official_modeling

SITES = [
    "transformer.layers.0.self_attn",
    "transformer.layers.0.cross_attn_token_to_image",
    "transformer.layers.0.cross_attn_image_to_token",
    "transformer.layers.1.self_attn",
    "transformer.layers.1.cross_attn_token_to_image",
    "transformer.layers.1.cross_attn_image_to_token",
    "transformer.final_attn_token_to_image",
]


@pytest.fixture(scope="module")
def pair():
    """Ours and the official (decoder, prompt encoder), same random weights."""
    off_dec, off_pe = build_official_pair(seed=3)
    dec, pe = build_mask_decoder(), build_prompt_encoder()
    dec.load_state_dict(off_dec.state_dict())
    pe.load_state_dict(off_pe.state_dict())
    return dec, pe, off_dec, off_pe


def inputs(pe, B=2, points=2, box=True, seed=0):
    torch.manual_seed(seed)
    prompts = example_prompts(points=points, box=box, batch=B, seed=seed)
    sparse, dense = pe(points=prompts.points, boxes=prompts.boxes, masks=prompts.masks)
    emb = torch.randn(1, 256, 64, 64)
    return prompts, dict(image_embeddings=emb, image_pe=pe.get_dense_pe(),
                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)


def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_seven_maps_with_documented_shapes(pair):
    dec, pe, _, _ = pair
    _, kw = inputs(pe, B=2, points=2, box=True)
    T = 5 + 2 + 2
    with torch.no_grad(), record_attention(dec) as attn:
        dec(**kw, multimask_output=True)
    assert list(attn) == SITES
    expected = {"self_attn": (2, 8, T, T), "cross_attn_token_to_image": (2, 8, T, 4096),
                "cross_attn_image_to_token": (2, 8, 4096, T), "final_attn_token_to_image": (2, 8, T, 4096)}
    for name in SITES:
        assert tuple(attn[name].shape) == expected[name.split(".")[-1]], name
    assert attn.grid() == (64, 64)
    kinds = [attn.sites[n].kind for n in SITES]
    assert kinds == ["token_self", "token_to_image", "image_to_token"] * 2 + ["token_to_image"]


def test_rows_sum_to_one_and_equal_softmax_of_captured_q_k(pair):
    dec, pe, _, _ = pair
    _, kw = inputs(pe, B=2, points=3, box=False)
    with torch.no_grad(), record_attention(dec, with_qk=True) as attn:
        dec(**kw, multimask_output=False)
    assert set(attn.q) == set(attn.k) == set(SITES)
    for name, probs in attn.items():
        rows = probs.sum(-1)
        torch.testing.assert_close(rows, torch.ones_like(rows), rtol=0, atol=2e-6)
        q, k = attn.q[name], attn.k[name]  # B x h x N_q x d, B x h x N_k x d
        d = q.shape[-1]
        recomputed = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        torch.testing.assert_close(probs, recomputed, rtol=0, atol=1e-6)
        assert probs.min() >= 0


def official_softmaxes(off_dec, kw):
    """Run the official decoder and collect what its Attention modules' own torch.softmax returned.

    The official Attention.forward calls torch.softmax inline; we replace the ``torch`` name in the
    official transformer module by a proxy whose softmax records its result under the name of the
    Attention module that is running (set by a forward pre-hook)."""
    mod = sys.modules[type(off_dec.transformer).__module__]
    current, seen = {"name": None}, {}

    class TorchProxy(types.ModuleType):
        def __getattr__(self, item):
            return getattr(torch, item)

        @staticmethod
        def softmax(*args, **kwargs):
            out = torch.softmax(*args, **kwargs)
            seen[current["name"]] = out.detach().clone()
            return out

    attention_cls = official_modeling().transformer.Attention
    handles = []
    for name, m in off_dec.named_modules():
        if isinstance(m, attention_cls):
            handles.append(m.register_forward_pre_hook(lambda m_, a, n=name: current.__setitem__("name", n)))
    original = mod.torch
    mod.torch = TorchProxy("torch")
    try:
        with torch.no_grad():
            out = off_dec(**kw, multimask_output=True)
    finally:
        mod.torch = original
        for h in handles:
            h.remove()
    return seen, out


@pytest.mark.parametrize("points, box, B", [(1, False, 1), (2, True, 2), (0, True, 1)])
def test_matches_official_softmax(pair, points, box, B):
    dec, pe, off_dec, _ = pair
    _, kw = inputs(pe, B=B, points=points, box=box, seed=points)
    seen, (off_masks, _) = official_softmaxes(off_dec, kw)
    assert list(seen) == SITES  # the official module paths are the same as ours
    with torch.no_grad(), record_attention(dec) as attn:
        masks, _ = dec(**kw, multimask_output=True)
    assert (masks - off_masks).abs().max() <= 1e-4  # same model (float reassociation aside)
    for name in SITES:
        assert attn[name].shape == seen[name].shape
        err = (attn[name] - seen[name]).abs().max().item()
        assert err <= 1e-6, f"{name}: max |ours - official| = {err}"


def test_outputs_bitwise_unchanged_and_no_hooks_left(pair):
    dec, pe, _, _ = pair
    _, kw = inputs(pe, B=1)
    before = all_hooks(dec)
    with torch.no_grad():
        plain = dec(**kw, multimask_output=True)
        with record_attention(dec, with_qk=True, device="cpu") as attn:
            recorded = dec(**kw, multimask_output=True)
    assert len(attn) == 7
    for a, b in zip(plain, recorded):
        assert torch.equal(a, b)
    assert all_hooks(dec) == before == 0


def test_no_hooks_left_when_forward_raises(pair):
    dec, pe, _, _ = pair
    _, kw = inputs(pe, B=2)
    kw["dense_prompt_embeddings"] = kw["dense_prompt_embeddings"][:1]  # B mismatch
    with pytest.raises(ShapeError, match="dense_prompt_embeddings"):
        with record_attention(dec) as attn:
            dec(**kw, multimask_output=True)
    assert all_hooks(dec) == 0
    assert len(attn) == 0


def test_options_average_heads_layers_kinds(pair):
    dec, pe, _, _ = pair
    _, kw = inputs(pe, B=1)
    with torch.no_grad(), record_attention(dec) as full:
        dec(**kw, multimask_output=True)
    with torch.no_grad(), record_attention(dec, average_heads=True, layers=[1, "final"]) as mean:
        dec(**kw, multimask_output=True)
    assert list(mean) == SITES[3:]
    for name in mean:
        assert mean[name].shape[1] == 1
        torch.testing.assert_close(mean[name], full[name].mean(1, keepdim=True), rtol=0, atol=1e-7)
    with torch.no_grad(), record_attention(dec, kinds=["image_to_token"], device="cpu") as i2t:
        dec(**kw, multimask_output=True)
    assert list(i2t) == [SITES[2], SITES[5]]
    assert all(t.device.type == "cpu" for t in i2t.values())
    with pytest.raises(ValueError, match="no Attention module matches"):
        with record_attention(dec, layers=[7]):
            pass
    with pytest.raises(ValueError, match="kinds must be among"):
        with record_attention(dec, kinds=["token_to_token"]):
            pass


def test_estimate_is_exact_and_limit_refuses_before_the_forward(pair):
    dec, pe, _, _ = pair
    _, kw = inputs(pe, B=2, points=2, box=True)  # T = 9
    est = estimate_attention_bytes(dec, B=2, T=9)
    # by hand: 3 token-to-image + 2 image-to-token maps of B x 8 x T x HW, 2 self maps of B x 8 x T x T, fp32
    assert est == (5 * 2 * 8 * 9 * 4096 + 2 * 2 * 8 * 9 * 9) * 4
    with torch.no_grad(), record_attention(dec, with_qk=True) as attn:
        dec(**kw, multimask_output=True)
    assert attn.estimated_bytes == attn.nbytes == estimate_attention_bytes(dec, B=2, T=9, with_qk=True)
    assert estimate_attention_bytes(dec, 2, 9, average_heads=True, layers=[0]) == \
        (2 * 2 * 9 * 4096 + 2 * 9 * 9) * 4

    ran = []
    handle = dec.hook_tokens.register_forward_hook(lambda *a: ran.append(1))
    try:
        with pytest.raises(AttentionMemoryError) as info:
            with record_attention(dec, max_bytes=est - 1) as refused:
                dec(**kw, multimask_output=True)
    finally:
        handle.remove()
    msg = str(info.value)
    assert f"({est} bytes)" in msg and f"({est - 1} bytes)" in msg and "max_bytes" in msg
    assert ran == [] and len(refused) == 0  # refused before the decoder computed anything
    assert all_hooks(dec) == 0
    with torch.no_grad(), record_attention(dec, max_bytes=est) as ok:  # exactly at the limit: allowed
        dec(**kw, multimask_output=True)
    assert ok.nbytes == est


def test_any_module_tree_of_our_attention(pair):
    """Hooks work on a model that merely contains our modules: keys follow its module paths,
    and a bare TwoWayTransformer (no MaskDecoder around it) is guarded per attention call."""
    dec, pe, _, _ = pair
    _, kw = inputs(pe, B=1)

    class Sam(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mask_decoder = dec

    sam = Sam()
    with torch.no_grad(), record_attention(sam) as attn:
        sam.mask_decoder(**kw, multimask_output=True)
    assert list(attn) == ["mask_decoder." + s for s in SITES]

    tr = dec.transformer
    src, pos = torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64)
    tokens = torch.randn(1, 7, 256)
    with torch.no_grad(), record_attention(tr) as attn:
        tr(src, pos, tokens)
    assert list(attn) == [s.removeprefix("transformer.") for s in SITES]
    one_map = 8 * 7 * 4096 * 4
    with pytest.raises(AttentionMemoryError, match="layers.0.cross_attn_token_to_image"):
        with torch.no_grad(), record_attention(tr, max_bytes=one_map) as attn:
            tr(src, pos, tokens)
    assert all_hooks(tr) == 0


def test_token_names_follow_the_prompt_encoder():
    pts = example_prompts(points=3, box=False)
    assert token_names(pts) == [["iou", "mask0", "mask1", "mask2", "mask3",
                                 "point0 (+)", "point1 (-)", "point2 (+)", "pad"]]
    both = example_prompts(points=1, box=True)
    assert token_names(both)[0][5:] == ["point0 (+)", "box corner 0", "box corner 1"]
    box = example_prompts(points=0, box=True, batch=2)
    assert token_names(box) == [["iou", "mask0", "mask1", "mask2", "mask3", "box corner 0", "box corner 1"]] * 2
    pts.points[1][0, 1] = -1
    assert token_names(pts)[0][6] == "point1 (pad)"


def test_capture_attention_in_one_call():
    pe, dec = build_prompt_encoder(), build_mask_decoder()
    prompts = example_prompts(points=2, box=False, batch=2)
    emb = torch.randn(1, 256, 64, 64)
    rec = capture_attention(pe, dec, emb, prompts)
    T = 5 + 2 + 1
    assert rec.num_tokens == T and rec.num_prompt_sets == 2 and len(rec.names(1)) == T
    assert rec.masks.shape == (2, 3, 256, 256)
    assert rec.by(kind="token_to_image") == [SITES[1], SITES[4], SITES[6]]
    assert "2 x 8 x 8 x 4096" in repr(rec)
    # one map by what it means
    t2i = rec.map("token_to_image", layer="final", token="mask0", head=3, prompt_set=1)
    assert torch.equal(t2i, rec[SITES[6]][1, 3, 1].reshape(64, 64))
    i2t = rec.map("image_to_token", layer=1, token="pad")
    torch.testing.assert_close(i2t, rec[SITES[5]][0, :, :, 7].mean(0).reshape(64, 64), rtol=0, atol=1e-7)
    assert rec.map("token_self", layer=0).shape == (T, T)
    torch.testing.assert_close(rec.map("token_self", layer=0, token="point1"), rec[SITES[0]][0, :, 6].mean(0),
                               rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="needs a token"):
        rec.map("token_to_image")
    with pytest.raises(ValueError, match=r"no image_to_token attention recorded at layer 'final'"):
        rec.map("image_to_token", layer="final", token=0)
    with pytest.raises(ValueError, match="0..h-1 = 0..7, got 8"):
        rec.map("token_self", head=8)


def test_bad_arguments_say_what_is_wanted(pair):
    dec, _, off_dec, _ = pair
    with pytest.raises(ValueError, match="no sam_explain.modeling Attention modules"):
        with record_attention(off_dec):
            pass
    with pytest.raises(ValueError, match="max_bytes must be a whole number of bytes >= 0, got -1"):
        with record_attention(dec, max_bytes=-1):
            pass
    with record_attention(dec, layers="final", kinds="token_to_image") as attn:
        pass
    assert list(attn.sites) == ["transformer.final_attn_token_to_image"]
    with pytest.raises(ValueError, match="nothing recorded yet"):
        attn.num_prompt_sets
    assert all_hooks(dec) == 0


def test_second_forward_replaces_the_first(pair):
    """Two calls in one block: the record holds the last call's maps, and the limit applies per call."""
    dec, pe, _, _ = pair
    _, small = inputs(pe, B=1, points=1, box=False)
    _, big = inputs(pe, B=2, points=1, box=False)
    limit = estimate_attention_bytes(dec, B=2, T=7, layers=["final"])  # the first call holds half
    with torch.no_grad(), record_attention(dec, max_bytes=limit, layers=["final"]) as attn:
        dec(**small, multimask_output=True)
        assert attn["transformer.final_attn_token_to_image"].shape[0] == 1
        dec(**big, multimask_output=True)
    assert attn["transformer.final_attn_token_to_image"].shape[0] == 2
