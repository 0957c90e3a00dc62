"""Attention figures, the resize-and-pad geometry, the explorer and the command: each figure is
rendered to a PNG and checked for its panels, titles and the numbers it shows."""

from __future__ import annotations

import types

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from sam_explain import render  # noqa: E402
from sam_explain.attention import capture_attention  # noqa: E402
from sam_explain.attention.inputs import build_models, placeholder_embedding, placeholder_image  # noqa: E402
from sam_explain.prompts import Prompts  # noqa: E402
from sam_explain.figures.attention import (  # noqa: E402
    plot_image_to_token, plot_token_self, plot_token_to_image, token_index,
)
from sam_explain.utils.transforms import (  # noqa: E402
    grid_to_image, image_to_input, resized_shape, to_input_frame, to_original_frame,
)
from sam_explain.testing import official_modeling  # noqa: E402

H0, W0 = 120, 160  # a small landscape image: resized to 768 x 1024, grid rows 48..63 are padding
NAMES = ["iou", "mask0", "mask1", "mask2", "mask3", "point0 (+)", "point1 (-)", "box corner 0", "box corner 1"]


@pytest.fixture(scope="module")
def scene():
    prompt_encoder, decoder = build_models(seed=1)
    image = placeholder_image(H0, W0)
    coords = to_input_frame(torch.tensor([[[48.0, 48.0], [112.0, 42.0]], [[80.0, 96.0], [20.0, 20.0]]]), (H0, W0))
    boxes = to_input_frame(torch.tensor([[[20.0, 20.0], [80.0, 80.0]], [[10.0, 80.0], [150.0, 110.0]]]), (H0, W0))
    prompts = Prompts(points=(coords.float(), torch.tensor([[1, 0], [1, 0]])), boxes=boxes.reshape(2, 4).float())
    record = capture_attention(prompt_encoder, decoder, placeholder_embedding(image), prompts)
    return record, image


def saved(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40)
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def panels(fig):
    """The axes that show a map (colour bars excluded)."""
    return [ax for ax in fig.axes if ax.get_title()]


# ---- geometry ---------------------------------------------------------------------------------

def test_resized_shape_follows_sam():
    assert resized_shape((480, 640)) == (768, 1024)
    assert resized_shape((1000, 333)) == (1024, 341)  # 333 * 1.024 = 340.99 -> int(341.49)
    assert resized_shape((1024, 1024)) == (1024, 1024)
    with pytest.raises(ValueError, match="h0 x w0 = 0 x 5"):
        resized_shape((0, 5))


def test_coordinates_round_trip():
    xy = torch.tensor([[10.0, 20.0], [159.0, 119.0]])
    inside = to_input_frame(xy, (H0, W0))
    torch.testing.assert_close(inside, xy * 6.4)
    torch.testing.assert_close(to_original_frame(inside, (H0, W0)), xy)


@pytest.mark.parametrize("size", [(120, 160), (200, 90), (64, 64)])
def test_grid_to_image_equals_official_postprocess(size):
    """Our heatmap upsampling is the path of the official Sam.postprocess_masks."""
    sam_cls = official_modeling().Sam
    fake_sam = types.SimpleNamespace(image_encoder=types.SimpleNamespace(img_size=1024))
    grid = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(0))
    official = sam_cls.postprocess_masks(fake_sam, grid[:, None], resized_shape(size), size)[:, 0]
    ours = grid_to_image(grid, size)
    assert ours.shape == (2, *size)
    np.testing.assert_allclose(ours, official.numpy(), rtol=0, atol=1e-6)


def test_grid_cell_lands_on_its_pixels():
    """A hot cell (r, c) covers input pixels 16r..16r+16; on a 120 x 160 image (scale 6.4) its
    centre is at y = (r + 0.5) * 16 / 6.4. A cell in the padding vanishes."""
    hot = np.zeros((64, 64), np.float32)
    hot[10, 20] = 1.0
    up = grid_to_image(hot, (H0, W0))
    y, x = np.unravel_index(np.argmax(up), up.shape)
    assert abs(y - 10.5 * 2.5) <= 1.5 and abs(x - 20.5 * 2.5) <= 1.5
    pad = np.zeros((64, 64), np.float32)
    pad[60, 20] = 1.0  # rows 48..63 are below the resized 768-pixel-high image
    assert grid_to_image(pad, (H0, W0)).max() == 0.0


