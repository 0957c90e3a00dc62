"""SAM 2's decoder side (sam_explain.sam2) against the official sam2 1.1.0 code, same weights.

Small configurations (C = 32, an 8 x 8 grid) for every combination of the decoder's five
structural flags, B = 1 and several, repeat_image on and off, multimask on and off; the stability
switch driven into each of its branches; the prompt encoder's labels 2 and 3; and SAM 2.1's real
sizes once."""

from __future__ import annotations

import itertools

import pytest
import torch

import sam_explain.sam2 as s2
from sam_explain.prompts import Prompts
from sam_explain.shapes.check import ShapeError
from sam_explain.testing import build_official_sam2_pair

TOL = 1e-5
FLAG_NAMES = ("use_high_res_features", "iou_prediction_use_sigmoid", "pred_obj_scores", "pred_obj_scores_mlp",
              "use_multimask_token_for_obj_ptr")
ALL_ON = dict.fromkeys(FLAG_NAMES, True)  # every released SAM 2 / SAM 2.1 config
SMALL = dict(transformer_dim=32, depth=2, num_heads=4, mlp_dim=64, iou_head_hidden_dim=32,
             image_embedding_size=(8, 8), input_image_size=(128, 128), mask_in_chans=8)

pytestmark = pytest.mark.usefixtures("one_thread")  # small forwards: extra threads only add contention


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item() if a.numel() else 0.0


def pair(seed: int = 0, size: dict = SMALL, **flags):
    """(official decoder, official prompt encoder, ours, ours), the same seeded weights."""
    od, op = build_official_sam2_pair(**size, seed=seed, **flags)
    cfg = {k: v for k, v in size.items() if k not in ("image_embedding_size", "input_image_size", "mask_in_chans")}
    dec_flags = {**dict.fromkeys(FLAG_NAMES, False), "dynamic_multimask_via_stability": False, **flags}
    d = s2.build_sam2_mask_decoder(**cfg, **dec_flags)
    p = s2.build_sam2_prompt_encoder(embed_dim=size["transformer_dim"], image_embedding_size=size["image_embedding_size"],
                                     input_image_size=size["input_image_size"], mask_in_chans=size["mask_in_chans"])
    d.load_state_dict(od.state_dict(), strict=True)
    p.load_state_dict(op.state_dict(), strict=True)
    return od, op, d, p


