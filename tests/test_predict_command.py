"""build_sam from a checkpoint file, and ``sam-explain predict`` on a small photo (a small
random model written in the official layout; the full-size vit_b file is exercised in
benchmarks/bench_image_encoder.py)."""

import os

import numpy as np
import pytest
import torch

from sam_explain import SamPredictor, build_sam
from sam_explain.build_sam import SamCheckpointError, sam_config_from_state_dict
from sam_explain.cli import main
from sam_explain.attention import predict_with_attention
from sam_explain.utils.transforms import grid_to_image
from sam_explain.testing import TINY_SAM, build_official_sam, official_predictor_module


@pytest.fixture(scope="module")
def official_sam():
    return build_official_sam(**TINY_SAM, seed=2)


@pytest.fixture(scope="module")
def checkpoint(official_sam, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save(official_sam.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    yy, xx = np.mgrid[0:90, 0:120]
    image = np.stack([xx * 2, yy * 2, 255 - xx - yy], axis=-1).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(image).save(path)
    return str(path), image


def test_config_read_from_the_checkpoint(official_sam):
    config = sam_config_from_state_dict(official_sam.state_dict())
    assert config == {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in TINY_SAM.items()} | {
        "mask_in_chans": 16}


def test_build_sam_loads_a_checkpoint_file(official_sam, checkpoint, photo):
    sam = build_sam(checkpoint=checkpoint)
    for key, value in official_sam.state_dict().items():
        assert torch.equal(sam.state_dict()[key], value), key
    with pytest.raises(SamCheckpointError, match=r"holds a custom \(E = 32, 3 blocks.*model_type='vit_b'"):
        build_sam(checkpoint=checkpoint, model_type="vit_b")


def test_build_sam_reads_safetensors(official_sam, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "sam_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in official_sam.state_dict().items()}, str(path))
    sam = build_sam(checkpoint=path)
    assert torch.equal(sam.image_encoder.pos_embed, official_sam.image_encoder.pos_embed)


def test_attention_maps_and_geometry(checkpoint, photo):
    _, image = photo
    predictor = SamPredictor(build_sam(checkpoint=checkpoint))
    predictor.set_image(image)  # 90 x 120 -> 96 x 128 inside the 128 x 128 input
    masks, iou, low_res, attention = predict_with_attention(
        predictor, point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1])
    )
    assert attention.shape == (3, 8, 8, 8)  # k masks x h heads x H x W
    assert torch.allclose(attention.sum((-1, -2)), torch.ones(3, 8), atol=1e-5)
    # one hot grid cell (row 2, column 5) lands where SAM's geometry puts it on the photo:
    # input pixels 32..48 x 80..96 of the padded 128 x 128, i.e. photo pixels / (128 / 120)
    cell = torch.zeros(8, 8)
    cell[2, 5] = 1.0
    on_photo = grid_to_image(cell, predictor.original_size, predictor.model.image_encoder.img_size)
    assert on_photo.shape == (90, 120)
    y, x = np.unravel_index(on_photo.argmax(), on_photo.shape)
    scale = 128 / 120
    assert abs((y + 0.5) * scale - 40) <= 2 * scale and abs((x + 0.5) * scale - 88) <= 2 * scale


def test_predict_command_writes_pictures_and_prints_official_ious(checkpoint, official_sam, photo, tmp_path, capsys):
    path, image = photo
    out = tmp_path / "out"
    code = main(["predict", "--checkpoint", checkpoint, "--image", path, "--point", "60,40",
                 "--bg-point", "10,80", "--box", "20,10,110,85", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    names = sorted(os.listdir(out))
    assert names == ["attention_mask0.png", "attention_mask1.png", "attention_mask2.png", "masks.png"]
    for name in names:
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"wrote {out / name}" in printed
    reference = official_predictor_module().SamPredictor(official_sam)
    reference.set_image(image)
    _, iou, _ = reference.predict(point_coords=np.array([[60.0, 40.0], [10.0, 80.0]]), point_labels=np.array([1, 0]),
                                  box=np.array([20.0, 10.0, 110.0, 85.0]))
    for j, value in enumerate(iou):
        assert f"mask {j}: predicted IoU {value:.4f}" in printed


def test_predict_command_single_mask_and_bad_input(checkpoint, photo, tmp_path):
    path, _ = photo
    out = tmp_path / "single"
    assert main(["predict", "--checkpoint", checkpoint, "--image", path, "--point", "5,5",
                 "--single-mask", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["attention_mask0.png", "masks.png"]
    with pytest.raises(SystemExit, match=r"point \(500, 5\) lies outside the 120 x 90 image"):
        main(["predict", "--checkpoint", checkpoint, "--image", path, "--point", "500,5", "--out", str(out)])
    with pytest.raises(SystemExit, match="--point must be 2 comma-separated numbers"):
        main(["predict", "--checkpoint", checkpoint, "--image", path, "--point", "5", "--out", str(out)])
    decoder_only = tmp_path / "decoder.pth"
    torch.save({k: v for k, v in torch.load(checkpoint).items() if k.startswith("mask_decoder.")}, decoder_only)
    with pytest.raises(SystemExit, match=r"not a full SAM checkpoint: no 'image_encoder.pos_embed'"):
        main(["predict", "--checkpoint", str(decoder_only), "--image", path, "--point", "5,5", "--out", str(out)])
