"""Checkpoints in each layout, built small and synthetic here; every key must land."""

import os
import re

import pytest
import torch
from safetensors.torch import save_file

from sam_explain.checkpoint import CheckpointError, load_sam_checkpoint, read_state_dict
from sam_explain.prompts import example_prompts, run_decoder


@pytest.fixture(scope="module")
def official_sd(sam_pair):
    """An official full-SAM layout: image_encoder.* (a token few keys), prompt_encoder.*, mask_decoder.*."""
    od, op, _, _ = sam_pair
    sd = {"image_encoder.patch_embed.proj.weight": torch.randn(768, 3, 16, 16),
          "image_encoder.neck.0.weight": torch.randn(256, 768, 1, 1)}
    sd.update({"prompt_encoder." + k: v for k, v in op.state_dict().items()})
    sd.update({"mask_decoder." + k: v for k, v in od.state_dict().items()})
    return sd


def to_hf(sd):
    """Official -> transformers SamModel names, written from the documented mapping
    (independently of the loader's inverse mapping)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("image_encoder."):
            k = "vision_encoder." + k[len("image_encoder."):].replace("patch_embed.proj.", "patch_embed.projection.")
        k = k.replace("point_embeddings", "point_embed")
        k = k.replace("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding")
        for i, name in {0: "conv1", 1: "layer_norm1", 3: "conv2", 4: "layer_norm2", 6: "conv3"}.items():
            k = k.replace(f"mask_downscaling.{i}.", f"mask_embed.{name}.")
        for i, name in {0: "upscale_conv1", 1: "upscale_layer_norm", 3: "upscale_conv2"}.items():
            k = k.replace(f"output_upscaling.{i}.", f"{name}.")
        k = re.sub(r"\.norm(\d)\.", r".layer_norm\1.", k).replace("norm_final_attn", "layer_norm_final_attn")
        m = re.match(r"(.*(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d)\.(.*)", k)
        if m:
            k = f"{m.group(1)}.{ {0: 'proj_in', 1: 'layers.0', 2: 'proj_out'}[int(m.group(2))] }.{m.group(3)}"
        out[k] = v
    out["shared_image_embedding.positional_embedding"] = out["prompt_encoder.shared_embedding.positional_embedding"]
    return out


def assert_every_key_landed(parts, sd, prefix_dec="mask_decoder.", prefix_pe="prompt_encoder."):
    for module, prefix in ((parts.mask_decoder, prefix_dec), (parts.prompt_encoder, prefix_pe)):
        ours = module.state_dict()
        for k, v in ours.items():
            assert torch.equal(v, sd[prefix + k]), k


def test_official_full_checkpoint(tmp_path, official_sd, sam_pair):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(official_sd, path)
    parts = load_sam_checkpoint(path)
    assert parts.format == "official" and parts.model_type == "vit_b"
    assert parts.image_encoder_keys == 2
    assert_every_key_landed(parts, official_sd)
    # the saved Gaussian matrix, a buffer, is loaded, so the dense PE matches the official
    od, op, _, _ = sam_pair
    assert torch.equal(parts.prompt_encoder.get_dense_pe(), op.get_dense_pe())
    prompts = example_prompts(points=2, box=True, batch=2)
    emb = torch.randn(1, 256, 64, 64)
    masks, iou, _, _ = run_decoder(parts.prompt_encoder, parts.mask_decoder, emb, prompts)
    with torch.no_grad():
        s, d = op(prompts.points, prompts.boxes, None)
        m_off, i_off = od(emb, op.get_dense_pe(), s, d, True)
    assert (masks - m_off).abs().max() <= 1e-5 and (iou - i_off).abs().max() <= 1e-5


def test_decoder_alone_and_prompt_encoder_alone(tmp_path, sam_pair):
    od, op, _, _ = sam_pair
    torch.save(od.state_dict(), tmp_path / "dec.pt")
    parts = load_sam_checkpoint(tmp_path / "dec.pt")
    assert parts.format == "decoder" and parts.prompt_encoder is None
    for k, v in parts.mask_decoder.state_dict().items():
        assert torch.equal(v, od.state_dict()[k])
    save_file(op.state_dict(), str(tmp_path / "pe.safetensors"))
    parts = load_sam_checkpoint(tmp_path / "pe.safetensors")
    assert parts.format == "prompt_encoder" and parts.mask_decoder is None
    for k, v in parts.prompt_encoder.state_dict().items():
        assert torch.equal(v, op.state_dict()[k])


def test_decoder_config_is_read_from_the_weights(tmp_path):
    from sam_explain.testing import build_official_pair

    od, _ = build_official_pair(transformer_dim=64, depth=3, num_heads=4, mlp_dim=96,
                                num_multimask_outputs=2, iou_head_depth=4, iou_head_hidden_dim=32)
    torch.save(od.state_dict(), tmp_path / "small.pth")
    parts = load_sam_checkpoint(tmp_path / "small.pth", num_heads=4)
    cfg = parts.config["mask_decoder"]
    assert (cfg["transformer_dim"], cfg["depth"], cfg["mlp_dim"], cfg["num_multimask_outputs"],
            cfg["iou_head_depth"], cfg["iou_head_hidden_dim"]) == (64, 3, 96, 2, 4, 32)


@pytest.mark.parametrize("ext", ["safetensors", "bin"])
@pytest.mark.parametrize("tied_once", [False, True])
def test_hugging_face_checkpoint(tmp_path, official_sd, ext, tied_once):
    hf = to_hf(official_sd)
    assert "mask_decoder.transformer.layers.0.layer_norm1.weight" in hf
    assert "mask_decoder.iou_prediction_head.proj_out.bias" in hf
    if tied_once:  # transformers may save a tied tensor under one name only
        del hf["prompt_encoder.shared_embedding.positional_embedding"]
    path = tmp_path / f"model.{ext}"
    if ext == "safetensors":
        save_file({k: v.clone().contiguous() for k, v in hf.items()}, str(path))
    else:
        torch.save(hf, path)
    parts = load_sam_checkpoint(path)
    assert parts.format == "huggingface" and parts.model_type == "vit_b"
    assert_every_key_landed(parts, official_sd)


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"iou_token.weight": torch.zeros(1, 256), "payload": Boom()}, path)
    with pytest.raises(CheckpointError, match="refused: the pickle holds Python objects"):
        load_sam_checkpoint(path)


def test_sam2_checkpoint_goes_to_the_sam2_loader(tmp_path):
    """A SAM 2 file is read by SAM 2's loader (tests/test_sam2_checkpoint.py), which names it as SAM 2."""
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": {"sam_mask_decoder.obj_score_token.weight": torch.ones(1, 256),
                          "sam_mask_decoder.iou_token.weight": torch.ones(1, 256),
                          "image_encoder.trunk.pos_embed": torch.ones(1, 8, 7, 7)}}, path)
    with pytest.raises(CheckpointError, match=r"SAM 2 checkpoint .*missing key 'mask_tokens.weight'"):
        load_sam_checkpoint(path)


def test_truncated_file(tmp_path, official_sd):
    full = tmp_path / "full.pth"
    torch.save(official_sd, full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is the file truncated"):
        load_sam_checkpoint(cut)
    save_file({"a": torch.zeros(100)}, str(tmp_path / "x.safetensors"))
    raw = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "y.safetensors").write_bytes(raw[:-50])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "y.safetensors")


def test_missing_and_misshapen_keys(tmp_path, official_sd):
    sd = dict(official_sd)
    del sd["mask_decoder.transformer.layers.1.norm3.bias"]
    sd["mask_decoder.output_upscaling.1.weight"] = torch.ones(32)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_sam_checkpoint(tmp_path / "bad.pth")
    msg = str(err.value)
    assert "missing (1): transformer.layers.1.norm3.bias" in msg
    assert "misshapen (1): output_upscaling.1.weight: model (64,), checkpoint (32,)" in msg


def test_not_a_sam_checkpoint(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no SAM decoder or prompt encoder found"):
        load_sam_checkpoint(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_sam_checkpoint(tmp_path / "absent.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict of tensors, found a list"):
        load_sam_checkpoint(tmp_path / "list.pth")