def prompts(B: int, size: dict = SMALL, seed: int = 0):
    """B prompt sets: a box as two points (labels 2, 3) and two clicks (1, 0), as the image predictor sends them."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size["input_image_size"]
    coords = torch.rand(B, 4, 2, generator=gen) * torch.tensor([w, h])  # B x 4 x 2
    labels = torch.tensor([[2, 3, 1, 0]]).repeat(B, 1)  # B x 4
    return coords, labels


def inputs(p, B: int, images: int, hr_images: int, size: dict = SMALL, seed: int = 0):
    C, (H, W) = size["transformer_dim"], size["image_embedding_size"]
    gen = torch.Generator().manual_seed(seed + 100)
    coords, labels = prompts(B, size, seed)
    with torch.no_grad():
        sparse, dense = p(points=(coords, labels), boxes=None, masks=None)
    emb = torch.randn(images, C, H, W, generator=gen)
    hr = [torch.randn(hr_images, C // 8, 4 * H, 4 * W, generator=gen),
          torch.randn(hr_images, C // 4, 2 * H, 2 * W, generator=gen)]
    return dict(image_embeddings=emb, image_pe=p.get_dense_pe(), sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, high_res_features=hr)


def both(od, d, kw, **call):
    with torch.no_grad():
        return od(**kw, **call), d(**kw, **call)


# (B, repeat_image, images I, high-res images Ih)
BATCHING = [(1, True, 1, 1), (1, False, 1, 1), (3, True, 1, 1), (3, False, 3, 3), (3, False, 3, 1)]
COMBOS = [dict(zip(FLAG_NAMES, values)) for values in itertools.product([False, True], repeat=len(FLAG_NAMES))]


def combo_id(flags: dict) -> str:
    return "+".join(k.replace("use_", "").replace("iou_prediction_", "iou_")
                    for k, v in flags.items() if v) or "none"


@pytest.mark.parametrize("flags", COMBOS, ids=combo_id)
def test_every_flag_combination(flags):
    od, op, d, p = pair(seed=3, **flags)
    for B, repeat_image, images, hr_images in BATCHING:
        kw = inputs(p, B, images, hr_images, seed=B)
        for multimask in (True, False):
            off, ours = both(od, d, kw, multimask_output=multimask, repeat_image=repeat_image)
            K = 3 if multimask else 1
            K_ptr = 3 if multimask and flags["use_multimask_token_for_obj_ptr"] else 1
            assert [tuple(t.shape) for t in ours] == [(B, K, 32, 32), (B, K), (B, K_ptr, 32), (B, 1)]
            for a, b in zip(off, ours):
                assert max_err(a, b) <= TOL, (flags, B, repeat_image, multimask)
            masks, iou, _, score = ours
            assert masks.std() > 0.01  # not trivially equal
            if flags["iou_prediction_use_sigmoid"]:
                assert bool(((iou > 0) & (iou < 1)).all())
            if not flags["pred_obj_scores"]:
                assert bool((score == 10.0).all())  # the constant "object present"


def test_high_res_features_change_the_masks_where_they_are_added():
    """The skips are real: other high-resolution features, other masks (and the same without the flag)."""
    od, op, d, p = pair(seed=5, **ALL_ON)
    kw = inputs(p, 2, 1, 1)
    other = dict(kw, high_res_features=[t * 2 for t in kw["high_res_features"]])
    with torch.no_grad():
        a = d(**kw, multimask_output=True, repeat_image=True)[0]
        b = d(**other, multimask_output=True, repeat_image=True)[0]
        b_off = od(**other, multimask_output=True, repeat_image=True)[0]
    assert max_err(a, b) > 0.1
    assert max_err(b, b_off) <= TOL
    _, _, d_plain, p_plain = pair(seed=5, pred_obj_scores=True)  # no high-res: the features are ignored
    kw = inputs(p_plain, 2, 1, 1)
    with torch.no_grad():
        a = d_plain(**kw, multimask_output=True, repeat_image=True)[0]
        b = d_plain(**dict(kw, high_res_features=[]), multimask_output=True, repeat_image=True)[0]
    assert torch.equal(a, b)


def test_state_dict_keys_shapes_and_order_are_official():
    assert sum(p.numel() for p in s2.build_sam2_mask_decoder().parameters()) == 4_215_109  # docs/shapes.md
    for flags in COMBOS:
        od, _, d, _ = pair(seed=0, **flags)
        assert [(k, tuple(v.shape)) for k, v in od.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in d.state_dict().items()], flags


# --- the stability switch ---------------------------------------------------------------------


def all_masks(d, kw, repeat_image=True):
    """Every mask and IoU before forward's choice, read from the hook points: B x M x 4H x 4W, B x M."""
    seen = {}
    hooks = [d.hook_masks.register_forward_hook(lambda m, a, out: seen.__setitem__("masks", out)),
             d.hook_iou_pred.register_forward_hook(lambda m, a, out: seen.__setitem__("iou", out))]
    try:
        with torch.no_grad():
            out = d(**kw, multimask_output=False, repeat_image=repeat_image)
    finally:
        for h in hooks:
            h.remove()
    return seen["masks"], seen["iou"], out


def assert_branches(out, masks, iou, stable, tol: float = 0.0):
    """Each prompt set's single output is token 0's mask where ``stable``, else the best multimask one
    (exactly for ours, within ``tol`` for the official outputs against our masks)."""
    best = 1 + iou[:, 1:].argmax(-1)  # B
    for b, is_stable in enumerate(stable.tolist()):
        want = 0 if is_stable else int(best[b])
        assert max_err(out[0][b, 0], masks[b, want]) <= tol, (b, is_stable)
        assert max_err(out[1][b, 0], iou[b, want]) <= tol
        assert max_err(masks[b, 0], masks[b, int(best[b])]) > 0.1  # the two branches differ here


