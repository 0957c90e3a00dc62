"""Sam, ResizeLongestSide and SamPredictor against the official code, same random weights.

What runs the official code directly: ``Sam.preprocess``, ``Sam.postprocess_masks``,
``Sam.forward``, and ``SamPredictor`` / ``ResizeLongestSide`` from the PyPI package, whose
only torchvision calls (``to_pil_image``, ``resize`` on a PIL image) are replaced by the
two-line PIL equivalents in ``sam_explain.testing.official_predictor_module``. That image
resize is checked separately against an independent computation (torch's antialiased
bilinear interpolation).
"""

import numpy as np
import pytest
import torch

from sam_explain import ResizeLongestSide, SamPredictor, ShapeError
from sam_explain.build_sam import (
    SAM_CONFIGS, SamCheckpointError, detect_model_type, load_state_dict_strict, make_sam,
)
from sam_explain.testing import TINY_SAM, build_official_sam, official_predictor_module

TOL = 1e-5
IMG = TINY_SAM["image_size"]  # 128: the "1024" of the tiny model


@pytest.fixture(scope="module")
def pair():
    official = build_official_sam(**TINY_SAM, seed=0)
    ours = make_sam(**TINY_SAM)
    load_state_dict_strict(ours, official.state_dict())
    return official, ours


def random_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    # smooth blobs plus noise, so resizing has something to preserve
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx[..., None] / 7.0 + np.arange(3)) * np.cos(yy[..., None] / 11.0)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


# --- ResizeLongestSide ---


def test_preprocess_shape_matches_official():
    official = official_predictor_module().ResizeLongestSide
    for h, w in [(480, 640), (640, 480), (1, 1500), (1023, 1025), (333, 333), (768, 1366), (5, 3)]:
        assert ResizeLongestSide.get_preprocess_shape(h, w, 1024) == official.get_preprocess_shape(h, w, 1024)


def test_coords_and_boxes_match_official():
    official = official_predictor_module().ResizeLongestSide(1024)
    ours = ResizeLongestSide(1024)
    coords = np.array([[10, 20], [639, 479], [0.5, 300.25]])
    boxes = np.array([[10, 20, 300, 400], [0, 0, 639, 479]])
    for size in [(480, 640), (1000, 333)]:
        got, want = ours.apply_coords(coords, size), official.apply_coords(coords, size)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        got, want = ours.apply_boxes(boxes, size), official.apply_boxes(boxes, size)
        assert got.shape == want.shape and np.array_equal(got, want)
        t = torch.tensor(coords)
        assert torch.equal(ours.apply_coords_torch(t, size), official.apply_coords_torch(t, size))
        assert torch.equal(ours.apply_boxes_torch(torch.tensor(boxes), size),
                           official.apply_boxes_torch(torch.tensor(boxes), size))


@pytest.mark.parametrize("h,w", [(300, 400), (400, 300), (90, 100), (50, 20)])
def test_image_resize_agrees_with_an_independent_antialiased_bilinear(h, w):
    image = random_image(h, w, seed=h)
    resized = ResizeLongestSide(256).apply_image(image)
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(h, w, 256)
    assert resized.shape == (new_h, new_w, 3) and resized.dtype == np.uint8
    # torch's antialiased bilinear follows PIL's filter, in float; PIL rounds through
    # fixed-point uint8 arithmetic, so they may differ by one level here and there
    ref = torch.nn.functional.interpolate(
        torch.tensor(image, dtype=torch.float64).permute(2, 0, 1)[None], (new_h, new_w),
        mode="bilinear", align_corners=False, antialias=True,
    )[0].permute(1, 2, 0).numpy()
    diff = np.abs(resized.astype(np.float64) - ref)
    assert diff.max() <= 1.0 and diff.mean() < 0.5
    # and the stand-in used for the official predictor computes the same thing
    official = official_predictor_module().ResizeLongestSide(256)
    assert np.array_equal(official.apply_image(image), resized)


def test_resize_rejects_non_images():
    with pytest.raises(ShapeError, match="H0 x W0 x 3"):
        ResizeLongestSide(64).apply_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ShapeError, match="uint8"):
        ResizeLongestSide(64).apply_image(np.zeros((10, 10, 3), np.float32))


# --- Sam: preprocessing, postprocessing, end to end ---


def test_state_dict_has_no_pixel_buffers(pair):
    official, ours = pair
    assert list(ours.state_dict()) == list(official.state_dict())
    assert "pixel_mean" not in ours.state_dict()
    assert torch.equal(ours.pixel_mean, official.pixel_mean) and torch.equal(ours.pixel_std, official.pixel_std)


@pytest.mark.parametrize("h,w", [(96, 128), (128, 50), (128, 128)])
def test_preprocess_matches_official(pair, h, w):
    official, ours = pair
    x = torch.rand(1, 3, h, w) * 255
    got, want = ours.preprocess(x), official.preprocess(x)
    assert got.shape == want.shape == (1, 3, IMG, IMG)
    assert torch.equal(got, want)


