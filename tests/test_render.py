"""The one renderer (sam_explain/render.py): its geometry against SAM's, its colours against
matplotlib's inferno, its limits and outlines, and the legibility of the overlays it draws: on six
toy scenes a learner must see at a glance where the decoder reads the image."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sam_explain import render
from sam_explain.utils.transforms import grid_to_image, resized_shape

RENDER = Path(render.__file__)


def test_the_renderer_is_numpy_only():
    """No matplotlib and no torch in the renderer: its imports are numpy and the standard library."""
    tree = ast.parse(RENDER.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0] if not node.level else "." + (node.module or ""))
    assert imported <= {"__future__", "functools", "dataclasses", "typing", "numpy"}, imported


def test_inferno_is_matplotlibs():
    expected = matplotlib.colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0
    assert render.INFERNO.shape == (256, 3) and render.INFERNO.dtype == np.uint8
    assert np.abs(render.INFERNO.astype(np.float64) - expected).max() <= 0.5


@pytest.mark.parametrize("n_in, n_out", [(64, 1024), (1024, 768), (768, 480), (64, 256), (256, 512), (7, 3), (5, 5)])
def test_bilinear_matrix_is_torchs_interpolation(n_in, n_out):
    x = torch.rand(n_in, 6, generator=torch.Generator().manual_seed(n_in))  # n_in x 6
    want = F.interpolate(x.T[None], size=n_out, mode="linear", align_corners=False)[0].T  # n_out x 6
    np.testing.assert_allclose(render.bilinear_matrix(n_in, n_out) @ x.numpy(), want.numpy(), atol=1e-4)


@pytest.mark.parametrize("size", [(120, 160), (200, 90), (64, 64), (256, 256), (900, 1600)])
def test_map_resampler_is_sams_geometry(size):
    """The resampler is grid_to_image (itself checked against the official postprocess_masks)."""
    grid = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1))
    resample = render.map_resampler((64, 64), size, 1024)
    assert render.resized_shape(size, 1024) == resized_shape(size)
    np.testing.assert_allclose(resample(grid.numpy()), grid_to_image(grid, size), atol=2e-5)
    np.testing.assert_allclose(resample(grid.numpy()), resample.rows @ grid.numpy() @ resample.cols.T, atol=1e-5)


def test_image_resampler_averages_when_shrinking():
    image = np.zeros((40, 40, 3), np.float32)
    image[:, ::2] = 1.0  # one-pixel stripes: bilinear would alias them, an area average is gray
    small = render.image_resampler((40, 40), (10, 10)).image(image)
    np.testing.assert_allclose(small, 0.5, atol=1e-6)


def test_robust_limit_ignores_one_hot_cell():
    m = np.full((64, 64), 1e-4, np.float32)
    m[3, 3] = 0.99
    assert render.robust_limit(m) == pytest.approx(1e-4)  # the 99th percentile, not the 0.99 cell
    assert render.robust_limit(m, 100.0) == pytest.approx(0.99)
    assert render.robust_limit(np.zeros((4, 4))) == 1.0
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\], got 0"):
        render.robust_limit(m, 0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        render.robust_limit(np.array([np.nan, 1.0]))


def test_overlay_opacity_rises_with_the_value():
    gray = np.full((1, 256), 100, np.uint8)
    heat = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None]  # 1 x 256
    out = render.overlay(gray, heat, vmax=1.0).astype(np.float64)[0]  # 256 x 3
    np.testing.assert_array_equal(out[0], [100, 100, 100])  # no attention: the gray image, untouched
    distance = np.sqrt(((out - 100.0) ** 2).sum(-1))  # 256: how far each level is from the gray
    assert distance[-1] > 150 and np.all(np.diff(distance[128:]) >= -1.0)
    top = render.INFERNO[-1] * 0.9 + 100 * 0.1
    np.testing.assert_allclose(out[-1], top, atol=1.0)  # the top colour at opacity 0.9
    clipped = render.overlay(gray[:, :1], np.array([[5.0]], np.float32), vmax=1.0)
    np.testing.assert_array_equal(clipped, out[-1:][None].astype(np.uint8))  # above the limit: the top colour


def test_dimmed_gray_is_gray_and_dim():
    picture = np.zeros((2, 2, 3), np.uint8)
    picture[0, 0] = (255, 255, 255)
    picture[1, 1] = (0, 0, 255)
    s = render.HeatStyle(edges=0.0)
    gray = render.dimmed_gray(picture, s)
    assert gray[0, 0] == round(255 * (s.floor + s.dim)) and gray[0, 1] == round(255 * s.floor)
    assert gray[1, 1] == round(255 * (s.floor + s.dim * 0.114))


def test_objects_of_the_grounds_luminance_keep_their_outline():
    """A pink square on a blue ground of the same luminance (toy scene 11) would vanish in gray."""
    picture = np.zeros((20, 20, 3), np.uint8)
    picture[:] = (83, 126, 189)  # luminance 120
    picture[5:15, 5:15] = (251, 50, 108)  # luminance 117
    flat = render.dimmed_gray(picture, render.HeatStyle(edges=0.0)).astype(int)
    assert np.ptp(flat) <= 2
    gray = render.dimmed_gray(picture).astype(int)
    assert gray[4, 10] - gray[0, 0] > 50 and gray[10, 14] - gray[10, 10] > 50  # its edges, lighter
    assert abs(gray[10, 10] - gray[0, 0]) <= 2 and abs(gray[2, 2] - gray[0, 0]) == 0  # flat inside and out


def test_top_mass_cells_hold_the_share():
    m = np.array([[0.5, 0.3], [0.15, 0.05]])
    assert render.top_mass_cells(m, 0.5).tolist() == [[True, False], [False, False]]
    assert render.top_mass_cells(m, 0.8).tolist() == [[True, True], [False, False]]
    assert render.top_mass_cells(m, 0.81).tolist() == [[True, True], [True, False]]
    assert render.top_mass_cells(m, 1.0).all()
    with pytest.raises(ValueError, match=r"the attention share to outline must be in \(0, 1\], got 1.5"):
        render.top_mass_cells(m, 1.5)


def test_edges_and_outlines():
    region = np.zeros((6, 6), bool)
    region[1:5, 1:5] = True
    edge = render.edge_pixels(region)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any()
    assert render.edge_pixels(np.ones((3, 4), bool)).sum() == 10  # the picture's border counts as outside
    cells = np.zeros((64, 64), bool)
    cells[10:20, 30:40] = True
    outline = render.outline_pixels(cells, render.map_resampler((64, 64), (256, 256), 1024), width=1)
    ys, xs = np.nonzero(outline)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (40, 79, 120, 159)  # cell r covers pixels 4r..4r+3


def test_attention_over_image_checks_its_inputs():
    image = np.zeros((30, 40, 3), np.uint8)
    m = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    out = render.attention_over_image(m, image, input_size=1024, outline=0.5)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    assert render.attention_over_image(m, image, input_size=1024, out_size=(300, 400)).shape == (300, 400, 3)
    with pytest.raises(ValueError, match="h0 x w0 x 3"):
        render.attention_over_image(m, np.zeros((30, 40, 2)), input_size=1024)
    with pytest.raises(ValueError, match="must be H x W, got shape 64"):
        render.attention_over_image(m[0], image, input_size=1024)
    with pytest.raises(ValueError, match="vmax must be > 0"):
        render.attention_over_image(m, image, input_size=1024, vmax=0.0)


# ---- legibility -----------------------------------------------------------------------------------

def panel_pixels(fig, ax) -> np.ndarray:
    """The pixels of the image panel of ``ax``, as the figure renders them: h x w x 3 float."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())[..., :3]  # H x W x 3, origin at the top
    box = ax.images[0].get_window_extent()  # display coordinates, origin at the bottom
    height = buf.shape[0]
    x0, x1 = int(np.ceil(box.x0)), int(np.floor(box.x1))
    y0, y1 = int(np.ceil(height - box.y1)), int(np.floor(height - box.y0))
    return buf[y0:y1, x0:x1].astype(np.float64)