def test_stability_switch_takes_each_branch_within_one_batch():
    od, op, d, p = pair(seed=1, **ALL_ON, dynamic_multimask_via_stability=True)
    kw = inputs(p, 6, 1, 1, seed=2)
    masks, iou, _ = all_masks(d, kw)
    scores = d._get_stability_scores(masks[:, :1])[:, 0]  # B
    ranked = scores.sort().values
    gaps = ranked[1:] - ranked[:-1]
    k = int(gaps.argmax())
    assert gaps[k] > 1e-3, f"the stability scores do not spread: {scores.tolist()}"
    thresh = float(ranked[k] + ranked[k + 1]) / 2  # between two prompt sets: some stable, some not
    for dec in (od, d):
        dec.dynamic_multimask_stability_thresh = thresh
    off, ours = both(od, d, kw, multimask_output=False, repeat_image=True)
    for a, b in zip(off, ours):
        assert max_err(a, b) <= TOL
    stable = scores >= thresh
    assert 0 < int(stable.sum()) < len(stable)
    assert_branches(ours, masks, iou, stable)
    assert_branches(off, masks, iou, stable, tol=TOL)
    assert torch.equal(ours[2], ours[2][:, :1])  # sam_tokens_out: token 0 whichever mask went out


@pytest.mark.parametrize("scale,stable", [(1e-4, False), (100.0, True)])
def test_stability_switch_at_the_released_threshold(scale, stable):
    """With the threshold 0.98, weights made so that token 0's logits are all near 0 (unstable: most
    pixels within delta of the threshold) or far from it (stable)."""
    od, op, d, p = pair(seed=4, **ALL_ON, dynamic_multimask_via_stability=True)
    with torch.no_grad():
        for dec in (od, d):
            last = dec.output_hypernetworks_mlps[0].layers[-1]
            last.weight.mul_(scale)
            last.bias.mul_(scale)
    kw = inputs(p, 3, 1, 1, seed=7)
    masks, iou, ours = all_masks(d, kw)
    scores = d._get_stability_scores(masks[:, :1])[:, 0]
    assert bool((scores >= 0.98).all()) if stable else bool((scores < 0.98).all()), scores
    with torch.no_grad():
        off = od(**kw, multimask_output=False, repeat_image=True)
    for a, b in zip(off, ours):
        assert max_err(a, b) <= TOL * max(1.0, a.abs().max().item())  # logits scaled up: relative to their size
    assert_branches(ours, masks, iou, torch.full((3,), stable))


def test_stability_switch_is_off_in_training_and_with_multimask():
    od, op, d, p = pair(seed=1, **ALL_ON, dynamic_multimask_via_stability=True)
    for dec in (od, d):
        dec.dynamic_multimask_stability_thresh = 2.0  # nothing is stable: eval mode would always switch
    kw = inputs(p, 2, 1, 1)
    masks, iou, switched = all_masks(d, kw)
    assert_branches(switched, masks, iou, torch.zeros(2, dtype=torch.bool))
    od.train(), d.train()
    try:
        off, ours = both(od, d, kw, multimask_output=False, repeat_image=True)
    finally:
        od.eval(), d.eval()
    assert torch.equal(ours[0], masks[:, :1]) and max_err(off[0], ours[0]) <= TOL  # token 0, no switch
    off, ours = both(od, d, kw, multimask_output=True, repeat_image=True)
    assert torch.equal(ours[0], masks[:, 1:]) and max_err(off[0], ours[0]) <= TOL


def test_stability_score_rule_on_constructed_logits():
    od, _, d, _ = pair(seed=0, **ALL_ON, dynamic_multimask_via_stability=True)
    logits = torch.full((4, 1, 8, 8), -5.0)  # B x 1 x 4H x 4W
    logits[0, 0, :4] = 5.0  # 32 pixels far above 0: stable, 32 / 32
    logits[1, 0, :4] = 5.0
    logits[1, 0, 4:6] = 0.01  # 16 more within delta (0.05) of 0: 32 / 48
    logits[2, 0, :2] = -0.01  # 16 just below 0 but above -delta, nothing above +delta: 0 / 16
    # prompt set 3: nothing above -delta at all: defined as 1
    want = torch.tensor([[1.0], [32 / 48], [0.0], [1.0]])
    assert torch.equal(d._get_stability_scores(logits), want)
    assert torch.equal(od._get_stability_scores(logits), want)


