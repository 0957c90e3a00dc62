"""The deployed decoder (issue 31): our ONNX export against the official one, in onnxruntime, same weights.

The official export is restated from Meta's ``scripts/export_onnx_model.py`` (not in the PyPI package):
``SamOnnxModel(model, return_single_mask)``, the script's dummy inputs, and its ``torch.onnx.export`` call
(the legacy exporter, ``dynamo=False``). Each file is exported once per module (fixtures below).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn

from sam_explain.cli import main
from sam_explain.shapes.check import ShapeError
from sam_explain.testing import official_onnx_export, official_onnx_model
from sam_explain.utils.onnx import OnnxDecoder, export_onnx_model, onnx_prompt
from sam_explain.utils.transforms import postprocess_masks, resized_shape

LOW_RES_TOL, IOU_TOL, MASKS_TOL = 1e-4, 1e-4, 2e-3


def official_export(official_decoder: nn.Module, official_pe: nn.Module, path, return_single_mask: bool,
                    gelu_approximate: bool = False, **flags) -> None:
    """The official script's export of the two official modules (sam_explain.testing restates it)."""
    official_onnx_export(official_onnx_model(official_decoder, official_pe, return_single_mask, **flags), path,
                         gelu_approximate=gelu_approximate)


@pytest.fixture(scope="module")
def decoders(sam_pair, tmp_path_factory):
    """{(who, return_single_mask): OnnxDecoder}, who in ("ours", "official"), same weights."""
    od, op, d, p = sam_pair
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    found = {}
    for single in (False, True):
        ours, official = folder / f"ours_{single}.onnx", folder / f"official_{single}.onnx"
        export_onnx_model(p, d, ours, return_single_mask=single)
        official_export(od, op, official, single)
        found["ours", single] = OnnxDecoder(ours, threads=2)
        found["official", single] = OnnxDecoder(official, threads=2)
    return found


def embeddings(seed: int = 0, channels: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, channels, 64, 64)).astype(np.float32)  # 1 x C x H x W


def low_res_mask(seed: int = 1) -> np.ndarray:
    return (4 * np.random.default_rng(seed).standard_normal((1, 1, 256, 256))).astype(np.float32)  # 1 x 1 x 4H x 4W


# (name, clicks (x, y, label) in the 1024 frame, box or None, mask input?, orig_im_size (H0, W0)).
# Every size here resizes to Hr x Wr = 683 x 1024, the crop the official file holds (see the last test
# of this group): there the official file is right, and the upscaled masks are compared too.
CASES = [
    ("one click", [(500, 300, 1)], None, False, (600, 900)),
    ("three clicks", [(500, 300, 1), (200, 120, 0), (640, 410, 1)], None, False, (900, 1350)),
    ("a box alone", [], (100, 200, 600, 700), False, (300, 450)),
    ("a click and a box, mask input", [(350, 420, 1)], (100, 200, 600, 700), True, (750, 1125)),
    ("one click, mask input", [(300, 600, 1)], None, True, (450, 675)),
]
# sizes of other shapes, where the official file's crop is wrong: compared with the PyTorch path
OTHER_SIZES = [(768, 1024), (1024, 683), (333, 1000)]


def case_inputs(case):
    _, clicks, box, with_mask, size = case
    points = np.array([c[:2] for c in clicks], dtype=np.float64) if clicks else None  # P x 2
    labels = np.array([c[2] for c in clicks]) if clicks else None  # P
    coords, point_labels = onnx_prompt(points, labels, box)  # 1 x N x 2, 1 x N
    return coords, point_labels, (low_res_mask() if with_mask else None), size


