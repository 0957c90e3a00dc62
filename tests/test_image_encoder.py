"""The image encoder against the official one, with the same random weights (small configs;
the full-size vit_b forward is in benchmarks/bench_image_encoder.py)."""

from functools import partial

import pytest
import torch
from torch import nn

from sam_explain import ImageEncoderViT, ShapeError
from sam_explain.modeling import image_encoder as ours_mod
from sam_explain.testing import official_modeling, randomize_

TOL = 1e-5


def official_encoder_module():
    official_modeling()
    import importlib

    return importlib.import_module("segment_anything.modeling.image_encoder")


CONFIGS = {
    # 8 x 8 grid, 3 x 3 windows: the grid is padded to 9 x 9; block 1 is global
    "windowed-padded+global": dict(img_size=128, embed_dim=32, depth=3, num_heads=2, window_size=3,
                                   global_attn_indexes=(1,), use_rel_pos=True),
    # 8 x 8 grid, 4 x 4 windows: no padding; last block global
    "windowed-exact+global": dict(img_size=128, embed_dim=48, depth=2, num_heads=4, window_size=4,
                                  global_attn_indexes=(1,), use_rel_pos=True),
    # every block global, no positions at all
    "global-no-pos": dict(img_size=64, embed_dim=32, depth=2, num_heads=2, window_size=0,
                          use_rel_pos=False, use_abs_pos=False),
}