@pytest.mark.parametrize("input_size,original_size", [((96, 128), (300, 400)), ((128, 50), (512, 200)),
                                                      ((128, 128), (77, 77))])
def test_postprocess_matches_official(pair, input_size, original_size):
    official, ours = pair
    low_res = torch.randn(2, 3, 32, 32)  # B x k x 4H x 4W for the 8 x 8 grid
    got = ours.postprocess_masks(low_res, input_size, original_size)
    want = official.postprocess_masks(low_res, input_size, original_size)
    assert got.shape == want.shape == (2, 3) + original_size
    assert (got - want).abs().max().item() < TOL


def test_preprocess_and_postprocess_reject_bad_sizes(pair):
    _, ours = pair
    with pytest.raises(ShapeError, match=r"Hr, Wr <= 128.*got 1 x 3 x 130 x 100"):
        ours.preprocess(torch.zeros(1, 3, 130, 100))
    with pytest.raises(ShapeError, match=r"input_size \(Hr, Wr\) must be within the 128 x 128"):
        ours.postprocess_masks(torch.zeros(1, 1, 32, 32), (200, 100), (400, 200))


def test_sam_forward_matches_official(pair):
    official, ours = pair
    gen = torch.Generator().manual_seed(4)
    batched = [
        {"image": torch.rand(3, 96, 128, generator=gen) * 255, "original_size": (300, 400),
         "point_coords": torch.rand(2, 3, 2, generator=gen) * 90, "point_labels": torch.tensor([[1, 0, 1], [1, 1, 0]]),
         "boxes": torch.tensor([[10.0, 5.0, 80.0, 90.0], [0.0, 0.0, 40.0, 60.0]])},
        {"image": torch.rand(3, 128, 64, generator=gen) * 255, "original_size": (256, 128),
         "mask_inputs": torch.randn(1, 1, 32, 32, generator=gen)},
    ]
    got, want = ours(batched, True), official(batched, True)  # multimask off: see the predictor tests
    for g, w in zip(got, want):
        assert g["masks"].dtype == w["masks"].dtype == torch.bool
        assert (g["low_res_logits"] - w["low_res_logits"]).abs().max().item() < TOL
        assert (g["iou_predictions"] - w["iou_predictions"]).abs().max().item() < TOL
        assert g["masks"].shape == w["masks"].shape
        assert g["masks"].float().mean().item() == pytest.approx(w["masks"].float().mean().item(), abs=1e-3)


# --- SamPredictor ---


@pytest.fixture(scope="module")
def predictors(pair):
    official, ours = pair
    return official_predictor_module().SamPredictor(official), SamPredictor(ours)


def assert_same_outputs(got, want, logits=False):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
    masks_g, iou_g, low_g = got
    masks_w, iou_w, low_w = want
    assert np.abs(iou_g - iou_w).max() < TOL
    assert np.abs(low_g - low_w).max() < TOL
    if logits:
        assert np.abs(masks_g - masks_w).max() < TOL
    else:  # bool masks may only disagree where the logit is within TOL of the threshold
        assert (masks_g != masks_w).mean() < 1e-4


@pytest.mark.parametrize("h,w,fmt", [(150, 200, "RGB"), (210, 90, "BGR")])
def test_predictor_matches_official(predictors, h, w, fmt):
    official, ours = predictors
    image = random_image(h, w, seed=w)
    official.set_image(image, fmt)
    ours.set_image(image, fmt)
    assert ours.input_size == official.input_size and ours.original_size == official.original_size
    assert (ours.get_image_embedding() - official.get_image_embedding()).abs().max().item() < TOL

    points = np.array([[w * 0.3, h * 0.6], [w * 0.7, h * 0.2]])
    labels = np.array([1, 0])
    box = np.array([w * 0.1, h * 0.1, w * 0.8, h * 0.9])
    calls = [
        dict(point_coords=points, point_labels=labels),
        dict(point_coords=points[:1], point_labels=labels[:1], multimask_output=False),
        dict(box=box, multimask_output=False),
        dict(point_coords=points, point_labels=labels, box=box, return_logits=True),
    ]
    for kwargs in calls:
        assert_same_outputs(ours.predict(**kwargs), official.predict(**kwargs), kwargs.get("return_logits", False))
    # feed a low-res output back as the mask prompt, as the official notebooks do
    _, _, low_res = official.predict(point_coords=points, point_labels=labels, multimask_output=False)
    kwargs = dict(point_coords=points, point_labels=labels, mask_input=low_res, multimask_output=False)
    got = ours.predict(**kwargs)
    assert_same_outputs(got, official.predict(**kwargs))
    masks, iou, low = got
    assert masks.shape == (1, h, w) and masks.dtype == bool
    assert iou.shape == (1,) and iou.dtype == np.float32
    assert low.shape == (1, 32, 32) and low.dtype == np.float32


