"""The architecture diagram's labels come from a traced run, so they follow the prompt."""

from sam_explain.cli import main
from sam_explain.figures.architecture import ARROWS, plot_architecture


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_labels_follow_the_prompt():
    one = "\n".join(texts(plot_architecture(points=1)))
    assert "tokens\nB x T x C = 1 x 7 x 256" in one
    assert "sparse\nB x N' x C = 1 x 2 x 256" in one
    assert "upscaled\nB x C/8 x 4H x 4W = 1 x 32 x 256 x 256" in one
    assert "keys (image side)\nB x HW x C = 1 x 4096 x 256" in one
    boxed = "\n".join(texts(plot_architecture(points=2, box=True, batch=3)))
    assert "tokens\nB x T x C = 3 x 9 x 256" in boxed
    assert "masks (all M)\nB x M x 4H x 4W = 3 x 4 x 256 x 256" in boxed
    labelled = sum(1 for a in ARROWS if a[2] is not None)
    assert sum("=" in t for t in texts(plot_architecture())) >= labelled


def test_diagram_command_writes_png(tmp_path, capsys):
    out = tmp_path / "arch.png"
    assert main(["diagram", "--out", str(out), "--dpi", "30"]) == 0
    assert out.stat().st_size > 10_000
    assert str(out) in capsys.readouterr().out