# --- the prompt encoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["points", "box-as-points", "box", "points+box", "mask", "everything"])
def test_prompt_encoder(case):
    od, op, d, p = pair(seed=2)
    B = 3
    coords, labels = prompts(B)
    points = {"points": (coords[:, 2:], labels[:, 2:]), "box-as-points": (coords, labels),
              "box": None, "points+box": (coords[:, 2:], labels[:, 2:]), "mask": None,
              "everything": (coords, torch.tensor([[2, 3, 1, -1]] * B))}[case]
    boxes = torch.tensor([[10.0, 20.0, 90.0, 100.0]] * B) if case in ("box", "points+box", "everything") else None
    masks = torch.randn(B, 1, 32, 32) if case in ("mask", "everything") else None
    with torch.no_grad():
        so, do = op(points=points, boxes=boxes, masks=masks)
        s, dd = p(points=points, boxes=boxes, masks=masks)
    assert max_err(so, s) <= TOL and max_err(do, dd) <= TOL
    n_points = 0 if points is None else points[0].shape[1]
    assert s.shape[1] == n_points + (2 if boxes is not None else 1 if points is not None else 0)
    assert max_err(op.get_dense_pe(), p.get_dense_pe()) <= TOL


def test_box_as_points_is_the_box_plus_a_padding_token():
    """The same box as corner points (labels 2, 3) or through ``boxes``: the same two corner tokens;
    as points a padding token follows (N' = 3, not 2)."""
    _, op, _, p = pair(seed=2)
    box = torch.tensor([[10.0, 20.0, 90.0, 100.0]])
    as_points = s2.boxes_as_points(Prompts(boxes=box))
    with torch.no_grad():
        via_points, _ = p(points=as_points.points, boxes=None, masks=None)
        via_boxes, _ = p(points=None, boxes=box, masks=None)
        official, _ = op(points=as_points.points, boxes=None, masks=None)
    assert as_points.points[1].tolist() == [[2, 3]]
    assert via_points.shape == (1, 3, 32) and via_boxes.shape == (1, 2, 32)
    assert max_err(via_points[:, :2], via_boxes) <= 1e-6
    assert max_err(via_points[0, 2], p.not_a_point_embed.weight[0]) == 0.0
    assert max_err(official, via_points) <= TOL


# --- SAM 2.1's sizes ------------------------------------------------------------------------------


def test_sam2_1_sizes_with_the_stability_switch():
    od, op = build_official_sam2_pair(seed=11, **ALL_ON, dynamic_multimask_via_stability=True)
    d, p = s2.build_sam2_mask_decoder(), s2.build_sam2_prompt_encoder()  # SAM 2.1's defaults, as build_sam2
    d.load_state_dict(od.state_dict(), strict=True)
    p.load_state_dict(op.state_dict(), strict=True)
    size = dict(transformer_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024))
    kw = inputs(p, 2, 1, 1, size=size, seed=3)
    for multimask in (True, False):
        off, ours = both(od, d, kw, multimask_output=multimask, repeat_image=True)
        K = 3 if multimask else 1
        assert [tuple(t.shape) for t in ours] == [(2, K, 256, 256), (2, K), (2, K, 256), (2, 1)]
        for a, b in zip(off, ours):
            assert max_err(a, b) <= TOL


# --- bad input: clear errors before anything runs, the model as it was ----------------------------


def test_bad_input_is_refused_before_anything_runs():
    _, _, d, p = pair(seed=0, **ALL_ON)
    kw = inputs(p, 3, 1, 1)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    calls = []
    handle = d.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    cases = [
        (dict(kw, image_embeddings=kw["image_embeddings"].repeat(3, 1, 1, 1)), True,
         "repeat_image=True repeats one image"),
        (kw, False, r"repeat_image=False pairs image b with prompt set b.*B x C x H x W = 3 x 32 x 8 x 8"),
        (dict(kw, high_res_features=None), True, "use_high_res_features=True needs high_res_features"),
        (dict(kw, high_res_features=kw["high_res_features"][::-1]), True,
         r"feat_s0\) must be Ih x C/8 x 4H x 4W = Ih x 4 x 32 x 32, got 1 x 8 x 16 x 16"),
        (dict(kw, high_res_features=[kw["high_res_features"][0].repeat(2, 1, 1, 1), kw["high_res_features"][1]]),
         True, "Ih = 2 images"),
    ]
    try:
        for call, repeat_image, message in cases:
            with pytest.raises(ShapeError, match=message):
                d(**call, multimask_output=True, repeat_image=repeat_image)
        with pytest.raises(TypeError, match="repeat_image must be a bool"):
            d(**kw, multimask_output=True, repeat_image=1)
        with pytest.raises(ShapeError, match=r"2 \(box top-left\) or 3 \(box bottom-right\), got \[4\]"):
            p(points=(torch.zeros(1, 1, 2), torch.tensor([[4]])), boxes=None, masks=None)
    finally:
        handle.remove()
    assert not calls  # refused before the transformer ran
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())


