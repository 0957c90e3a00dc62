"""The live explorer (sam_explain/explorer): the session that runs the decoder and renders, the
anywidget that shows it, and what a saved or exported notebook shows without a kernel. The page
side is tested in a real browser by tests_browser/ (`make browser-test`)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
import torch

from sam_explain import ShapeError, render
from sam_explain.explorer import ExplorerSession, load_backend
from sam_explain.explorer.session import PANEL


@pytest.fixture(scope="module")
def backend():
    """The trained toy model on toy scene 0, embedded once for the whole module."""
    return load_backend()


@pytest.fixture
def session(backend):
    return ExplorerSession(backend=backend)


def main_panel(session: ExplorerSession) -> np.ndarray:
    x, y, w, h = session.geometry.main
    return session.picture[y:y + h, x:x + w]


def test_starts_with_a_click_inside_the_largest_object(session):
    from sam_explain.toy import click_inside, make_scene

    scene = make_scene(seed=0)
    largest = scene.object_masks[int(np.argmax(scene.object_masks.reshape(len(scene.object_masks), -1).sum(1)))]
    assert session.points == [(*click_inside(largest), 1)] and session.runs == 1
    picture = session.picture
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert max(session.geometry.main[2:]) == PANEL == 512  # sharp: 512 pixels on the long side
    assert session.token == session.best_mask_token() and session.iou.shape == (3,)


def test_a_click_runs_the_decoder_with_every_map_and_renders(session):
    before, iou = session.picture.copy(), session.iou.copy()
    picture = session.click(40.0, 200.0, label=0)
    assert picture is session.picture and session.runs == 2
    assert not np.array_equal(picture, before) and not np.allclose(session.iou, iou)
    record = session.record
    assert record.names(0)[5:] == ["point0 (+)", "point1 (-)", "pad"]
    assert sorted(str((s.layer, s.kind)) for s in record.sites.values()) == sorted(str(site) for site in [
        (0, "token_self"), (0, "token_to_image"), (0, "image_to_token"), (1, "token_self"),
        (1, "token_to_image"), (1, "image_to_token"), ("final", "token_to_image")])
    assert sorted(record) == sorted(record.sites)  # and each of them was recorded
    assert all(record[n].shape[1] == 8 for n in record)  # every head kept, not their mean
    # the background click is drawn in red at its place on the 512 x 512 panel (2 panel pixels per image pixel)
    np.testing.assert_array_equal(main_panel(session)[400, 80], render.BACKGROUND)


def test_a_control_change_only_renders(session):
    runs, renders = session.runs, session.renders
    for kind, layer, head, token in [("token_to_image", 0, 3, "mask0"), ("image_to_token", 1, "mean", "point0"),
                                     ("token_to_image", "final", 7, "iou"), ("token_self", 0, 2, "mask2")]:
        session.select(kind=kind, layer=layer, head=head, token=token)
        token_arg = None if kind == "token_self" else token
        want = session.record.map(kind, layer, token_arg, head).numpy()
        np.testing.assert_allclose(session.current_map(), want, rtol=1e-6, atol=1e-8)
    assert session.runs == runs and session.renders == renders + 4
    # token self-attention: the T x T matrix fills the main panel, the query row outlined, no click there
    meta = session.meta()
    assert meta["matrix"]["names"] == session.names() and not meta["clickable"]


def test_the_picture_shows_the_map_the_masks_and_the_outline(session):
    picture = session.select(kind="token_to_image", layer="final", head="mean", token="mask1", outline=0.5)
    grid = session.current_map()
    resample = render.map_resampler(grid.shape, session.image_size, 256, session.geometry.gray.shape)
    heat = resample(grid)  # 512 x 512
    panel = main_panel(session).astype(int)
    gray = session.geometry.gray.astype(int)
    hot, cold = heat >= np.percentile(heat, 99.5), heat <= np.percentile(heat, 50)
    change = np.abs(panel - gray[..., None]).sum(-1)  # how far each pixel is from the dimmed image
    assert change[hot].mean() > 150 and change[cold].mean() < 15
    assert np.all(panel == render.OUTLINE_COLOUR, axis=-1).sum() > 20  # the cyan outline of half the attention
    # a mask panel shows the mask where the low-res logits are positive
    x, y, w, h = session.geometry.thumbs[2]
    on = render.map_resampler(session.masks.shape[-2:], session.image_size, 256, (h, w))(session.masks[2]) > 0
    thumb = picture[y:y + h, x:x + w].astype(int)
    tinted = np.abs(thumb - session.geometry.thumb_gray.astype(int)[..., None]).sum(-1) > 30
    assert on.sum() > 50 and tinted[on].mean() > 0.9
    no_outline = session.select(outline=None)
    assert not np.all(main_panel(session) == render.OUTLINE_COLOUR, axis=-1).any()
    assert not np.array_equal(no_outline, picture)


def test_box_undo_and_reset(session):
    first = list(session.points)
    session.box(10, 20, 120, 90)
    assert session.box_xyxy == (10.0, 20.0, 120.0, 90.0) and session.names()[-2:] == ["box corner 0", "box corner 1"]
    session.box(120, 90, 30, 40)  # corners in any order
    assert session.box_xyxy == (30.0, 40.0, 120.0, 90.0)
    session.undo()
    assert session.box_xyxy == (10.0, 20.0, 120.0, 90.0)
    session.reset()
    assert session.points == [] and session.box_xyxy is None and session.record is None
    np.testing.assert_array_equal(main_panel(session), session.geometry.colour)  # the plain image
    session.undo()
    assert session.points == first and session.box_xyxy == (10.0, 20.0, 120.0, 90.0)
    session.undo()
    session.undo()
    assert session.points == first and session.box_xyxy is None and not session.history
    assert session.undo() is session.picture  # nothing left to undo


def test_bad_input_is_refused_before_anything_changes(session):
    state = (list(session.points), session.runs, session.kind, session.layer, session.head, session.token)
    with pytest.raises(ValueError, match=r"0 <= x <= W0 = 256 and 0 <= y <= H0 = 256, got \(300, 10\)"):
        session.click(300, 10)
    with pytest.raises(ValueError, match="label must be 1 .* or 0 .*, got 2"):
        session.click(10, 10, label=2)
    with pytest.raises(ValueError, match="finite numbers"):
        session.click(float("nan"), 10)
    with pytest.raises(ValueError, match="corners must differ"):
        session.box(10, 10, 10, 50)
    with pytest.raises(ValueError, match=r"kind must be one of .*got 'heads'"):
        session.select(kind="heads")
    with pytest.raises(ValueError, match=r"layer must be one of \[0, 1\] for image_to_token, got 'final'"):
        session.select(kind="image_to_token", layer="final")
    with pytest.raises(ValueError, match=r"head must be 'mean' or an index in 0..h-1 = 0..7, got 8"):
        session.select(layer=0, head=8)
    with pytest.raises(ValueError, match=r"no token named 'mask9'; tokens are \['iou', 'mask0'"):
        session.select(head=2, token="mask9")
    with pytest.raises(ValueError, match=r"outline must be None or a share"):
        session.select(outline=0)
    assert state == (list(session.points), session.runs, session.kind, session.layer, session.head, session.token)


def test_a_failing_run_leaves_the_model_its_hooks_and_the_prompts(session):
    decoder = session.backend.mask_decoder
    hooks = lambda: sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in decoder.modules())  # noqa: E731
    points, record, before = list(session.points), session.record, hooks()

    def boom(module, args):
        raise RuntimeError("boom")

    handle = decoder.transformer.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            session.click(30, 30)
    finally:
        handle.remove()
    assert hooks() == before and session.points == points and session.record is record


def test_models_and_images_are_checked(backend):
    from sam_explain.toy import ToyModel

    with pytest.raises(ShapeError, match="H0 x W0 x 3 = 256 x 256 x 3, got 100 x 100 x 3"):
        load_backend(ToyModel(), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ShapeError, match="must be uint8"):
        load_backend(ToyModel(), np.zeros((256, 256, 3), np.float32))
    with pytest.raises(TypeError, match="model must be None .* got int"):
        load_backend(3)


def test_sam_embeds_the_image_once():
    """A (tiny, random) SAM through a SamPredictor: the image encoder runs once, clicks only the decoder."""
    from sam_explain import SamPredictor
    from sam_explain.build_sam import make_sam
    from sam_explain.testing import TINY_SAM

    torch.manual_seed(0)
    sam = make_sam(**TINY_SAM).eval()
    calls = []
    sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    image = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    with pytest.raises(ValueError, match="give the image"):
        ExplorerSession(SamPredictor(sam))
    session = ExplorerSession(SamPredictor(sam), image)
    assert session.points == [] and session.record is None  # no first click on a photo
    session.click(60, 45)
    session.click(100, 20, 0)
    session.select(kind="image_to_token", layer=0, token="point1")
    assert len(calls) == 1 and session.runs == 2
    assert session.geometry.main[2:] == (512, 384)  # 120 x 90 shown at 512 x 384
    assert session.masks.shape == (3, 4 * 8, 4 * 8)  # the tiny SAM's 4H x 4W low-res masks
    predictor = SamPredictor(sam)
    predictor.set_image(image)  # as a notebook does before making the explorer
    with pytest.raises(ValueError, match="set with this H0 x W0 = 60 x 120 image, it holds 90 x 120"):
        ExplorerSession(predictor, image[:60], reuse_embedding=True)
    again = ExplorerSession(predictor, image, reuse_embedding=True)
    again.click(60, 45)
    assert len(calls) == 2  # set_image once, the explorer none
    fresh = ExplorerSession(SamPredictor(sam), image)
    fresh.click(60, 45)
    np.testing.assert_allclose(again.iou, fresh.iou, atol=1e-6)  # the same embedding


def test_the_pixel_ratio_sharpens_the_picture(backend):
    session = ExplorerSession(backend=backend, ratio=2.0)
    assert session.geometry.main[2:] == (1024, 1024)
    assert session.set_ratio(0.5).shape[0] == 512  # never below 512 pixels
    with pytest.raises(ValueError, match="pixel ratio must be a positive number"):
        session.set_ratio(float("nan"))


def test_no_matplotlib_in_the_interactive_loop():
    code = ("import sys, sam_explain.explorer as e\n"
            "s = e.ExplorerSession(); s.click(30, 40); s.select(kind='image_to_token', layer=1, head=2)\n"
            "s.select(kind='token_self'); print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_trace_of_the_last_run(session):
    html = session.trace_html()
    assert html.startswith("<style>") and "<table" in html and "mask_decoder.transformer" in html
    session.reset()
    assert "No prompt yet" in session.trace_html()


# ---- the widget ----------------------------------------------------------------------------------------

def test_the_page_code_fetches_nothing():
    js = (resources.files("sam_explain.explorer") / "static" / "explorer.js").read_text(encoding="utf-8")
    assert not re.search(r"^\s*import\b|\bimport\s*\(|https?:|//cdn|fetch\(", js, re.MULTILINE)
    assert "export default { render }" in js


def test_widget_syncs_the_picture_and_answers_the_page(backend):
    pytest.importorskip("anywidget")
    from sam_explain.explorer.widget import LiveExplorer

    widget = LiveExplorer(ExplorerSession(backend=backend))
    meta, seq = widget.meta, widget.meta["seq"]
    assert len(widget.picture) == meta["width"] * meta["height"] * 3 and meta["ious"] == [
        round(float(v), 4) for v in widget.session.iou]
    picture = widget.click(200, 200)
    assert picture.shape == (meta["height"], meta["width"], 3) and widget.picture == picture.tobytes()
    assert widget.meta["seq"] == seq + 1 and widget.meta["points"] == 2
    widget._on_message(widget, {"type": "select", "kind": "image_to_token", "layer": 1, "head": 4,
                                "token": "point1 (+)", "outline": None}, [])
    assert widget.session.kind == "image_to_token" and widget.meta["head"] == 4 and widget.meta["outline"] is None
    widget._on_message(widget, {"type": "click", "x": 999, "y": 3, "label": 1}, [])
    assert widget.meta["message"].startswith("refused: click: (x, y) must lie on the image")
    assert widget.meta["points"] == 2
    widget._on_message(widget, {"type": "box", "x0": 10, "y0": 10, "x1": 60, "y1": 80}, [])
    assert widget.meta["has_box"] and widget.meta["message"] == ""
    widget._on_message(widget, {"type": "trace"}, [])
    assert "<table" in widget.trace_html
    widget._on_message(widget, {"type": "undo"}, [])
    assert not widget.meta["has_box"] and widget.trace_html == ""  # a new run: the old trace goes
    widget.pixel_ratio = 2.0  # what the page sends on a high-density display
    assert widget.meta["width"] == 2 * meta["width"] and widget.meta["ratio"] == 2.0


def test_without_a_kernel_the_output_shows_the_picture(backend):
    pytest.importorskip("anywidget")
    import base64
    import io

    from PIL import Image

    from sam_explain.explorer.widget import LiveExplorer

    widget = LiveExplorer(ExplorerSession(backend=backend))
    data, _ = widget._repr_mimebundle_()
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == widget.model_id
    page = data["text/html"]
    assert "Live explorer: it needs a running kernel." in page and "http" not in page
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), widget.session.picture)
