"""Our decoder and prompt encoder against the official segment_anything.modeling, same weights."""

import pytest
import torch

from sam_explain import MaskDecoder, PromptEncoder, TwoWayTransformer
from sam_explain.prompts import example_prompts
from sam_explain.testing import build_official_pair, run_both

TOL = 1e-5
PROMPT_KINDS = {
    "points": dict(points=2),
    "box": dict(points=0, box=True),
    "points+box": dict(points=3, box=True),
    "mask": dict(points=0, mask=True),
    "points+mask": dict(points=1, mask=True),
    "none": dict(points=0),
}


def max_err(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item() if a.numel() else 0.0


# With no prompt at all there is one prompt set (B = 1) by construction.
KIND_BATCH = [(k, b) for k in PROMPT_KINDS for b in (1, 3, 8) if not (k == "none" and b > 1)]


@pytest.mark.parametrize("kind,batch", KIND_BATCH)
@pytest.mark.parametrize("multimask", [True, False])
def test_sam_config_parity(sam_pair, kind, batch, multimask):
    od, op, d, p = sam_pair
    prompts = example_prompts(**PROMPT_KINDS[kind], batch=batch, seed=batch)
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(batch))
    sparse, dense, masks, iou = run_both(od, op, d, p, prompts, emb, multimask)
    n_out = 3 if multimask else 1
    assert masks[1].shape == (batch, n_out, 256, 256)
    assert iou[1].shape == (batch, n_out)
    for pair in (sparse, dense, masks, iou):
        assert max_err(*pair) <= TOL
    # not trivially equal: the masks depend on the prompt
    assert masks[1].std() > 0.01


def test_dense_pe_parity(sam_pair):
    od, op, d, p = sam_pair
    assert p.get_dense_pe().shape == (1, 256, 64, 64)
    assert max_err(op.get_dense_pe(), p.get_dense_pe()) <= TOL


CUSTOM = [
    # non-square grid, its mask input and input image to match
    dict(image_embedding_size=(48, 80), input_image_size=(768, 1280)),
    # non-default depth, heads, number of multimask outputs, IoU head
    dict(depth=3, num_heads=4, num_multimask_outputs=2, iou_head_depth=4, iou_head_hidden_dim=64, mlp_dim=512),
    # a small model with another channel count
    dict(transformer_dim=64, depth=1, num_heads=2, mlp_dim=128, mask_in_chans=8, image_embedding_size=(16, 24),
         input_image_size=(256, 384)),
]


@pytest.mark.parametrize("cfg", CUSTOM, ids=["nonsquare", "deep-heads-outputs", "small"])
@pytest.mark.parametrize("multimask", [True, False])
def test_custom_config_parity(cfg, multimask):
    od, op = build_official_pair(**cfg, seed=7)
    C = cfg.get("transformer_dim", 256)
    grid = cfg.get("image_embedding_size", (64, 64))
    d = MaskDecoder(
        transformer_dim=C,
        transformer=TwoWayTransformer(depth=cfg.get("depth", 2), embedding_dim=C,
                                      num_heads=cfg.get("num_heads", 8), mlp_dim=cfg.get("mlp_dim", 2048)),
        num_multimask_outputs=cfg.get("num_multimask_outputs", 3),
        iou_head_depth=cfg.get("iou_head_depth", 3),
        iou_head_hidden_dim=cfg.get("iou_head_hidden_dim", 256),
    ).eval()
    p = PromptEncoder(embed_dim=C, image_embedding_size=grid,
                      input_image_size=cfg.get("input_image_size", (1024, 1024)),
                      mask_in_chans=cfg.get("mask_in_chans", 16)).eval()
    d.load_state_dict(od.state_dict(), strict=True)
    p.load_state_dict(op.state_dict(), strict=True)
    for kind in ("points", "points+box", "mask"):
        prompts = example_prompts(**PROMPT_KINDS[kind], batch=3, image_size=p.input_image_size,
                                  mask_size=p.mask_input_size)
        emb = torch.randn(1, C, *grid)
        sparse, dense, masks, iou = run_both(od, op, d, p, prompts, emb, multimask)
        M = cfg.get("num_multimask_outputs", 3)
        assert masks[1].shape == (3, M if multimask else 1, 4 * grid[0], 4 * grid[1])
        for pair in (sparse, dense, masks, iou):
            assert max_err(*pair) <= TOL
    assert max_err(op.get_dense_pe(), p.get_dense_pe()) <= TOL


def test_sparse_length_rule(sam_pair):
    *_, p = sam_pair
    cases = {(4, False): 5, (4, True): 6, (0, True): 2, (0, False): 0}
    for (n, box), expected in cases.items():
        prompts = example_prompts(points=n, box=box, batch=2)
        sparse, dense = p(points=prompts.points, boxes=prompts.boxes, masks=None)
        assert sparse.shape == (2 if (n or box) else 1, expected, 256)
        assert dense.shape == (sparse.shape[0], 256, 64, 64)


def test_one_image_per_prompt_set_matches_separate_runs(sam_pair):
    """Our documented extension: I = B images pair with B prompt sets by index."""
    od, op, d, p = sam_pair
    prompts = example_prompts(points=2, batch=3)
    embs = torch.randn(3, 256, 64, 64)
    with torch.no_grad():
        sparse, dense = p(points=prompts.points, boxes=None, masks=None)
        masks, iou = d(embs, p.get_dense_pe(), sparse, dense, True)
        for b in range(3):
            m_b, i_b = od(embs[b : b + 1], op.get_dense_pe(), sparse[b : b + 1], dense[b : b + 1], True)
            assert max_err(masks[b : b + 1], m_b) <= TOL
            assert max_err(iou[b : b + 1], i_b) <= TOL


def test_runs_under_bf16_autocast_like_official(sam_pair):
    """Under torch.autocast the activations between layers are bfloat16 while the weights stay float32;
    the input checks accept that, and the outputs agree with the official code run the same way."""
    od, op, d, p = sam_pair
    prompts = example_prompts(points=2, box=True, batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pairs = run_both(od, op, d, p, prompts, torch.randn(1, 256, 64, 64), multimask=True)
    for theirs, ours in pairs:
        assert ours.dtype == theirs.dtype
        scale = theirs.float().abs().max().item()
        assert max_err(ours.float(), theirs.float()) <= 2e-2 * max(scale, 1.0)


def test_bf16_input_outside_autocast_is_refused(sam_pair):
    *_, d, p = sam_pair
    prompts = example_prompts(points=1)
    sparse, dense = p(points=prompts.points, boxes=None, masks=None)
    with pytest.raises(ValueError, match="image_embeddings is torch.bfloat16 on cpu, but the decoder's weights are torch.float32"):
        d(torch.randn(1, 256, 64, 64, dtype=torch.bfloat16), p.get_dense_pe(), sparse, dense, True)