def test_image_to_input_pads_bottom_right():
    padded = image_to_input(placeholder_image(H0, W0))
    assert padded.shape == (1024, 1024, 3)
    assert padded[:768].min() > 0.1 and np.abs(padded[768:]).max() == 0.0


# ---- figures ----------------------------------------------------------------------------------

def test_token_to_image_every_layer_and_head(scene, tmp_path):
    record, _ = scene
    fig = plot_token_to_image(record, "mask0", prompt_set=1)
    saved(fig, tmp_path, "t2i")
    axes = panels(fig)
    titles = [ax.get_title() for ax in axes]
    assert len(axes) == 3 * 8
    assert titles[:2] == ["layer 0, head 0", "layer 0, head 1"] and titles[-1] == "final, head 7"
    assert "'mask0' (prompt set 1)" in fig._suptitle.get_text()
    assert "shared by all panels" in fig._suptitle.get_text()
    # the panel shows that head's row of the T x HW map, as 64 x 64 cells coloured by the renderer, the
    # colour limit the 99th percentile of every panel's cells (stated in the title)
    shown = np.asarray(axes[8 + 3].images[0].get_array())  # layer 1, head 3
    expected = record["transformer.layers.1.cross_attn_token_to_image"][1, 3, 1].reshape(64, 64)
    every = torch.stack([record[n][1, :, 1] for n in record.by(kind="token_to_image")])  # 3 x 8 x HW
    vmax = render.robust_limit(every.numpy(), 99.0)
    np.testing.assert_array_equal(shown, render.colourize(expected.numpy(), vmax))
    assert f"colour limit {vmax:.3g}: the 99th percentile of all panels' cells" in fig._suptitle.get_text()


def test_token_to_image_overlay_mean_per_panel(scene, tmp_path):
    record, image = scene
    fig = plot_token_to_image(record, "point1", heads="mean", image=image, scale="per-panel")
    saved(fig, tmp_path, "t2i_overlay")
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == [
        "layer 0, mean of 8 heads", "layer 1, mean of 8 heads", "final, mean of 8 heads"]
    assert "'point1 (-)'" in fig._suptitle.get_text() and "each panel's own 99th percentile" in fig._suptitle.get_text()
    assert len(fig.axes) == 3 + 3  # one colour bar per panel
    (shown,) = axes[0].images  # one picture: the dimmed image under the heat, composited by the renderer
    mean = record["transformer.layers.0.cross_attn_token_to_image"][0, :, 6].mean(0).reshape(64, 64).numpy()
    expected = render.attention_over_image(mean, image, input_size=1024, vmax=render.robust_limit(mean, 99.0))
    assert shown.get_array().shape == (H0, W0, 3)
    np.testing.assert_array_equal(shown.get_array(), expected)
    # where the map is highest the panel is the heat's colour, where it is lowest the dimmed gray image
    up = grid_to_image(mean, (H0, W0))  # H0 x W0
    hot, cold = np.unravel_index(np.argmax(up), up.shape), np.unravel_index(np.argmin(up), up.shape)
    gray = render.dimmed_gray(image)
    assert np.abs(expected[cold].astype(int) - int(gray[cold])).max() < 20
    assert np.abs(expected[hot].astype(int) - int(gray[hot])).max() > 100


def test_power_scale_shows_faint_attention(scene, tmp_path):
    from matplotlib.colors import PowerNorm

    from sam_explain.figures.attention import draw_grid_map

    record, image = scene
    for fig in (plot_token_to_image(record, "mask0", heads="mean", image=image, gamma=0.5),
                plot_image_to_token(record, gamma=0.5)):
        saved(fig, tmp_path, "power")
        assert "power scale, gamma 0.5" in fig._suptitle.get_text()
    # gamma 0.5 draws a tenth of the limit at sqrt(0.1) = 0.32 of the colour range, not at 0.1
    assert render.heat_index(np.array([0.1]), 1.0, gamma=0.5)[0] == round(255 * 0.1 ** 0.5)
    fig = plt.figure()
    mappable = draw_grid_map(fig.subplots(), np.eye(4), image=None, vmax=1.0, gamma=0.5)
    plt.close(fig)
    assert isinstance(mappable.norm, PowerNorm) and mappable.norm.gamma == 0.5


