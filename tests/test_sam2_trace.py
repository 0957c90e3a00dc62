"""Shape traces and attention maps of SAM 2's decoder: every traced row labelled by SAM 2's contract
(checked against the contract evaluated from each test's own configuration), SAM's decoders still
labelled by SAM's, and the seven attention maps recorded with T = O + 1 + M + N' tokens."""

from __future__ import annotations

import math

import pytest
import torch

import sam_explain.sam2 as s2
from sam_explain.attention import AttentionMemoryError, record_attention
from sam_explain.modeling import build_mask_decoder
from sam_explain.prompts import Prompts
from sam_explain.shapes import contract as sc
from sam_explain.shapes import registry
from sam_explain.shapes import contract_sam2 as sc2
from sam_explain.testing import build_official_pair, build_official_sam2_pair
from sam_explain.tracing import TensorInfo, trace_shapes

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_ON = dict(use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
              pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True)
NONE = dict.fromkeys(ALL_ON, False)


def build(C=32, heads=4, depth=2, grid=(8, 8), stability=True, **flags):
    torch.manual_seed(0)
    dec = s2.build_sam2_mask_decoder(transformer_dim=C, num_heads=heads, depth=depth, mlp_dim=2 * C,
                                     iou_head_hidden_dim=C, **{**NONE, **flags},
                                     dynamic_multimask_via_stability=stability)
    pe = s2.build_sam2_prompt_encoder(embed_dim=C, image_embedding_size=grid,
                                      input_image_size=(16 * grid[0], 16 * grid[1]), mask_in_chans=8)
    return pe, dec