def legibility(model, seed: int) -> float:
    """The issue's measure, on toy scene ``seed``: the final token-to-image map of mask0, mean of
    heads, for a click deep inside the largest object, drawn by plot_token_to_image over the image.
    The RGB distance (0..441) between the figure's image panel and the plain image resized to the
    panel: its mean on the pixels of the 5% most-attended cells minus its mean on the least-attended
    half. 0: the overlay does not tell them apart."""
    from sam_explain.attention import capture_attention
    from sam_explain.figures.attention import plot_token_to_image
    from sam_explain.prompts import Prompts
    from sam_explain.toy import click_inside, make_scene

    scene = make_scene(seed=seed)
    areas = scene.object_masks.reshape(len(scene.object_masks), -1).sum(1)
    x, y = click_inside(scene.object_masks[int(np.argmax(areas))])
    with torch.no_grad():
        embedding = model.embed(scene.image)  # 1 x 256 x 64 x 64
        prompts = Prompts(points=(torch.tensor([[[x, y]]]), torch.tensor([[1]])))
        record = capture_attention(model.prompt_encoder, model.mask_decoder, embedding, prompts)
    fig = plot_token_to_image(record, "mask0", heads="mean", layers=["final"], image=scene.image,
                              show_prompts=False)  # the overlay alone, no marker
    (ax,) = [a for a in fig.axes if a.get_title()]
    panel = panel_pixels(fig, ax)  # h x w x 3
    h, w = panel.shape[:2]
    plain = render.picture_of(scene.image, (h, w)).astype(np.float64)  # the image resized to the panel
    distance = np.sqrt(((panel - plain) ** 2).sum(-1))  # h x w, 0..441
    attention = record.map("token_to_image", "final", "mask0", "mean").numpy()  # 64 x 64
    rows, cols = render.cell_of_pixels(scene.image.shape[:2], max(record.input_image_size), attention.shape, (h, w))
    cell = rows[:, None] * attention.shape[1] + cols[None, :]  # h x w: the cell under each pixel
    order = np.argsort(attention.ravel())  # least attended first
    n = attention.size
    top, bottom = np.zeros(n, bool), np.zeros(n, bool)
    top[order[-round(0.05 * n):]] = True
    bottom[order[: n // 2]] = True
    return float(distance[top[cell]].mean() - distance[bottom[cell]].mean())


def test_overlays_read_at_a_glance():
    """Median over six toy scenes at least 40 (the see-through viridis overlay before issue 29: 18)."""
    from sam_explain.toy import toy_model

    model = toy_model()
    scores = [legibility(model, seed) for seed in range(6)]
    assert np.median(scores) >= 40.0, f"legibility per scene: {np.round(scores, 1)}"
    assert min(scores) > 0.0, scores