def test_one_hot_cell_cannot_flatten_the_rest(scene):
    """The colour limit is a high percentile: a cell at 0.99 in one panel leaves every panel's colours."""
    record, image = scene
    name = "transformer.layers.0.cross_attn_token_to_image"

    def pictures(percentile):
        fig = plot_token_to_image(record, "mask0", heads="all", image=image, percentile=percentile)
        return fig, [ax.images[0].get_array().astype(int) for ax in panels(fig)[1:]]  # all but the first panel

    before, others = pictures(99.0)
    maxed = pictures(100.0)[1]
    original = record.probs[name].clone()
    try:
        record.probs[name][0, 0, 1, 5] = 0.99  # layer 0, head 0: one cell
        after, others_after = pictures(99.0)
        maxed_after = pictures(100.0)[1]
    finally:
        record.probs[name] = original
    limit = before._suptitle.get_text().split("colour limit ")[1].split(":")[0]
    assert limit == after._suptitle.get_text().split("colour limit ")[1].split(":")[0]
    assert float(limit) < 0.99 and "largest 0.99" in after._suptitle.get_text()
    for a, b in zip(others, others_after):  # every other panel looks as before (a colour level or two)
        assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.5
    # with the maximum as the limit the same cell would have washed every other panel out
    washed = np.mean([np.abs(a - b).mean() for a, b in zip(maxed, maxed_after)])
    assert washed > 5.0, washed


def test_outline_marks_the_cells_that_hold_the_share(scene):
    record, image = scene
    fig = plot_token_to_image(record, "mask0", heads="mean", layers=["final"], image=image, outline=0.5)
    assert "cyan outline: the fewest cells holding 50% of the attention" in " ".join(fig._suptitle.get_text().split())
    picture = panels(fig)[0].images[0].get_array()
    cyan = np.all(picture == np.array(render.OUTLINE_COLOUR, np.uint8), axis=-1)
    assert cyan.any()
    plain = plot_token_to_image(record, "mask0", heads="mean", layers=["final"], image=image)
    assert not np.all(panels(plain)[0].images[0].get_array() == np.array(render.OUTLINE_COLOUR, np.uint8),
                      axis=-1).any()
    with pytest.raises(ValueError, match=r"outline must be None or a share of the attention in \(0, 1\], got 2"):
        plot_token_to_image(record, "mask0", image=image, outline=2)
    with pytest.raises(ValueError, match=r"percentile must be a number in \(0, 100\], got 0"):
        plot_image_to_token(record, percentile=0)


def test_image_to_token_columns_are_tokens(scene, tmp_path):
    record, image = scene
    fig = plot_image_to_token(record, image=image.astype(np.float32) / 255.0)
    saved(fig, tmp_path, "i2t")
    axes = panels(fig)
    assert len(axes) == 2 * len(NAMES)
    assert [ax.get_title().split("\n")[0] for ax in axes[: len(NAMES)]] == NAMES
    assert axes[len(NAMES)].get_title() == "iou\nlayer 1, mean of 8 heads"
    raw = plot_image_to_token(record, heads=2, tokens=["box corner 1"], layers=[0])
    (ax,) = panels(raw)
    column = record["transformer.layers.0.cross_attn_image_to_token"][0, 2, :, 8].reshape(64, 64).numpy()
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()),
                                  render.colourize(column, render.robust_limit(column, 99.0)))


def test_token_self_matrices_with_names(scene, tmp_path):
    record, _ = scene
    fig = plot_token_self(record, heads="all", layers=[1], scale="per-panel")
    saved(fig, tmp_path, "self")
    axes = panels(fig)
    assert len(axes) == 8 and axes[5].get_title() == "layer 1, head 5"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == NAMES
    assert [t.get_text() for t in axes[0].get_yticklabels()] == NAMES
    m = record["transformer.layers.1.self_attn"][0, 5].numpy()  # T x T, its own limit: the maximum
    np.testing.assert_array_equal(np.asarray(axes[5].images[0].get_array()), render.colourize(m, float(m.max())))
    mean = plot_token_self(record)
    assert "shared" in mean._suptitle.get_text() and len(panels(mean)) == 2