def test_predict_torch_batched_matches_official(predictors):
    official, ours = predictors
    image = random_image(120, 160, seed=7)
    official.set_image(image)
    ours.set_image(image)
    gen = torch.Generator().manual_seed(5)
    coords = ours.transform.apply_coords_torch(torch.rand(3, 2, 2, generator=gen) * 120, (120, 160))
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]])
    boxes = ours.transform.apply_boxes_torch(torch.tensor([[5.0, 5.0, 100.0, 90.0]] * 3), (120, 160))
    for multimask in (True, False):
        got = ours.predict_torch(coords, labels, boxes, multimask_output=multimask, return_logits=True)
        want = official.predict_torch(coords, labels, boxes, multimask_output=multimask, return_logits=True)
        k = 3 if multimask else 1
        assert got[0].shape == want[0].shape == (3, k, 120, 160)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and (g - w).abs().max().item() < TOL


def test_predictor_errors_leave_the_image_in_place(pair):
    _, ours = pair
    predictor = SamPredictor(ours)
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    predictor.set_image(random_image(60, 80))
    features = predictor.get_image_embedding()
    with pytest.raises(ShapeError, match=r"H0 x W0 x 3 \(RGB\), got 60 x 80 x 4"):
        predictor.set_image(np.zeros((60, 80, 4), np.uint8))
    with pytest.raises(ShapeError, match=r"point_coords must be N x 2 and point_labels N, got 2 x 2 and 3"):
        predictor.predict(point_coords=np.zeros((2, 2)), point_labels=np.ones(3))
    assert predictor.get_image_embedding() is features and predictor.original_size == (60, 80)


def test_decoder_attention_hook_fires_during_predict(pair):
    _, ours = pair
    predictor = SamPredictor(ours)
    predictor.set_image(random_image(64, 100))
    seen = []
    attn = ours.mask_decoder.transformer.final_attn_token_to_image
    handle = attn.hook_probs.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    predictor.predict(point_coords=np.array([[50, 30]]), point_labels=np.array([1]))
    handle.remove()
    # B x h x T x HW: 1 prompt set, 8 heads, T = 5 + N' = 5 + 2 (a click and the padding point), 8 x 8 grid
    assert [t.shape for t in seen] == [(1, 8, 7, 64)]


# --- building and loading ---


@pytest.mark.parametrize("model_type", sorted(SAM_CONFIGS))
def test_model_type_detected_from_keys(model_type):
    with torch.device("meta"):  # shapes only, no memory
        state_dict = make_sam(**SAM_CONFIGS[model_type]).state_dict()
    assert detect_model_type(state_dict) == model_type


def test_strict_loading_names_the_bad_keys(pair):
    official, _ = pair
    state_dict = dict(official.state_dict())
    state_dict.pop("image_encoder.neck.0.weight")
    state_dict["image_encoder.extra"] = torch.zeros(1)
    state_dict["mask_decoder.iou_token.weight"] = torch.zeros(2, 32)
    target = make_sam(**TINY_SAM)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(SamCheckpointError) as info:
        load_state_dict_strict(target, state_dict)
    message = str(info.value)
    assert "missing (1): image_encoder.neck.0.weight" in message
    assert "unexpected (1): image_encoder.extra" in message
    assert "misshapen (1): mask_decoder.iou_token.weight: model (1, 32), checkpoint (2, 32)" in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    with pytest.raises(SamCheckpointError, match="no 'image_encoder.pos_embed'"):
        detect_model_type({"mask_decoder.iou_token.weight": torch.zeros(1, 256)})


def test_tracer_and_attention_recorder_see_the_whole_pipeline(pair):
    from sam_explain.attention import record_attention
    from sam_explain.tracing import trace_shapes

    _, ours = pair
    predictor = SamPredictor(ours)
    image = random_image(64, 100)
    with trace_shapes(ours, on_demand=True) as trace:  # the encoder's maps too: it builds them then
        predictor.set_image(image)
        masks, _, _ = predictor.predict(point_coords=np.array([[50, 30]]), point_labels=np.array([1]))
    # the encoder's windowed and global attention maps, then the decoder's, in one trace
    assert [r.output_shape for r in trace.find("image_encoder.blocks.0.attn.hook_probs")] == [(9, 2, 9, 9)]
    assert [r.output_shape for r in trace.find("image_encoder.blocks.1.attn.hook_probs")] == [(1, 2, 64, 64)]
    assert [r.output_shape for r in trace.find("image_encoder")] == [(1, 32, 8, 8)]
    final = "mask_decoder.transformer.final_attn_token_to_image.hook_probs"
    assert [r.output_shape for r in trace.find(final)] == [(1, 8, 7, 64)]
    assert not trace.mismatches()
    with record_attention(ours) as record:
        predictor.predict(point_coords=np.array([[50, 30]]), point_labels=np.array([1]))
    assert record["mask_decoder.transformer.final_attn_token_to_image"].shape == (1, 8, 7, 64)
    assert not any(name.startswith("image_encoder") for name in record.probs)  # the decoder's maps only