def prompts(B, grid, clicks=2, box=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h, w = 16 * grid[0], 16 * grid[1]
    coords = torch.rand(B, clicks, 2, generator=gen) * torch.tensor([w, h])
    labels = torch.ones(B, clicks, dtype=torch.int64)
    labels[:, 1::2] = 0
    boxes = torch.tensor([[0.2 * w, 0.2 * h, 0.7 * w, 0.8 * h]]).repeat(B, 1) if box else None
    return Prompts(points=(coords, labels) if clicks else None, boxes=boxes)


def run(pe, dec, B=2, clicks=2, box=True, multimask=True, paired=False, hr_images=None, official=False):
    """Trace prompt encoder + (conv_s0, conv_s1) + decoder; return the trace and the contract's numbers."""
    C, grid = dec.transformer_dim, pe.image_embedding_size
    given = s2.boxes_as_points(prompts(B, grid, clicks, box))
    images = B if paired else 1
    emb = torch.randn(images, C, *grid, generator=torch.Generator().manual_seed(1))
    hr_images = hr_images or images
    with torch.no_grad(), trace_shapes({"prompt_encoder": pe, "mask_decoder": dec}) as trace:
        sparse, dense = pe(points=given.points, boxes=None, masks=None)
        hr = None
        if dec.use_high_res_features:
            s0, s1 = s2.stand_in_backbone_features(emb[:hr_images])
            hr = [dec.conv_s0(s0), dec.conv_s1(s1)]
        out = dec(emb, pe.get_dense_pe(), sparse, dense, multimask_output=multimask, repeat_image=not paired,
                  high_res_features=hr)
    n_sparse = (2 if box else 0) + clicks + 1  # the box as two points, the clicks, the padding point
    cfg = sc2.Sam2DecoderConfig(B=B, sparse_tokens=n_sparse, images=images, C=C, H=grid[0], W=grid[1],
                                heads=dec.transformer.num_heads, mlp_dim=dec.transformer.mlp_dim, M=4,
                                multimask=multimask, iou_hidden=C, obj_token=dec.pred_obj_scores, hr_images=hr_images,
                                multimask_token_for_obj_ptr=dec.use_multimask_token_for_obj_ptr)
    pe_cfg = sc.PromptConfig(B=B, points=n_sparse - 1, box=False, C=C, H=grid[0], W=grid[1], mask_in_chans=8)
    return trace, cfg, pe_cfg, out


def matches(value, expected) -> bool:
    if expected is None:
        return value is None
    if isinstance(value, TensorInfo):
        return value.shape == expected
    if isinstance(value, tuple):
        return len(value) == len(expected) and all(matches(v, e) for v, e in zip(value, expected))
    return False


def assert_contract(trace, cfg, pe_cfg) -> set:
    """Every row has an entry; its output and inputs are what the contract says with the test's own
    numbers (not the tracer's reading); and the tracer's label agrees. Returns the decoder entries hit."""
    values = {"sam2_decoder": cfg.symbols(), "prompt_encoder": pe_cfg.symbols()}
    hit = set()
    for row in trace:
        assert row.status == "ok", row
        assert row.info.component in values, row
        entry = row.entry
        assert entry is not None, f"no contract entry for {row.path} ({row.module_class})"
        vals = values[row.info.component]
        if row.path.startswith("mask_decoder.conv_s"):  # called outside the decoder: the call's own numbers
            vals = dict(vals, B=None)
        want = sc.evaluate(entry.out, vals, entry.bind)
        assert matches(row.output, want), f"{row.path}: out {row.output} but the contract says {want}"
        for name, spec in sc.hook_inputs(entry).items():
            got = row.inputs.get(name)
            if got is not None:
                assert matches(got, sc.evaluate(spec, vals, entry.bind)), f"{row.path}: input {name} {got}"
        assert row.contract == "ok", row
        if row.info.component == "sam2_decoder":
            hit.add(entry.path)
    return hit


CONFIGS = [
    dict(flags=ALL_ON, B=1, multimask=True),  # SAM 2.1, one click and a box, through the image predictor
    dict(flags=ALL_ON, B=3, multimask=False),  # the stability switch runs
    dict(flags=ALL_ON, B=2, multimask=True, paired=True, hr_images=1),  # one image per prompt set, shared skips
    dict(flags=NONE, B=2, multimask=False, paired=True),  # SAM 2's decoder with every flag off
    dict(flags=dict(pred_obj_scores=True), B=2, clicks=3, box=False, multimask=True),  # a linear score head
    dict(flags=dict(use_high_res_features=True, use_multimask_token_for_obj_ptr=True), B=2, multimask=True,
         heads=2, depth=1, grid=(6, 10)),
]


def cfg_id(c):
    return ",".join(f"{k}={v}" for k, v in c.items() if k != "flags") + ",flags=" + \
        ("+".join(k for k, v in c["flags"].items() if v) or "none")


@pytest.mark.parametrize("config", CONFIGS, ids=cfg_id)
def test_every_row_matches_sam2_contract(config):
    config = dict(config)
    flags = config.pop("flags")
    model = {k: config.pop(k) for k in ("heads", "depth", "grid") if k in config}
    pe, dec = build(**model, **flags)
    trace, cfg, pe_cfg, out = run(pe, dec, **config)
    assert_contract(trace, cfg, pe_cfg)
    assert not trace.mismatches()
    assert {r.info.component for r in trace if r.path.startswith("mask_decoder")} == {"sam2_decoder"}
    K = 3 if config.get("multimask", True) else 1
    assert out[0].shape == (cfg.B, K, 4 * cfg.H, 4 * cfg.W)
    root = trace.find("mask_decoder")[0]
    assert root.contract == "ok" and root.symbol_values()["T"] == cfg.symbols()["T"]


def test_every_entry_of_the_contract_is_exercised():
    hit = set()
    for config in (CONFIGS[1], CONFIGS[3], dict(flags=dict(pred_obj_scores=True, pred_obj_scores_mlp=True), B=1)):
        config = dict(config)
        pe, dec = build(**config.pop("flags"))
        trace, cfg, pe_cfg, _ = run(pe, dec, **config)
        hit |= assert_contract(trace, cfg, pe_cfg)
    assert {e.path for e in sc2.SAM2_DECODER_CONTRACT} == hit


def test_the_official_sam2_decoder_is_labelled_too():
    od, op = build_official_sam2_pair(transformer_dim=32, num_heads=4, mlp_dim=64, iou_head_hidden_dim=32,
                                      image_embedding_size=(8, 8), input_image_size=(128, 128), mask_in_chans=8,
                                      **ALL_ON, dynamic_multimask_via_stability=True)
    trace, cfg, pe_cfg, _ = run(op, od, B=2, multimask=False)
    assert_contract(trace, cfg, pe_cfg)
    rows = [r for r in trace if r.path.startswith("mask_decoder")]
    assert {r.info.component for r in rows} == {"sam2_decoder"}
    # the same module calls as ours, in the same order, less our hook points
    pe, dec = build(**ALL_ON)
    ours, *_ = run(pe, dec, B=2, multimask=False)
    assert [(r.path, r.output) for r in rows] == \
        [(r.path, r.output) for r in ours if r.path.startswith("mask_decoder") and r.info.kind != "hook"]


def test_sam_decoders_keep_sam_contract():
    official_sam, _ = build_official_pair(transformer_dim=32, num_heads=4, mlp_dim=64, iou_head_hidden_dim=32)
    for dec in (build_mask_decoder(transformer_dim=32, num_heads=4, mlp_dim=64), official_sam):
        assert registry.component_kind(dec) == "decoder"
    assert registry.component_kind(s2.build_sam2_mask_decoder()) == "sam2_decoder"
    assert registry.component_kind(s2.build_sam2_prompt_encoder()) == "prompt_encoder"
    assert registry.lookup("sam2_decoder", "hook_obj_score_token_out").out == "B C"
    assert registry.lookup("decoder", "hook_obj_score_token_out") is None
    assert registry.lookup("sam2_decoder", "transformer.layers.1.mlp.layers.0").out == "B T mlp_dim"


def test_a_wrong_sam2_entry_shows_as_a_mismatch(monkeypatch):
    """The checks above can fail: a contract that disagrees with the run is flagged."""
    wrong = sc.Entry("hook_tokens", "B (1+M) C", "deliberately SAM's count")
    real = registry.lookup

    def lookup(component, path):
        return wrong if (component, path) == ("sam2_decoder", "hook_tokens") else real(component, path)

    monkeypatch.setattr(registry, "lookup", lookup)
    pe, dec = build(**ALL_ON)
    trace, *_ = run(pe, dec, B=2)
    assert [r.path for r in trace.mismatches()] == ["mask_decoder.hook_tokens"]


# --- attention ----------------------------------------------------------------------------------------

SITES = ["transformer.layers.0.self_attn", "transformer.layers.0.cross_attn_token_to_image",
         "transformer.layers.0.cross_attn_image_to_token", "transformer.layers.1.self_attn",
         "transformer.layers.1.cross_attn_token_to_image", "transformer.layers.1.cross_attn_image_to_token",
         "transformer.final_attn_token_to_image"]


@pytest.mark.parametrize("flags,O", [(ALL_ON, 1), (NONE, 0)], ids=["sam2.1", "no-object-token"])
def test_seven_attention_maps(flags, O):
    pe, dec = build(**flags)
    B, grid = 3, pe.image_embedding_size
    HW, h = grid[0] * grid[1], dec.transformer.num_heads
    given = s2.boxes_as_points(prompts(B, grid, clicks=2, box=True))
    emb = torch.randn(1, 32, *grid)
    hr = s2.project_high_res_features(dec, *s2.stand_in_backbone_features(emb)) if dec.use_high_res_features else None
    with torch.no_grad(), record_attention(dec, with_qk=True) as rec:
        sparse, dense = pe(points=given.points, boxes=None, masks=None)
        out = dec(emb, pe.get_dense_pe(), sparse, dense, multimask_output=True, repeat_image=True,
                  high_res_features=hr)
    T = O + 1 + 4 + (2 + 2 + 1)
    assert list(rec) == SITES
    for name in SITES:
        n_q, n_k = {"self_attn": (T, T), "cross_attn_token_to_image": (T, HW), "final_attn_token_to_image": (T, HW),
                    "cross_attn_image_to_token": (HW, T)}[name.rsplit(".", 1)[-1]]
        probs = rec[name]
        assert probs.shape == (B, h, n_q, n_k), name
        torch.testing.assert_close(probs.sum(-1), torch.ones(B, h, n_q))
        q, k = rec.q[name], rec.k[name]  # the map is the softmax of the recorded queries and keys
        torch.testing.assert_close(probs, torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1))
    assert rec.num_tokens == T and rec.grid() == grid
    assert rec.estimated_bytes == rec.nbytes  # the decoder's pre-hook counted the object-score token
    with pytest.raises(AttentionMemoryError):  # and refuses a capture one byte too large, before it runs
        with torch.no_grad(), record_attention(dec, with_qk=True, max_bytes=rec.nbytes - 1):
            dec(emb, pe.get_dense_pe(), sparse, dense, multimask_output=True, repeat_image=True,
                high_res_features=hr)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in dec.modules())
    assert out[0].shape == (B, 3, 4 * grid[0], 4 * grid[1])