# --- SAM 2's structure with SAM's weights -----------------------------------------------------------


def test_sam2_from_sam_copies_what_it_can_and_names_the_rest():
    from sam_explain.modeling import build_mask_decoder, build_prompt_encoder
    from sam_explain.modeling.build import randomize_

    sam_dec = randomize_(build_mask_decoder(transformer_dim=32, num_heads=4, mlp_dim=64, iou_head_hidden_dim=32), 1)
    sam_pe = randomize_(build_prompt_encoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128),
                                             mask_in_chans=8), 2)
    record = s2.sam2_from_sam(sam_pe, sam_dec, seed=5)
    new = {"obj_score_token", "pred_obj_score_head", "conv_s0", "conv_s1"}
    assert {k.split(".")[1] for k in record.untrained} == new and not record.trained
    sam_keys = {f"mask_decoder.{k}" for k in sam_dec.state_dict()} | {f"prompt_encoder.{k}" for k in sam_pe.state_dict()}
    assert set(record.copied.values()) == sam_keys  # every SAM weight is used
    assert record.copied["mask_decoder.transformer.layers.1.mlp.layers.0.weight"] == \
        "mask_decoder.transformer.layers.1.mlp.lin1.weight"
    sd2 = {f"mask_decoder.{k}": v for k, v in record.mask_decoder.state_dict().items()}
    sd2.update({f"prompt_encoder.{k}": v for k, v in record.prompt_encoder.state_dict().items()})
    sd1 = {f"mask_decoder.{k}": v for k, v in sam_dec.state_dict().items()}
    sd1.update({f"prompt_encoder.{k}": v for k, v in sam_pe.state_dict().items()})
    assert all(torch.equal(sd2[k2], sd1[k1]) for k2, k1 in record.copied.items())
    assert set(sd2) == set(record.copied) | set(record.untrained)
    again = s2.sam2_from_sam(sam_pe, sam_dec, seed=5)  # seeded: the same untrained values
    assert all(torch.equal(sd2[k], again.mask_decoder.state_dict()[k.split(".", 1)[1]]) for k in record.untrained)
    # the prompt encoders agree on SAM's labels; the transformer is SAM's, block by block
    coords, labels = prompts(2)
    pts = (coords[:, 2:], labels[:, 2:])
    with torch.no_grad():
        assert torch.equal(record.prompt_encoder(pts, None, None)[0], sam_pe(pts, None, None)[0])
        q, k = torch.randn(2, 7, 32), torch.randn(2, 64, 32)
        a = record.mask_decoder.transformer.layers[1](q, k, q, k)
        b = sam_dec.transformer.layers[1](q, k, q, k)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_project_high_res_features_is_sam2base_forward_image():
    od, _, d, _ = pair(seed=6, **ALL_ON)
    emb = torch.randn(2, 32, 8, 8)
    s0, s1 = s2.stand_in_backbone_features(emb)
    assert s0.shape == (2, 32, 32, 32) and s1.shape == (2, 32, 16, 16)
    with torch.no_grad():
        ours = s2.project_high_res_features(d, s0, s1)
        official = [od.conv_s0(s0), od.conv_s1(s1)]
    assert [tuple(t.shape) for t in ours] == [(2, 4, 32, 32), (2, 8, 16, 16)]
    assert all(max_err(a, b) <= TOL for a, b in zip(ours, official))
    with pytest.raises(ShapeError, match="backbone_s1 must be Ih x C x 2H x 2W = 2 x 32 x 16 x 16"):
        s2.project_high_res_features(d, s0, s0)