def make_pair(cfg, seed=0):
    sa = official_modeling()
    kwargs = dict(cfg, patch_size=16, mlp_ratio=4, out_chans=16, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
    torch.manual_seed(seed)
    official = sa.ImageEncoderViT(**kwargs).eval()
    randomize_(official, seed)
    if official.pos_embed is not None:
        with torch.no_grad():
            official.pos_embed.normal_(0, 0.1)
    ours = ImageEncoderViT(**kwargs).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


@pytest.fixture(params=["fused", "explicit"])
def attention_path(request, monkeypatch):
    """Run a test with the fused attention kernel (the default when nothing hooks the
    maps) and with the explicit q k^T, softmax, times v path."""
    monkeypatch.setattr(ours_mod.Attention, "use_fused_attention", request.param == "fused")
    return request.param


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_official(name, attention_path):
    official, ours = make_pair(CONFIGS[name])
    size = CONFIGS[name]["img_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = official(x), ours(x)
    assert got.shape == expected.shape == (2, 16, size // 16, size // 16)
    assert expected.abs().max() > 0.5  # the comparison is not between near-zero outputs
    assert (got - expected).abs().max().item() < TOL


def test_state_dict_is_the_official_layout():
    official, ours = make_pair(CONFIGS["windowed-padded+global"])
    theirs = official.state_dict()
    mine = ours.state_dict()
    assert list(mine) == list(theirs)
    assert all(mine[k].shape == theirs[k].shape for k in mine)
    # windowed blocks have S x S tables, the global block H x W ones
    assert mine["blocks.0.attn.rel_pos_h"].shape == (2 * 3 - 1, 16)
    assert mine["blocks.1.attn.rel_pos_h"].shape == (2 * 8 - 1, 16)


def test_hooking_the_maps_switches_to_the_explicit_path_with_the_same_output():
    _, ours = make_pair(CONFIGS["windowed-padded+global"])
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    calls = []
    with torch.no_grad():
        fused = ours(x)
        handle = ours.blocks[1].attn.hook_logits.register_forward_hook(lambda m, i, o: calls.append(o.shape))
        explicit = ours(x)
        handle.remove()
        # a global module hook (torchinfo's, say) does not ask for the maps: it must not change what it observes
        glob = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: calls.append(o.shape) if isinstance(m, ours_mod.HookPoint) else None)
        observed = ours(x)
        glob.remove()
    assert calls[0] == (1, 2, 64, 64)
    assert len(calls) > 1 and (1 * 9, 2, 9, 9) not in calls[1:]  # it saw other hook points, no windowed maps
    assert (explicit - fused).abs().max().item() < TOL
    assert torch.equal(observed, fused)  # still the fused kernel, bit for bit
    assert not any(blk.attn.attention_map_hooked() for blk in ours.blocks)
    # a gradient hook on the maps asks for them too (the fused kernel would never call it)
    grads = []
    handle = ours.blocks[0].attn.hook_probs.register_full_backward_hook(lambda m, gi, go: grads.append(go[0].shape))
    ours(x.requires_grad_()).sum().backward()
    handle.remove()
    assert len(grads) == 1 and grads[0][-2] == grads[0][-1]  # B' x h x n x n


def test_window_partition_round_trip_and_official_order():
    off = official_encoder_module()
    x = torch.randn(2, 7, 10, 5)
    windows, padded = ours_mod.window_partition(x, 4)
    ref_windows, ref_padded = off.window_partition(x, 4)
    assert padded == ref_padded == (8, 12)
    assert torch.equal(windows, ref_windows)  # same windows, same order
    assert torch.equal(ours_mod.window_unpartition(windows, 4, padded, (7, 10)), x)


@pytest.mark.parametrize("q_size,k_size,table", [(5, 5, 9), (4, 8, 15), (8, 4, 15), (6, 6, 7)])
def test_rel_pos_lookup_matches_official(q_size, k_size, table):
    off = official_encoder_module()
    rel_pos = torch.randn(table, 3)
    assert torch.allclose(ours_mod.get_rel_pos(q_size, k_size, rel_pos),
                          off.get_rel_pos(q_size, k_size, rel_pos), atol=1e-6)


def test_attention_hooks_see_windows_and_global_maps():
    _, ours = make_pair(CONFIGS["windowed-padded+global"])
    seen = {}

    def keep(name):
        return lambda module, inputs, output: seen.__setitem__(name, output.detach().clone())

    handles = [ours.blocks[i].attn.hook_probs.register_forward_hook(keep(f"probs{i}")) for i in range(3)]
    handles.append(ours.hook_patches.register_forward_hook(keep("patches")))
    with torch.no_grad():
        ours(torch.randn(2, 3, 128, 128))
    for h in handles:
        h.remove()
    # windowed: B' = B * nW = 2 * 9 windows of n = 3 * 3 positions; global: B x h x HW x HW
    assert seen["probs0"].shape == (2 * 9, 2, 9, 9)
    assert seen["probs1"].shape == (2, 2, 64, 64)
    assert seen["patches"].shape == (2, 8, 8, 32)
    for key in ("probs0", "probs1", "probs2"):
        assert torch.allclose(seen[key].sum(-1), torch.ones(()), atol=1e-5)


def test_uniform_attention_patch_changes_the_embedding():
    _, ours = make_pair(CONFIGS["windowed-padded+global"])
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = ours(x)
        handle = ours.blocks[1].attn.hook_probs.register_forward_hook(lambda m, i, o: torch.full_like(o, 1 / 64))
        patched = ours(x)
        handle.remove()
        after = ours(x)
    assert torch.equal(before, after)  # the hook is gone, nothing else changed
    assert (patched - before).abs().max() > 1e-3


def test_bad_input_names_the_shapes():
    _, ours = make_pair(CONFIGS["global-no-pos"])
    with pytest.raises(ShapeError, match=r"x must be B x 3 x 64 x 64, got 1 x 3 x 60 x 64"):
        ours(torch.randn(1, 3, 60, 64))
    with pytest.raises(ShapeError, match=r"got 3 x 64 x 64 \(3 dims where 4 are expected\)"):
        ours(torch.randn(3, 64, 64))
    with pytest.raises(ShapeError, match=r"x is torch.float64 on cpu, but the encoder's weights are torch.float32"):
        ours(torch.randn(1, 3, 64, 64, dtype=torch.float64))