def test_capture_sam2_attention_names_the_tokens():
    pe, dec = build(**ALL_ON)
    grid = pe.image_embedding_size
    emb = torch.randn(1, 32, *grid)
    hr = s2.project_high_res_features(dec, *s2.stand_in_backbone_features(emb))
    rec = s2.capture_sam2_attention(pe, dec, emb, prompts(2, grid, clicks=1, box=True), high_res_features=hr)
    assert rec.token_names[0] == ["obj_score", "iou", "mask0", "mask1", "mask2", "mask3",
                                  "box corner 0", "box corner 1", "point0 (+)", "pad"]
    assert rec.num_tokens == 10 and len(rec) == 7
    assert rec.map("token_to_image", layer="final", token="obj_score").shape == grid
    assert rec.object_score_logits.shape == (2, 1) and rec.sam_tokens_out.shape == (2, 3, 32)
    assert rec.masks.shape == (2, 3, 32, 32)
    names = s2.sam2_token_names(prompts(1, grid, clicks=2, box=True), dec, box_as_points=False)[0]
    assert names[-3:] == ["point1 (-)", "box corner 0", "box corner 1"]


def test_toy_weights_in_sam2_structure_trace_and_attend():
    """SAM 2's structure with the shipped toy's weights: the contract labels it, the maps are recorded."""
    record = s2.toy_sam2_untrained(seed=0)
    assert not record.trained and "mask_decoder.obj_score_token.weight" in record.untrained
    pe, dec, toy = record.prompt_encoder, record.mask_decoder, record.source
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    emb = toy.embed(image)  # 1 x 256 x 64 x 64
    hr = s2.project_high_res_features(dec, *s2.stand_in_backbone_features(emb))
    given = Prompts(points=(torch.tensor([[[120.0, 80.0]]]), torch.tensor([[1]])))
    with torch.no_grad(), trace_shapes(dec) as trace, record_attention(dec, average_heads=True) as rec:
        masks, iou, tokens, score = s2.run_sam2_decoder(pe, dec, emb, given, high_res_features=hr)[:4]
    assert not trace.mismatches() and all(r.contract == "ok" for r in trace)
    assert masks.shape == (1, 3, 256, 256) and rec["transformer.final_attn_token_to_image"].shape == (1, 1, 8, 4096)
