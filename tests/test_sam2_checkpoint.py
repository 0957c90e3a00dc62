"""Loading SAM 2 / SAM 2.1 checkpoints: Meta's layout, transformers' Sam2Model layout (files written by
hand here, transformers is not needed), a decoder alone; the rest of the file named, not loaded; and
every kind of bad file refused with a clear error before anything is built."""

from __future__ import annotations

import os
import pickle
import re

import pytest
import torch
from safetensors.torch import save_file

import sam_explain.sam2.checkpoint as ck
from sam_explain.checkpoint import CheckpointError
from sam_explain.sam2 import load_sam2_checkpoint
from sam_explain.sam2.checkpoint import Sam2CheckpointError
from sam_explain.testing import build_official_sam2_pair

ALL_ON = dict(use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
              pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True)
SMALL = dict(transformer_dim=32, depth=2, num_heads=4, mlp_dim=64, iou_head_hidden_dim=32,
             image_embedding_size=(8, 8), input_image_size=(128, 128), mask_in_chans=8)
LOAD = dict(num_heads=4, image_embedding_size=(8, 8), input_image_size=(128, 128))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def official():
    return build_official_sam2_pair(**SMALL, seed=9, **ALL_ON, dynamic_multimask_via_stability=True)


def video_and_encoder_keys(blocks: int = 12, width: int = 96, release_2_1: bool = True):
    """Stand-ins for what a SAM 2 file holds besides the decoder side (tiny tensors, the real names)."""
    extra = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(width, 3, 7, 7)}
    extra.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.ones(2) for i in range(blocks)})
    extra.update({"image_encoder.neck.convs.0.conv.weight": torch.zeros(2, 2, 1, 1),
                  "memory_attention.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2),
                  "memory_attention.norm.weight": torch.ones(2),
                  "memory_encoder.out_proj.weight": torch.zeros(2, 2, 1, 1),
                  "maskmem_tpos_enc": torch.zeros(7, 1, 1, 2), "no_mem_embed": torch.zeros(1, 1, 2),
                  "obj_ptr_proj.layers.0.weight": torch.zeros(2, 2)})
    if release_2_1:
        extra.update({"no_obj_embed_spatial": torch.zeros(1, 2), "obj_ptr_tpos_proj.weight": torch.zeros(2, 2)})
    return extra


def official_state_dict(od, op):
    sd = {f"sam_mask_decoder.{k}": v for k, v in od.state_dict().items()}
    sd.update({f"sam_prompt_encoder.{k}": v for k, v in op.state_dict().items()})
    return sd


def to_transformers(od, op):
    """Meta's names -> transformers' Sam2Model names, written out independently of the module under test."""
    out = {}
    for k, v in od.state_dict().items():
        k = re.sub(r"\.out_proj\.", ".o_proj.", k)
        k = re.sub(r"\.norm(\d)\.", r".layer_norm\1.", k)
        k = k.replace("transformer.norm_final_attn.", "transformer.layer_norm_final_attn.")
        k = k.replace("output_upscaling.0.", "upscale_conv1.").replace("output_upscaling.1.", "upscale_layer_norm.")
        k = k.replace("output_upscaling.3.", "upscale_conv2.")
        k = re.sub(r"(mlp)\.layers\.0\.", r"\1.proj_in.", k)
        k = re.sub(r"(mlp)\.layers\.1\.", r"\1.proj_out.", k)
        k = re.sub(r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.0\.",
                   r"\1.proj_in.", k)
        k = re.sub(r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.1\.",
                   r"\1.layers.0.", k)
        k = re.sub(r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.2\.",
                   r"\1.proj_out.", k)
        out[f"mask_decoder.{k}"] = v.clone()
    pe = op.state_dict()
    out["prompt_encoder.point_embed.weight"] = torch.cat([pe[f"point_embeddings.{i}.weight"] for i in range(4)])
    out["prompt_encoder.not_a_point_embed.weight"] = pe["not_a_point_embed.weight"].clone()
    out["prompt_encoder.no_mask_embed.weight"] = pe["no_mask_embed.weight"].clone()
    for i, name in ((0, "conv1"), (1, "layer_norm1"), (3, "conv2"), (4, "layer_norm2"), (6, "conv3")):
        for p in ("weight", "bias"):
            out[f"prompt_encoder.mask_embed.{name}.{p}"] = pe[f"mask_downscaling.{i}.{p}"].clone()
    gauss = pe["pe_layer.positional_encoding_gaussian_matrix"]
    out["prompt_encoder.shared_embedding.positional_embedding"] = gauss.clone()
    out["shared_image_embedding.positional_embedding"] = gauss.clone()
    out["vision_encoder.backbone.patch_embed.projection.weight"] = torch.zeros(144, 3, 7, 7)
    out.update({f"vision_encoder.backbone.blocks.{i}.layer_norm1.weight": torch.ones(2) for i in range(48)})
    out["no_memory_embedding"] = torch.zeros(1, 1, 2)
    out["occlusion_spatial_embedding_parameter"] = torch.zeros(1, 2)
    return out


