"""Names, keys, parameter counts and hook points of the annotated modules."""

import torch

import sam_explain
from sam_explain import HookPoint, build_mask_decoder, build_prompt_encoder
from sam_explain.prompts import example_prompts, run_decoder


def test_same_state_dict_keys_and_shapes_as_official(sam_pair):
    od, op, d, p = sam_pair
    for ours, theirs in ((d, od), (p, op)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert list(a) == list(b)
        assert all(a[k].shape == b[k].shape for k in a)


def test_parameter_counts():
    d, p = build_mask_decoder(), build_prompt_encoder()
    assert sum(x.numel() for x in d.parameters()) == 4_058_340
    assert sum(x.numel() for x in p.parameters()) == 6_220
    assert len(d.state_dict()) == 120 and len(p.state_dict()) == 17
    layer = d.transformer.layers[0]
    assert sum(x.numel() for x in layer.parameters()) == 1_579_520
    assert sum(x.numel() for x in layer.mlp.parameters()) == 1_050_880
    assert sum(x.numel() for x in d.output_upscaling.parameters()) == 73_952
    assert sum(x.numel() for x in d.output_hypernetworks_mlps.parameters()) == 559_232
    assert sum(x.numel() for x in d.iou_prediction_head.parameters()) == 132_612


def test_same_public_names_as_official(official):
    for name in ("MaskDecoder", "PromptEncoder", "TwoWayTransformer"):
        assert hasattr(sam_explain, name)
    import inspect

    for name in ("MaskDecoder", "PromptEncoder", "TwoWayTransformer"):
        ours = inspect.signature(getattr(sam_explain, name).__init__)
        theirs = inspect.signature(getattr(official, name).__init__)
        assert list(ours.parameters) == list(theirs.parameters)
        ours = inspect.signature(getattr(sam_explain, name).forward)
        theirs = inspect.signature(getattr(official, name).forward)
        assert list(ours.parameters) == list(theirs.parameters)


def test_hook_points_see_documented_shapes():
    d, p = build_mask_decoder(), build_prompt_encoder()
    seen = {}
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, tuple(out.shape)))
        for name, m in list(d.named_modules()) + [("pe." + n, m) for n, m in p.named_modules()]
        if isinstance(m, HookPoint)
    ]
    B, N = 3, 2
    prompts = example_prompts(points=N, batch=B)  # N' = N + 1 (padding point), T = 5 + N'
    run_decoder(p, d, torch.randn(1, 256, 64, 64), prompts)
    for h in handles:
        h.remove()
    T = 5 + N + 1
    assert seen["hook_output_tokens"] == (B, 5, 256)
    assert seen["hook_tokens"] == (B, T, 256)
    assert seen["hook_src"] == seen["hook_pos_src"] == (B, 256, 64, 64)
    assert seen["transformer.layers.0.self_attn.hook_q"] == (B, 8, T, 32)
    assert seen["transformer.layers.0.self_attn.hook_probs"] == (B, 8, T, T)
    assert seen["transformer.layers.1.cross_attn_token_to_image.hook_k"] == (B, 8, 4096, 16)
    assert seen["transformer.layers.1.cross_attn_token_to_image.hook_probs"] == (B, 8, T, 4096)
    assert seen["transformer.layers.0.cross_attn_image_to_token.hook_logits"] == (B, 8, 4096, T)
    assert seen["transformer.final_attn_token_to_image.hook_out"] == (B, 8, T, 16)
    assert seen["hook_hs"] == (B, T, 256)
    assert seen["hook_iou_token_out"] == (B, 256)
    assert seen["hook_mask_tokens_out"] == (B, 4, 256)
    assert seen["hook_upscaled_embedding"] == (B, 32, 256, 256)
    assert seen["hook_hyper_in"] == (B, 4, 32)
    assert seen["hook_masks"] == (B, 4, 256, 256)
    assert seen["hook_iou_pred"] == (B, 4)
    assert seen["pe.hook_sparse"] == (B, N + 1, 256)
    assert seen["pe.hook_dense"] == (B, 256, 64, 64)


def test_hook_point_fast_path_and_every_kind_of_hook():
    """A hook point with no hook returns its input itself; a pre-hook, a forward hook, a global
    module hook or a backward hook each still sees the tensor (or its gradient)."""
    hp, x = HookPoint(), torch.randn(2, 3)
    assert hp(x) is x
    h = hp.register_forward_hook(lambda mod, inp, out: out * 2)
    assert torch.equal(hp(x), x * 2)
    h.remove()
    h = hp.register_forward_pre_hook(lambda mod, inp: (inp[0] + 1,))
    assert torch.equal(hp(x), x + 1)
    h.remove()
    seen = []
    h = torch.nn.modules.module.register_module_forward_hook(lambda mod, inp, out: seen.append(type(mod)))
    try:
        hp(x)
    finally:
        h.remove()
    assert seen == [HookPoint] and hp(x) is x
    grads = []
    h = hp.register_full_backward_hook(lambda mod, g_in, g_out: grads.append(g_out[0]))
    y = torch.randn(2, 3, requires_grad=True)
    (hp(y) * 3).sum().backward()
    h.remove()
    assert len(grads) == 1 and torch.equal(grads[0], torch.full((2, 3), 3.0))


def test_attention_probs_rows_sum_to_one():
    d, p = build_mask_decoder(), build_prompt_encoder()
    probs = []
    h = d.transformer.layers[1].cross_attn_image_to_token.hook_probs.register_forward_hook(
        lambda m, i, o: probs.append(o)
    )
    run_decoder(p, d, torch.randn(1, 256, 64, 64), example_prompts(points=1))
    h.remove()
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(1, 8, 4096))


def test_bf16_forward_runs():
    d, p = build_mask_decoder().to(torch.bfloat16), build_prompt_encoder().to(torch.bfloat16)
    masks, iou, sparse, dense = run_decoder(
        p, d, torch.randn(1, 256, 64, 64, dtype=torch.bfloat16), example_prompts(points=2, box=True, batch=2)
    )
    assert masks.dtype == torch.bfloat16 and masks.shape == (2, 3, 256, 256)
    assert torch.isfinite(masks.float()).all()