def test_bad_choices_name_what_exists(scene):
    record, _ = scene
    with pytest.raises(ValueError, match=r"no token named 'mask9'.*'mask0'"):
        plot_token_to_image(record, "mask9")
    with pytest.raises(ValueError, match="0..h-1 = 0..7, got 8"):
        plot_token_to_image(record, "iou", heads=8)
    with pytest.raises(ValueError, match="0..B-1 = 0..1, got 2"):
        plot_token_self(record, prompt_set=2)
    with pytest.raises(ValueError, match="scale must be one of"):
        plot_token_self(record, scale="log")
    with pytest.raises(ValueError, match="h0 x w0 x 3"):
        plot_token_to_image(record, "iou", image=np.zeros((4, 4, 2)))
    assert token_index(record, 0) == 0 and token_index(record, "box corner 0") == 7


def test_head_averaged_record(tmp_path):
    prompt_encoder, decoder = build_models(seed=2)
    image = placeholder_image(H0, W0)
    prompts = Prompts(points=(torch.tensor([[[300.0, 300.0]]]), torch.tensor([[1]])))
    rec = capture_attention(prompt_encoder, decoder, placeholder_embedding(image), prompts,
                            average_heads=True, device="cpu")
    fig = plot_token_to_image(rec, "pad")
    assert [ax.get_title() for ax in panels(fig)] == [
        "layer 0, mean of heads", "layer 1, mean of heads", "final, mean of heads"]
    with pytest.raises(ValueError, match="head-averaged"):
        plot_token_self(rec, heads=1)


def test_no_pyplot_figures_leak_and_notebooks_get_a_png(scene):
    record, _ = scene
    before = plt.get_fignums()
    fig = plot_token_self(record, layers=[0])
    assert plt.get_fignums() == before
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- explorer and command -----------------------------------------------------------------------

def test_explorer_builds_and_redraws_in_place(scene):
    pytest.importorskip("ipywidgets")
    from sam_explain.figures.explorer import explore_attention

    record, image = scene
    ex = explore_attention(record, image, dpi=30)
    first, image_widget = ex.image.value, ex.image
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and ex.redraws == 1
    assert "where 'mask0' reads the image" in ex.figure.axes[0].get_title()
    ex.token.value = token_index(record, "point0")
    assert ex.redraws == 2 and ex.image is image_widget and ex.image.value != first
    assert "where 'point0 (+)' reads the image" in ex.figure.axes[0].get_title()
    ex.kind.value = "token_self"
    assert [label for label, _ in ex.layer.options] == ["layer 0", "layer 1"]
    assert "layer 0 token self-attention" in ex.figure.axes[0].get_title()
    ex.kind.value = "image_to_token"
    ex.layer.value, ex.head.value, ex.prompt_set.value = 1, 4, 1
    assert "layer 1 image-to-token, head 4, prompt set 1" in ex.figure.axes[0].get_title()
    assert "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()


def test_command_writes_figures(tmp_path, capsys):
    from sam_explain.cli import main

    out = tmp_path / "figs"
    code = main(["attention", "--random", "--out", str(out), "--point", "100,50,1", "--point", "20,20,0",
                 "--box", "10,10,150,110", "--token", "box corner 1", "--heads", "mean", "--dpi", "30"])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    paths = [line for line in printed if line.endswith(".png")]
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == sorted([
        "token_to_image_box_corner_1.png", "token_to_image_box_corner_1_overlay.png",
        "image_to_token_overlay.png", "token_self.png"])
    for p in paths:
        assert (out / p.rsplit("/", 1)[-1]).stat().st_size > 1000
    assert printed[0].startswith("weights: RANDOM") and printed[1] == "tokens: " + ", ".join(NAMES)
    with pytest.raises(SystemExit, match="no token named 'mask7'"):
        main(["attention", "--out", str(out), "--token", "mask7"])
    with pytest.raises(SystemExit, match="--heads must be 'all', 'mean' or an index in 0..h-1 = 0..7, got 'max'"):
        main(["attention", "--out", str(out), "--heads", "max"])


