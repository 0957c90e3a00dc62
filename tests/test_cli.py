"""The command line: every user error ends with one line on stderr and a non-zero exit, before any
model runs; never a traceback."""

import json

import pytest
import torch

from sam_explain.cli import main


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_demo_runs_the_toy_model_by_default(capsys):
    assert main(["demo", "--points", "2", "--box", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("weights: the trained toy model")
    assert "sparse_prompt_embeddings     B x N' x C         = 2 x 4 x 256" in out
    assert "masks (logits)               B x 3 x 4H x 4W    = 2 x 3 x 256 x 256" in out


def test_random_weights_are_labelled(capsys):
    assert main(["demo", "--random"]) == 0
    assert capsys.readouterr().out.startswith("weights: RANDOM")
    assert main(["trace", "--random", "--depth", "0"]) == 0
    assert "weights: RANDOM" in capsys.readouterr().out


@pytest.fixture
def no_model_runs(monkeypatch):
    """Any forward of a decoder or an image encoder fails the test: refusals come first."""
    import sam_explain.modeling.image_encoder as image_encoder
    import sam_explain.modeling.mask_decoder as mask_decoder

    def ran(*args, **kwargs):
        raise AssertionError("a model ran before the refusal")

    monkeypatch.setattr(mask_decoder.MaskDecoder, "forward", ran)
    monkeypatch.setattr(image_encoder.ImageEncoderViT, "forward", ran)


def refusal(argv, capsys) -> str:
    """The one line a refused command prints (its SystemExit message, or argparse's stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    code = exit_.value.code
    text = code if isinstance(code, str) else capsys.readouterr().err
    assert code not in (0, None), argv
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    return text


@pytest.fixture
def files(tmp_path):
    from PIL import Image

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    image = tmp_path / "image.png"
    Image.new("RGB", (64, 48)).save(image)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    as_json = tmp_path / "model.pth"
    as_json.write_text(json.dumps({"iou_token.weight": [1.0]}))
    decoder_only = tmp_path / "decoder.pth"
    from sam_explain import build_mask_decoder

    torch.save(build_mask_decoder(transformer_dim=16, num_heads=2, mlp_dim=32, iou_head_hidden_dim=16).state_dict(),
               decoder_only)
    return dict(a_file=str(a_file), image=str(image), broken=str(broken), json=str(as_json),
                decoder=str(decoder_only), tmp=str(tmp_path))


CASES = [
    (["demo", "--batch", "0"], "--batch: expected a whole number >= 1, got 0"),
    (["demo", "--batch", "3000", "--max-memory", "1G"], "B = 3000 prompt sets would take about 82.0 GiB, over the limit of 1.0 GiB"),
    (["demo", "--checkpoint", "{tmp}/absent.pth"], "no checkpoint file at"),
    (["demo", "--checkpoint", "{json}"], "a JSON file, not a checkpoint"),
    (["demo", "--points", "0"], "give the decoder a prompt"),
    (["demo", "--max-memory", "lots"], "expected a size such as 8G"),
    (["trace", "--device", "nonsense"], "unknown device 'nonsense'"),
    (["trace", "--width", "0"], "--width: expected a whole number >= 1"),
    (["trace", "--depth", "-1"], "--depth: expected a whole number >= 0"),
    (["trace", "--path", "transformer.nothing"], "no row matches --path 'transformer.nothing'"),
    (["trace", "--checkpoint", "x.pth", "--random"], "not allowed with argument"),
    (["shapes-doc", "--check"], "give it with --output PATH"),
    (["diagram"], "the following arguments are required: --out"),
    (["diagram", "--out", "{a_file}/architecture.png"], "is a file, not a folder"),
    (["eval-toy", "--scenes", "0"], "--scenes: expected a whole number >= 1"),
    (["eval-toy", "--weights", "{a_file}"], "not toy weights written by train-toy"),
    (["eval-toy", "--threads", "0"], "--threads: expected a whole number >= 1"),
    (["train-toy", "--threads", "0"], "--threads: expected a whole number >= 1"),
    (["train-toy", "--schedule", "tiny", "--out", "{a_file}/w.safetensors"], "is a file, not a folder"),
    (["train-toy", "--schedule", "tiny", "--init", "{tmp}/absent.safetensors"], "--init {tmp}/absent.safetensors: no such file"),
    (["demo", "--sam2", "--checkpoint", "{decoder}"], "--sam2: {decoder} is a SAM (1) checkpoint"),
    (["attention", "--out", "{a_file}"], "is a file, not a folder"),
    (["attention", "--out", "{tmp}/att", "--point", "10,10,inf"], "must be finite numbers"),
    (["attention", "--out", "{tmp}/att", "--point", "10,10,0.5"], "LABEL must be 1 (foreground) or 0 (background)"),
    (["attention", "--out", "{tmp}/att", "--image", "{broken}"], "cannot read the image"),
    (["predict", "--checkpoint", "{decoder}", "--image", "{image}", "--point", "5,5", "--out", "{tmp}/p"],
     "not a full SAM checkpoint"),
    (["predict", "--checkpoint", "{decoder}", "--image", "{broken}", "--point", "5,5", "--out", "{tmp}/p"],
     "cannot read the image"),
    (["predict", "--checkpoint", "{decoder}", "--image", "{image}", "--point", "5,5", "--out", "{a_file}"],
     "is a file, not a folder"),
    (["predict", "--checkpoint", "{decoder}", "--image", "{image}", "--point", "5,5", "--out", "{tmp}/p",
      "--device", "cuda:7"], "--device"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_user_errors_end_in_one_line_before_anything_runs(argv, message, files, capsys, no_model_runs):
    argv = [a.format(**files) for a in argv]
    text = refusal(argv, capsys)
    assert message.format(**files) in text, text


# --- SAM 2.1's decoder: --sam2, or a SAM 2 checkpoint -------------------------------------------------


def test_sam2_toy_runs_in_demo_trace_and_attention_and_says_what_it_is(tmp_path, capsys):
    assert main(["demo", "--sam2", "--points", "2", "--box"]) == 0
    out = capsys.readouterr().out
    label = out.splitlines()[0]
    assert label.startswith("weights: the trained toy SAM 2;"), label
    assert "point labels                 B x N              = 1 x 4" in out  # the box as two points
    assert "high_res_features[0]         1 x C/8 x 4H x 4W  = 1 x 32 x 256 x 256" in out
    assert "object_score_logits          B x 1              = 1 x 1" in out
    assert main(["trace", "--sam2", "--depth", "0"]) == 0
    out = capsys.readouterr().out
    assert "0 mismatch(es)" in out and label.removeprefix("weights: ") in out
    assert "object_score_logits" in out and "high_res_features: (1 x 32 x 256 x 256, 1 x 64 x 128 x 128)" in out
    assert main(["attention", "--sam2", "--out", str(tmp_path / "att")]) == 0
    out = capsys.readouterr().out
    assert "tokens: obj_score, iou, mask0, mask1, mask2, mask3, point0 (+), pad" in out
    assert sorted(p.name for p in (tmp_path / "att").iterdir()) == [
        "image_to_token_overlay.png", "token_self.png", "token_to_image_mask0.png", "token_to_image_mask0_overlay.png"]


def test_a_sam2_checkpoint_is_recognised_and_random_sam2_is_labelled(tmp_path, capsys):
    from sam_explain.modeling.build import randomize_
    from sam_explain.sam2 import build_sam2_mask_decoder, build_sam2_prompt_encoder

    decoder = randomize_(build_sam2_mask_decoder(transformer_dim=32, num_heads=2, mlp_dim=64,
                                                 iou_head_hidden_dim=32), 1)
    prompt_encoder = randomize_(build_sam2_prompt_encoder(embed_dim=32), 2)  # a 64 x 64 grid for 1024 x 1024
    state = {f"sam_mask_decoder.{k}": v for k, v in decoder.state_dict().items()}
    state |= {f"sam_prompt_encoder.{k}": v for k, v in prompt_encoder.state_dict().items()}
    path = tmp_path / "sam2_small.pt"
    torch.save({"model": state}, path)
    assert main(["demo", "--checkpoint", str(path), "--box"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"weights: SAM 2 official checkpoint {path}") and "stand-ins" in out
    assert "image_embeddings             1 x C x H x W      = 1 x 32 x 64 x 64" in out
    assert "masks (logits)               B x 3 x 4H x 4W    = 1 x 3 x 256 x 256" in out
    assert "object_score_logits" in out
    assert main(["demo", "--sam2", "--random"]) == 0
    assert capsys.readouterr().out.startswith("weights: RANDOM (SAM 2.1's configuration, seed 0), untrained")


def test_a_reader_that_goes_away_is_no_error():
    """``sam-explain trace | head``: when the pipe closes, the command stops without a message."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "sam_explain", "trace", "--random"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()  # before the child writes: its first write meets a closed pipe
    _, err = child.communicate(timeout=120)
    assert err.decode().strip() == "" and child.returncode == 1