def pytorch_path(sam_pair, case, size):
    """Our PromptEncoder + MaskDecoder + postprocess_masks on the case (boxes as boxes, the padding point
    added by the PromptEncoder): (low-res 1 x 4 x 4H x 4W, masks 1 x 4 x H0 x W0), all four tokens in
    order, as the graph returns them."""
    _, _, d, p = sam_pair
    _, clicks, box, with_mask, _ = case
    points = (torch.tensor([c[:2] for c in clicks], dtype=torch.float32)[None],
              torch.tensor([[c[2] for c in clicks]])) if clicks else None  # 1 x P x 2, 1 x P
    boxes = torch.tensor([box], dtype=torch.float32) if box else None  # 1 x 4
    with torch.no_grad():
        sparse, dense = p(points, boxes, torch.from_numpy(low_res_mask()) if with_mask else None)
        # all four tokens: forward(multimask_output=False) returns token 0 of these, True tokens 1..3
        low_res, _ = d.predict_masks(torch.from_numpy(embeddings()), p.get_dense_pe(), sparse, dense)  # 1 x 4 x 4H x 4W
        masks = postprocess_masks(low_res, resized_shape(size), size)  # 1 x 4 x H0 x W0
    return low_res.numpy(), masks.numpy()


@pytest.mark.parametrize("single", [False, True], ids=["all masks", "single mask"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_our_export_matches_the_official_export(decoders, case, single):
    coords, labels, mask, size = case_inputs(case)
    emb = embeddings()
    ours = decoders["ours", single](emb, coords, labels, size, mask)
    official = decoders["official", single](emb, coords, labels, size, mask)
    k = 1 if single else 4
    assert ours["masks"].shape == official["masks"].shape == (1, k, *size)
    assert ours["low_res_masks"].shape == (1, k, 256, 256) and ours["iou_predictions"].shape == (1, k)
    np.testing.assert_allclose(ours["low_res_masks"], official["low_res_masks"], rtol=0, atol=LOW_RES_TOL)
    np.testing.assert_allclose(ours["iou_predictions"], official["iou_predictions"], rtol=0, atol=IOU_TOL)
    np.testing.assert_allclose(ours["masks"], official["masks"], rtol=0, atol=MASKS_TOL)
    assert 0.0 < (ours["masks"] > 0).mean() < 1.0  # a mask, neither empty nor everything


@pytest.mark.parametrize("case", CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_single_mask_is_picked_by_the_official_score(decoders, case):
    """N <= 2 (one click and its padding point, a box alone): the best of tokens 1..3; N >= 3: token 0."""
    coords, labels, mask, size = case_inputs(case)
    emb = embeddings()
    every = decoders["ours", False](emb, coords, labels, size, mask)
    one = decoders["ours", True](emb, coords, labels, size, mask)
    iou = every["iou_predictions"][0]  # M
    expected = 0 if coords.shape[1] >= 3 else 1 + int(np.argmax(iou[1:]))
    np.testing.assert_array_equal(one["iou_predictions"][0], iou[expected:expected + 1])
    np.testing.assert_array_equal(one["low_res_masks"][0, 0], every["low_res_masks"][0, expected])


PYTORCH_CASES = [(CASES[1], CASES[1][-1])] + list(zip(CASES[2:], OTHER_SIZES))  # box, click + box, mask input


@pytest.mark.parametrize("case, size", PYTORCH_CASES, ids=[f"{c[0]}, {h}x{w}" for c, (h, w) in PYTORCH_CASES])
def test_our_export_matches_the_pytorch_path(decoders, sam_pair, case, size):
    coords, labels, mask, _ = case_inputs(case)
    out = decoders["ours", False](embeddings(), coords, labels, size, mask)
    low_res, masks = pytorch_path(sam_pair, case, size)
    np.testing.assert_allclose(out["low_res_masks"], low_res, rtol=0, atol=LOW_RES_TOL)
    np.testing.assert_allclose(out["masks"], masks, rtol=0, atol=MASKS_TOL)


def test_the_official_file_crops_every_image_as_its_example_input(decoders, sam_pair):
    """The official SamOnnxModel crops with ``int(...)``, which the tracer records as a constant: the file
    crops every image to the Hr x Wr = 683 x 1024 of the script's 1500 x 2250 example. Ours stays dynamic."""
    case, size = CASES[0], (768, 1024)  # resized 768 x 1024
    coords, labels, mask, _ = case_inputs(case)
    _, reference = pytorch_path(sam_pair, case, size)
    ours = decoders["ours", False](embeddings(), coords, labels, size, mask)
    official = decoders["official", False](embeddings(), coords, labels, size, mask)["masks"]
    assert np.abs(ours["masks"] - reference).max() < MASKS_TOL
    assert np.abs(official - reference).max() > 1.0
    # what the official file did: the 683 x 1024 crop, stretched to 768 x 1024
    stretched = postprocess_masks(torch.from_numpy(ours["low_res_masks"]), (683, 1024), size).numpy()
    np.testing.assert_allclose(official, stretched, rtol=0, atol=MASKS_TOL)


def test_hook_points_are_absent_from_the_graph(decoders, sam_pair, tmp_path):
    import onnx

    graph = onnx.load(str(decoders["ours", False].path)).graph
    names = [n.name for n in graph.node] + [t.name for t in graph.initializer] + \
        [v for n in graph.node for v in (*n.input, *n.output)]
    assert any("/transformer/layers.0/self_attn/" in n for n in names)  # module scopes do name the nodes
    assert not [n for n in names if "hook_" in n]
    # a hooked HookPoint would put its hook's work into the graph: refused
    _, _, d, p = sam_pair
    handle = d.transformer.layers[0].self_attn.hook_probs.register_forward_hook(lambda m, i, o: None)
    try:
        with pytest.raises(ValueError, match="remove the hooks before exporting: 1 hook points are hooked "
                                             r"\(transformer.layers.0.self_attn.hook_probs\)"):
            export_onnx_model(p, d, tmp_path / "hooked.onnx")
    finally:
        handle.remove()
    assert not (tmp_path / "hooked.onnx").exists()


def test_the_official_scripts_other_options_match(tmp_path):
    """use_stability_score, return_extra_metrics and gelu_approximate, all at once with return_single_mask,
    on a small decoder (C = 32): the five outputs by position (the official file names only three)."""
    from sam_explain import build_mask_decoder, build_prompt_encoder
    from sam_explain.testing import build_official_pair

    small = dict(transformer_dim=32, mlp_dim=64, iou_head_hidden_dim=32)
    od, op = build_official_pair(**small, seed=2)
    d, p = build_mask_decoder(**small), build_prompt_encoder(embed_dim=32)
    d.load_state_dict(od.state_dict())
    p.load_state_dict(op.state_dict())
    options = dict(use_stability_score=True, return_extra_metrics=True, gelu_approximate=True)
    export_onnx_model(p, d, tmp_path / "ours.onnx", return_single_mask=True, **options)
    torch.manual_seed(0)
    official_export(od, op, tmp_path / "official.onnx", True, **options)
    assert {m.approximate for m in d.modules() if isinstance(m, nn.GELU)} == {"none"}  # restored
    ours, official = OnnxDecoder(tmp_path / "ours.onnx", threads=2), OnnxDecoder(tmp_path / "official.onnx", threads=2)
    assert ours.output_names == ["masks", "iou_predictions", "stability_scores", "areas", "low_res_masks"]
    for clicks in ([[500.0, 300.0]], [[500.0, 300.0], [100.0, 700.0]]):
        coords, labels = onnx_prompt(np.array(clicks), np.ones(len(clicks)))
        a = list(ours(embeddings(channels=32), coords, labels, (600, 900)).values())
        b = list(official(embeddings(channels=32), coords, labels, (600, 900)).values())
        assert [x.shape for x in a] == [x.shape for x in b] == [(1, 1, 600, 900), (1, 1), (1, 1), (1, 1), (1, 1, 256, 256)]
        np.testing.assert_array_equal(a[3], b[3])  # areas, pixels
        for x, y, tol in zip(a, b, (MASKS_TOL, IOU_TOL, 1e-3, None, LOW_RES_TOL)):
            if tol is not None:
                np.testing.assert_allclose(x, y, rtol=0, atol=tol)
        assert 0 < a[3][0, 0] < 600 * 900


def test_onnx_prompt_follows_the_padding_convention():
    coords, labels = onnx_prompt(np.array([[10.0, 20.0]]), np.array([1]))
    np.testing.assert_array_equal(coords, [[[10, 20], [0, 0]]])
    np.testing.assert_array_equal(labels, [[1, -1]])
    coords, labels = onnx_prompt(np.array([[10.0, 20.0]]), np.array([0]), box=np.array([1, 2, 3, 4]))
    np.testing.assert_array_equal(coords, [[[10, 20], [1, 2], [3, 4]]])
    np.testing.assert_array_equal(labels, [[0, 2, 3]])
    # original pixels of a 600 x 800 image -> the 768 x 1024 resized frame; the padding point stays at 0
    coords, labels = onnx_prompt(np.array([[400.0, 300.0]]), np.array([1]), original_size=(600, 800))
    np.testing.assert_allclose(coords, [[[512, 384], [0, 0]]])
    with pytest.raises(ShapeError, match="onnx_prompt: click labels must be 1 .* or 0 .*, got \\[2.0\\]"):
        onnx_prompt(np.array([[1.0, 2.0]]), np.array([2]))
    with pytest.raises(ShapeError, match="onnx_prompt: box must be 4, got 2 x 2"):
        onnx_prompt(box=np.array([[1, 2], [3, 4]]))


BAD_INPUTS = [
    ("point_coords", np.zeros((1, 3), np.float32), r"point_coords must be 1 x N x 2, got 1 x 3 \(2 dims where 3"),
    ("point_coords", np.zeros((2, 3, 2), np.float32), "point_coords must be 1 x N x 2, got 2 x 3 x 2"),
    ("point_coords", np.zeros((1, 0, 2), np.float32), "point_coords must be 1 x N x 2 with N >= 1, got 1 x 0 x 2"),
    ("point_labels", np.ones((1, 3), np.float32), "point_labels must be 1 x N = 1 x 2, got 1 x 3"),
    ("point_labels", np.array([[1, 5]], np.float32), r"point_labels must be -1 \(padding\), 0 .* got \[5.0\]"),
    ("point_labels", np.array([[0.9, -1]], np.float32), r"point_labels must be whole numbers .* got \[0\.[89]"),
    ("mask_input", np.full((1, 1, 256, 256), np.nan, np.float32), "mask_input holds 65536 non-finite value"),
    ("image_embeddings", np.zeros((1, 32, 64, 64), np.float32),
     "image_embeddings must be 1 x C x H x W = 1 x 256 x 64 x 64, got 1 x 32 x 64 x 64"),
    ("mask_input", np.zeros((1, 1, 64, 64), np.float32),
     "mask_input must be 1 x 1 x 4H x 4W = 1 x 1 x 256 x 256, got 1 x 1 x 64 x 64"),
    ("has_mask_input", np.array([0.5], np.float32), r"has_mask_input must be \[1\] or \[0\], got \[0.5\]"),
    ("orig_im_size", np.array([480, 640, 3], np.float32), "orig_im_size must be 2, got 3"),
    ("orig_im_size", np.array([0, 640], np.float32), r"orig_im_size must be \(H0, W0\), two whole numbers >= 1"),
    ("point_coords", np.array([["a", "b"]]), "point_coords must be a real-valued .* got an array of <U1"),
]


@pytest.mark.parametrize("name, value, message", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_inputs_raise_shape_errors_before_running(decoders, name, value, message):
    decoder = OnnxDecoder(decoders["ours", False].path)

    class Untouchable:
        def run(self, *args, **kwargs):
            raise AssertionError("the graph ran on a bad input")

    decoder.session = Untouchable()
    coords, labels = onnx_prompt(np.array([[500.0, 300.0]]), np.array([1]))
    feeds = {"image_embeddings": embeddings(), "point_coords": coords, "point_labels": labels,
             "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
             "orig_im_size": np.array([480, 640], np.float32)}
    feeds[name] = value
    with pytest.raises(ShapeError, match="OnnxDecoder: " + message):
        decoder.run(feeds)


def test_missing_inputs_and_bad_export_options_are_refused(decoders, sam_pair, tmp_path):
    with pytest.raises(ShapeError, match=r"missing \['orig_im_size'\], unknown \['size'\]"):
        decoders["ours", False].run({"image_embeddings": embeddings(), "point_coords": np.zeros((1, 1, 2)),
                                     "point_labels": np.zeros((1, 1)), "mask_input": np.zeros((1, 1, 256, 256)),
                                     "has_mask_input": np.zeros(1), "size": np.array([4, 4])})
    _, _, d, p = sam_pair
    with pytest.raises(ValueError, match="opset must be in 12..23, got 11"):
        export_onnx_model(p, d, tmp_path / "x.onnx", opset=11)


def test_command_exports_the_toy(tmp_path, capsys):
    from sam_explain import toy_model

    out = tmp_path / "toy.onnx"
    assert main(["export-onnx", "--toy", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exported the toy model" in printed and "256 x 256 resized frame" in printed
    assert "masks             1 x 4 x 1500 x 2250" in printed
    model = toy_model().eval()
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))  # 1 x C x H x W
    coords, labels = onnx_prompt(np.array([[120.0, 80.0]]), np.array([1]))
    result = OnnxDecoder(out, threads=2)(emb.numpy(), coords, labels, (256, 256))
    with torch.no_grad():
        masks, iou = model.predict(emb, points=[(120, 80)])  # 1 x 3 x 256 x 256 logits, 1 x 3
    np.testing.assert_allclose(result["iou_predictions"][:, 1:], iou.numpy(), rtol=0, atol=IOU_TOL)
    np.testing.assert_allclose(result["masks"][:, 1:], masks.numpy(), rtol=0, atol=MASKS_TOL)


def test_command_exports_an_official_checkpoint(tmp_path, capsys):
    """A tiny official-layout file (image encoder, prompt encoder, decoder): the exported graph gives
    what the official SamOnnxModel gives in PyTorch on the same Sam."""
    from sam_explain.testing import TINY_SAM, build_official_sam

    sam = build_official_sam(**{**TINY_SAM, "image_size": 1024})  # C = 32, a 64 x 64 grid
    torch.save(sam.state_dict(), tmp_path / "tiny_sam.pth")
    out = tmp_path / "tiny.onnx"
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "tiny_sam.pth"), "--out", str(out),
                 "--return-single-mask"]) == 0
    assert "(official) to" in capsys.readouterr().out
    emb = embeddings(seed=3, channels=32)
    coords, labels = onnx_prompt(np.array([[300.0, 500.0], [700.0, 200.0]]), np.array([1, 0]))
    result = OnnxDecoder(out, threads=2)(emb, coords, labels, (600, 900))
    reference = importlib.import_module("segment_anything.utils.onnx").SamOnnxModel(sam, return_single_mask=True)
    masks, iou, low_res = reference(torch.from_numpy(emb), torch.from_numpy(coords), torch.from_numpy(labels),
                                    torch.zeros(1, 1, 256, 256), torch.zeros(1), torch.tensor([600.0, 900.0]))
    assert result["masks"].shape == (1, 1, 600, 900)
    np.testing.assert_allclose(result["low_res_masks"], low_res.numpy(), rtol=0, atol=LOW_RES_TOL)
    np.testing.assert_allclose(result["iou_predictions"], iou.numpy(), rtol=0, atol=IOU_TOL)
    np.testing.assert_allclose(result["masks"], masks.numpy(), rtol=0, atol=MASKS_TOL)


def test_command_refuses_a_decoder_only_checkpoint(sam_pair, tmp_path):
    _, _, d, _ = sam_pair
    torch.save(d.state_dict(), tmp_path / "decoder.pth")
    with pytest.raises(SystemExit, match="sam-explain export-onnx: .*decoder.pth holds no prompt encoder "
                                         r"\(decoder layout\); the export needs both: .* input image size"):
        main(["export-onnx", "--checkpoint", str(tmp_path / "decoder.pth"), "--out", str(tmp_path / "x.onnx")])
    assert not (tmp_path / "x.onnx").exists()