def test_command_with_checkpoint_image_and_embedding(tmp_path, capsys):
    """Real inputs path: an official-format checkpoint, an image file and a saved embedding."""
    from matplotlib.image import imsave

    from sam_explain.cli import main
    from sam_explain.testing import build_official_pair

    decoder, prompt_encoder = build_official_pair(seed=5)
    sd = {f"mask_decoder.{k}": v for k, v in decoder.state_dict().items()}
    sd.update({f"prompt_encoder.{k}": v for k, v in prompt_encoder.state_dict().items()})
    torch.save(sd, tmp_path / "sam.pth")
    imsave(tmp_path / "img.png", placeholder_image(90, 60))
    np.save(tmp_path / "emb.npy", torch.randn(1, 256, 64, 64).numpy())
    common = ["attention", "--checkpoint", str(tmp_path / "sam.pth"), "--image", str(tmp_path / "img.png"),
              "--point", "30,40,1", "--heads", "0", "--dpi", "30"]
    assert main(common + ["--out", str(tmp_path / "o"), "--embedding", str(tmp_path / "emb.npy")]) == 0
    assert len([p for p in capsys.readouterr().out.splitlines() if p.endswith(".png")]) == 4
    np.save(tmp_path / "bad.npy", np.zeros((1, 256, 32, 32), np.float32))
    with pytest.raises(SystemExit, match="1 x C x H x W = 1 x 256 x 64 x 64, got 1 x 256 x 32 x 32"):
        main(common + ["--out", str(tmp_path / "o"), "--embedding", str(tmp_path / "bad.npy")])


def test_other_configuration_small_grid_and_input():
    """Not only SAM's numbers: depth 1, h = 4, a 16 x 16 grid over a 256 x 256 input."""
    from sam_explain.modeling import build_mask_decoder, build_prompt_encoder

    torch.manual_seed(0)
    pe = build_prompt_encoder(image_embedding_size=(16, 16), input_image_size=(256, 256))
    dec = build_mask_decoder(depth=1, num_heads=4)
    image = placeholder_image(60, 40)  # portrait: resized to 256 x 171 (171 = int(40 * 256 / 60 + 0.5))
    prompts = Prompts(points=(to_input_frame(torch.tensor([[[20.0, 30.0]]]), (60, 40), 256).float(),
                              torch.tensor([[1]])))
    rec = capture_attention(pe, dec, placeholder_embedding(image, grid=16, input_size=256), prompts)
    assert rec.grid() == (16, 16) and list(rec) == [
        "transformer.layers.0.self_attn", "transformer.layers.0.cross_attn_token_to_image",
        "transformer.layers.0.cross_attn_image_to_token", "transformer.final_attn_token_to_image"]
    fig = plot_token_to_image(rec, "point0", image=image)
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == [f"{w}, head {i}" for w in ("layer 0", "final") for i in range(4)]
    shown = axes[5].images[0].get_array()  # final, head 1
    expected = rec["transformer.final_attn_token_to_image"][0, 1, 5].reshape(16, 16).numpy()
    every = torch.stack([rec[n][0, :, 5] for n in rec.by(kind="token_to_image")])  # 2 x 4 x HW
    vmax = render.robust_limit(every.numpy(), 99.0)
    np.testing.assert_array_equal(shown, render.attention_over_image(expected, image, input_size=256, vmax=vmax))


def test_command_with_the_toy_model(tmp_path, capsys, monkeypatch):
    """By default the toy model's 256 x 256 frame and scenes (untrained weights here, so the test does
    not depend on the shipped file; the command calls toy_model() to get the trained one)."""
    toy = pytest.importorskip("sam_explain.toy")
    from sam_explain.cli import main

    torch.manual_seed(0)
    monkeypatch.setattr(toy, "toy_model", lambda *a, **k: toy.ToyModel().eval())
    out = tmp_path / "toy"
    assert main(["attention", "--out", str(out), "--heads", "mean", "--dpi", "30"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("weights: the trained toy model; image: toy scene 0")
    assert printed[1] == "tokens: iou, mask0, mask1, mask2, mask3, point0 (+), pad"
    assert len([p for p in printed if p.endswith(".png")]) == 4
    with pytest.raises(SystemExit, match="the toy model embeds its images itself"):
        main(["attention", "--embedding", "x.npy", "--out", str(out)])
    assert main(["attention", "--out", str(out / "outlined"), "--heads", "mean", "--dpi", "30", "--outline", "0.5",
                 "--percentile", "98"]) == 0
    assert len(list((out / "outlined").glob("*.png"))) == 4
    with pytest.raises(SystemExit, match=r"--percentile must be in \(0, 100\], got 0"):
        main(["attention", "--out", str(out), "--percentile", "0"])
    with pytest.raises(SystemExit, match=r"--outline SHARE must be in \(0, 1\], got 50"):
        main(["attention", "--out", str(out), "--outline", "50"])