def same_outputs(parts, od, op):
    """The loaded modules give the official modules' outputs on one prompt set of each kind."""
    gen = torch.Generator().manual_seed(0)
    coords = torch.rand(2, 3, 2, generator=gen) * 128
    labels = torch.tensor([[2, 3, 1], [1, 0, 1]])
    emb = torch.randn(1, 32, 8, 8, generator=gen)
    hr = [torch.randn(1, 4, 32, 32, generator=gen), torch.randn(1, 8, 16, 16, generator=gen)]
    with torch.no_grad():
        for pe, dec in ((op, od), (parts.prompt_encoder, parts.mask_decoder)):
            sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
            yield dec(emb, pe.get_dense_pe(), sparse, dense, multimask_output=False, repeat_image=True,
                      high_res_features=hr)


def assert_same(parts, od, op):
    off, ours = same_outputs(parts, od, op)
    for a, b in zip(off, ours):
        assert (a - b).abs().max().item() <= 1e-5
    assert [k for k in parts.mask_decoder.state_dict()] == list(od.state_dict())
    assert all(torch.equal(v, od.state_dict()[k]) for k, v in parts.mask_decoder.state_dict().items())
    assert all(torch.equal(v, op.state_dict()[k]) for k, v in parts.prompt_encoder.state_dict().items())


@pytest.mark.parametrize("wrapped", [True, False], ids=["model-wrapped", "flat"])
def test_official_layout(tmp_path, official, wrapped):
    od, op = official
    sd = {**official_state_dict(od, op), **video_and_encoder_keys()}
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd} if wrapped else sd, path)
    parts = load_sam2_checkpoint(path, **LOAD)
    assert parts.format == "official" and parts.release == "SAM 2.1" and parts.image_encoder == "hiera_tiny"
    assert parts.not_loaded == {"image_encoder": 14, "memory_attention": 2, "memory_encoder": 1, "maskmem_tpos_enc": 1,
                                "no_mem_embed": 1, "obj_ptr_proj": 1, "no_obj_embed_spatial": 1,
                                "obj_ptr_tpos_proj": 1}
    cfg = parts.config["mask_decoder"]
    assert cfg["use_high_res_features"] and cfg["pred_obj_scores"] and cfg["pred_obj_scores_mlp"]
    assert cfg["dynamic_multimask_via_stability"] and cfg["transformer_dim"] == 32 and cfg["mlp_dim"] == 64
    assert not parts.mask_decoder.training and not parts.prompt_encoder.training
    assert_same(parts, od, op)


def test_sam2_release_and_sizes_are_named(tmp_path, official):
    od, op = official
    sd = {**official_state_dict(od, op), **video_and_encoder_keys(blocks=24, width=112, release_2_1=False)}
    torch.save({"model": sd}, tmp_path / "sam2_hiera_base_plus.pt")
    parts = load_sam2_checkpoint(tmp_path / "sam2_hiera_base_plus.pt", **LOAD)
    assert (parts.release, parts.image_encoder) == ("SAM 2", "hiera_base_plus")
    sd = official_state_dict(od, op)  # the decoder side alone: nothing to tell
    torch.save({"model": sd}, tmp_path / "decoder_side.pt")
    parts = load_sam2_checkpoint(tmp_path / "decoder_side.pt", **LOAD)
    assert (parts.release, parts.image_encoder, parts.not_loaded) == (None, None, {})


