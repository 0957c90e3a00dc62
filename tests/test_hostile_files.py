"""Hostile and odd checkpoint files: each is refused with a CheckpointError that says why, fast and in
bounded memory (checked under an address-space limit), and the files users really have load."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from sam_explain import build_mask_decoder, build_prompt_encoder, build_sam
from sam_explain.checkpoint import CheckpointError, load_sam_checkpoint
from sam_explain.testing import TINY_SAM, build_official_sam


def small_decoder_sd(C: int = 16) -> dict:
    torch.manual_seed(0)
    return build_mask_decoder(transformer_dim=C, num_heads=2, mlp_dim=32, iou_head_hidden_dim=16).state_dict()


def crafted_files(folder) -> dict:
    """name -> (path, what the refusal must say). Each is small; built naively, each would allocate
    gigabytes or run for long."""
    folder = str(folder)
    files = {}

    def add(name, what, writer):
        path = os.path.join(folder, name)
        writer(path)
        files[name] = (path, what)

    # zero-size tensors claiming C = 65536: a few hundred bytes
    zero = {k: torch.zeros(0, 65536) for k in ("iou_token.weight", "mask_tokens.weight",
                                               "transformer.final_attn_token_to_image.q_proj.weight")}
    add("zero_size.safetensors", "zero-size axis", lambda p: save_file(zero, p))
    # a valid small decoder and one stray key of block 399: depth 400
    stray = dict(small_decoder_sd())
    stray["transformer.layers.399.norm1.weight"] = torch.ones(16)
    add("depth_400.safetensors", "depth = 400, outside 0..64", lambda p: save_file(stray, p))
    # block 40: within the limit, so the decoder is built on the meta device and its missing keys named
    near = dict(small_decoder_sd())
    near["transformer.layers.40.norm1.weight"] = torch.ones(16)
    add("depth_41.safetensors", "missing (", lambda p: save_file(near, p))
    # an official-layout file whose shapes imply a 16384-wide encoder, its blocks absent
    wide = {"image_encoder.patch_embed.proj.weight": torch.zeros(16384, 3, 1, 1) + 0.1,
            "image_encoder.pos_embed": torch.zeros(1, 1, 1, 16384),
            "image_encoder.blocks.0.attn.rel_pos_h": torch.zeros(1, 64),
            "mask_decoder.iou_token.weight": torch.zeros(1, 16),
            "mask_decoder.transformer.layers.0.mlp.lin1.weight": torch.zeros(32, 16),
            "mask_decoder.iou_prediction_head.layers.0.weight": torch.zeros(16, 16),
            "prompt_encoder.mask_downscaling.3.weight": torch.zeros(16, 4, 2, 2)}
    add("wide_encoder.safetensors", "encoder_embed_dim = 16384", lambda p: save_file(wide, p))
    return files


@pytest.mark.parametrize("index", range(4))
def test_crafted_files_are_refused_with_what_was_found(tmp_path, index):
    name, (path, what) = sorted(crafted_files(tmp_path).items())[index]
    with pytest.raises(CheckpointError) as err:
        (build_sam if name.startswith("wide") else load_sam_checkpoint)(path)
    assert what in str(err.value), (name, str(err.value))


PROBE = textwrap.dedent("""
    import resource, sys, torch
    from sam_explain import build_sam
    from sam_explain.checkpoint import CheckpointError, load_sam_checkpoint

    def vm_bytes():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))

    limit = vm_bytes() + 2**30  # 1 GiB above what the interpreter and torch already use
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for path in sys.argv[1:]:
        try:
            (build_sam if "wide" in path else load_sam_checkpoint)(path, **({} if "wide" in path else {"num_heads": 2}))
            print("loaded", path)
        except CheckpointError:
            print("CheckpointError", path)
        except BaseException as err:
            print(type(err).__name__, path, str(err).splitlines()[0][:200])
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_crafted_files_are_refused_within_one_gib_of_address_space(tmp_path):
    paths = [path for path, _ in crafted_files(tmp_path).values()]
    valid = tmp_path / "valid.safetensors"  # and a real file still loads under the same limit
    save_file(small_decoder_sd(), str(valid))
    out = subprocess.run([sys.executable, "-c", PROBE, *paths, str(valid)], capture_output=True, text=True,
                         timeout=300)
    lines = out.stdout.splitlines()
    assert len(lines) == len(paths) + 1, out.stdout + out.stderr
    assert all(line.startswith("CheckpointError") for line in lines[:-1]), out.stdout
    assert lines[-1].startswith("loaded"), out.stdout