def test_huggingface_layout(tmp_path, official, monkeypatch):
    od, op = official
    path = tmp_path / "model.safetensors"
    save_file(to_transformers(od, op), str(path))
    parts = load_sam2_checkpoint(path, **LOAD)
    assert parts.format == "huggingface" and parts.release == "SAM 2.1" and parts.image_encoder == "hiera_large"
    assert parts.not_loaded == {"vision_encoder": 49, "no_memory_embedding": 1,
                                "occlusion_spatial_embedding_parameter": 1, "shared_image_embedding": 1}
    assert_same(parts, od, op)


def test_huggingface_tied_positional_matrix_alone(tmp_path, official):
    """A file keeping only the top-level copy of the tied matrix: the prompt encoder takes it."""
    od, op = official
    sd = to_transformers(od, op)
    del sd["prompt_encoder.shared_embedding.positional_embedding"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    parts = load_sam2_checkpoint(tmp_path / "model.safetensors", **LOAD)
    assert "shared_image_embedding" not in parts.not_loaded
    assert_same(parts, od, op)


def test_decoder_alone_and_other_flags(tmp_path):
    od, op = build_official_sam2_pair(**SMALL, seed=4, pred_obj_scores=True)  # a linear head, no skips
    torch.save(od.state_dict(), tmp_path / "decoder.pt")
    parts = load_sam2_checkpoint(tmp_path / "decoder.pt", **LOAD, dynamic_multimask_via_stability=False,
                                 iou_prediction_use_sigmoid=False, use_multimask_token_for_obj_ptr=False)
    assert parts.format == "decoder" and parts.prompt_encoder is None
    dec = parts.mask_decoder
    assert not dec.use_high_res_features and dec.pred_obj_scores and not dec.pred_obj_scores_mlp
    assert isinstance(dec.pred_obj_score_head, torch.nn.Linear) and not dec.dynamic_multimask_via_stability
    sparse = torch.randn(2, 3, 32)
    emb, dense = torch.randn(1, 32, 8, 8), torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        a = od(emb, op.get_dense_pe(), sparse, dense, multimask_output=True, repeat_image=True)
        b = dec(emb, op.get_dense_pe(), sparse, dense, multimask_output=True, repeat_image=True)
    assert all((x - y).abs().max().item() <= 1e-5 for x, y in zip(a, b))


# --- refused, with a clear error, before anything is built ------------------------------------------


@pytest.fixture
def builds(monkeypatch):
    """Every build of a SAM 2 part, with the device it was built on (meta: shapes only, no memory)."""
    seen = []
    for name in ("build_sam2_mask_decoder", "build_sam2_prompt_encoder"):
        real = getattr(ck, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(torch.empty(0).device.type)
            return _real(*args, **kwargs)

        monkeypatch.setattr(ck, name, spy)
    return seen


def test_misshapen_missing_and_unexpected_keys(tmp_path, official, builds):
    od, op = official
    sd = official_state_dict(od, op)
    sd["sam_mask_decoder.conv_s1.weight"] = torch.zeros(8, 32, 3, 3)  # 3x3 where the model has 1x1
    del sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"]
    sd["sam_mask_decoder.extra.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(Sam2CheckpointError) as err:
        load_sam2_checkpoint(tmp_path / "bad.pt", **LOAD)
    msg = str(err.value)
    assert "missing (1): pred_obj_score_head.layers.2.bias" in msg
    assert "unexpected (1): extra.weight" in msg
    assert "conv_s1.weight: model (8, 32, 1, 1), checkpoint (8, 32, 3, 3)" in msg
    assert builds and set(builds) == {"meta"}  # refused with nothing built for real


def test_implied_sizes_are_limited_before_building(tmp_path, official, builds):
    od, op = official
    sd = official_state_dict(od, op)
    sd["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 100_000)
    torch.save({"model": sd}, tmp_path / "huge.pt")
    with pytest.raises(Sam2CheckpointError, match="transformer_dim = 100000, outside 0..4096"):
        load_sam2_checkpoint(tmp_path / "huge.pt", **LOAD)
    assert builds == []


@pytest.mark.parametrize("bad,message", [
    (lambda t: t.fill_(float("nan")), "holds 32 non-finite value"),
    (lambda t: t.to(torch.int64), "must be floating-point tensors .* int64"),
])
def test_corrupt_weights(tmp_path, official, builds, bad, message):
    od, op = official
    sd = official_state_dict(od, op)
    sd["sam_mask_decoder.iou_token.weight"] = bad(sd["sam_mask_decoder.iou_token.weight"].clone())
    torch.save({"model": sd}, tmp_path / "corrupt.pt")
    with pytest.raises(Sam2CheckpointError, match=message):
        load_sam2_checkpoint(tmp_path / "corrupt.pt", **LOAD)
    assert set(builds) <= {"meta"}


def test_heads_must_divide_the_channels(tmp_path, official):
    od, op = official
    torch.save({"model": official_state_dict(od, op)}, tmp_path / "f.pt")
    with pytest.raises(Sam2CheckpointError, match="h = 3 heads do not divide"):
        load_sam2_checkpoint(tmp_path / "f.pt", **dict(LOAD, num_heads=3))
    with pytest.raises(Sam2CheckpointError, match="num_heads: expected a whole number"):
        load_sam2_checkpoint(tmp_path / "f.pt", **dict(LOAD, num_heads=0))


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_SAM2",))


def test_pickled_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": _Payload()}}, f)
    with pytest.raises(Sam2CheckpointError, match="refused: the pickle"):
        load_sam2_checkpoint(path)
    assert not (tmp_path / "PWNED_SAM2").exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "not-a-dict", "missing", "sam1-official", "sam1-hf", "unknown"])
def test_unreadable_or_foreign_files(tmp_path, official, kind):
    path = tmp_path / "f.pt"
    if kind == "empty":
        path.write_bytes(b"")
        message = "the file is empty"
    elif kind == "truncated":
        od, op = official
        torch.save({"model": official_state_dict(od, op)}, path)
        path.write_bytes(path.read_bytes()[:2000])
        message = "is the file truncated"
    elif kind == "not-a-dict":
        torch.save([torch.zeros(1)], path)
        message = "expected a dict of tensors"
    elif kind == "missing":
        path = tmp_path / "nowhere.pt"
        message = "no checkpoint file"
    elif kind == "sam1-official":
        torch.save({"mask_decoder.iou_token.weight": torch.zeros(1, 32), "image_encoder.pos_embed": torch.zeros(1)}, path)
        message = "SAM \\(1\\) checkpoint.*load_sam_checkpoint"
    elif kind == "sam1-hf":
        path = tmp_path / "model.safetensors"
        save_file({"prompt_encoder.point_embed.0.weight": torch.zeros(1, 32),
                   "mask_decoder.upscale_conv1.weight": torch.zeros(32, 8, 2, 2)}, str(path))
        message = "Hugging Face SamModel file \\(SAM 1"
    else:
        torch.save({"some.other.weight": torch.zeros(1)}, path)
        message = "no SAM 2 decoder or prompt encoder found.*sam_mask_decoder.iou_token.weight"
    with pytest.raises(Sam2CheckpointError, match=message):
        load_sam2_checkpoint(path)
    assert issubclass(Sam2CheckpointError, CheckpointError)


def test_hf_key_map_names_every_decoder_key(official):
    od, op = official
    sd = to_transformers(od, op)
    mapping = ck.hf_sam2_key_map({k: tuple(v.shape) for k, v in sd.items()})
    want = set(official_state_dict(od, op))
    assert set(mapping) == want
    assert mapping["sam_prompt_encoder.point_embeddings.3.weight"] == ("prompt_encoder.point_embed.weight", 3)
    assert mapping["sam_mask_decoder.transformer.layers.0.mlp.layers.1.weight"] == \
        ("mask_decoder.transformer.layers.0.mlp.proj_out.weight", None)
    assert mapping["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] == \
        ("mask_decoder.pred_obj_score_head.proj_out.bias", None)