def test_one_stray_key_in_a_full_checkpoint_is_refused_before_building(tmp_path):
    sd = dict(build_official_sam(**TINY_SAM).state_dict())
    sd["image_encoder.blocks.0.attn.stray"] = torch.ones(3)
    path = tmp_path / "stray.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): image_encoder.blocks.0.attn.stray"):
        build_sam(checkpoint=path)


@pytest.mark.parametrize("content, what", [
    (b'{"iou_token.weight": [1, 2]}', "a JSON file, not a checkpoint"),
    (bytes(range(7, 250)) * 4, "not a checkpoint: it starts with the bytes"),
    (b"just some text\n" * 10, "not a checkpoint: it starts with the bytes"),
    (b"\x80\x02garbage" * 8, "refused: the pickle uses what torch.save never writes"),
])
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, content, what):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=what):
        load_sam_checkpoint(path)


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.complex64])
def test_weights_of_the_wrong_kind_are_refused(tmp_path, dtype):
    sd = {k: v.to(dtype) for k, v in small_decoder_sd().items()}
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=f"must be floating-point tensors .* {str(dtype).replace('torch.', '')}"):
        load_sam_checkpoint(tmp_path / "w.pth", num_heads=2)


def test_non_finite_weights_and_wrong_ranks_and_keys_are_refused(tmp_path):
    sd = dict(small_decoder_sd())
    sd["mask_tokens.weight"] = sd["mask_tokens.weight"].clone()
    sd["mask_tokens.weight"][1, 3] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"mask_tokens.weight holds 1 non-finite value"):
        load_sam_checkpoint(tmp_path / "nan.pth", num_heads=2)
    sd = dict(small_decoder_sd())
    sd["iou_token.weight"] = sd["iou_token.weight"][0]  # C instead of 1 x C
    torch.save(sd, tmp_path / "rank.pth")
    with pytest.raises(CheckpointError, match=r"iou_token.weight must be 1 x C, found shape \(16,\)"):
        load_sam_checkpoint(tmp_path / "rank.pth", num_heads=2)
    torch.save({0: torch.ones(2)}, tmp_path / "int_keys.pth")
    with pytest.raises(CheckpointError, match="expected string keys .* int keys"):
        load_sam_checkpoint(tmp_path / "int_keys.pth")
    with pytest.raises(CheckpointError, match="num_heads: expected a whole number of heads h >= 1"):
        load_sam_checkpoint(tmp_path / "rank.pth", num_heads=0)
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="CUDA is not available here"):
            load_sam_checkpoint(tmp_path / "rank.pth", device="cuda")


def test_the_files_users_have_load(tmp_path):
    """A fine-tuning checkpoint, a Lightning one, a save_pretrained folder and a sharded checkpoint."""
    dec = small_decoder_sd()
    torch.manual_seed(1)
    pe = build_prompt_encoder(embed_dim=16).state_dict()
    full = {**{"mask_decoder." + k: v for k, v in dec.items()}, **{"prompt_encoder." + k: v for k, v in pe.items()}}
    torch.save({"model": full, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, tmp_path / "ft.pth")
    torch.save({"state_dict": {"model." + k: v for k, v in full.items()}, "epoch": 7,
                "hyper_parameters": {"lr": 1e-4}}, tmp_path / "lightning.ckpt")
    folder = tmp_path / "saved"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in full.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = sorted(full)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: full[k].contiguous() for k in part}, str(sharded / name))
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, part in halves.items() for k in part}}))
    for path in (tmp_path / "ft.pth", tmp_path / "lightning.ckpt", folder, sharded,
                 sharded / "model.safetensors.index.json"):
        parts = load_sam_checkpoint(path, num_heads=2)
        assert all(torch.equal(v, dec[k]) for k, v in parts.mask_decoder.state_dict().items()), path
        assert all(torch.equal(v, pe[k]) for k, v in parts.prompt_encoder.state_dict().items()), path
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="is not a file beside the index"):
        load_sam_checkpoint(sharded)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="a folder without a checkpoint"):
        load_sam_checkpoint(tmp_path / "empty")
