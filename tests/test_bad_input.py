"""What bad input gets: a ShapeError naming expected and actual shapes in the docs' symbols,
raised before anything is computed, leaving the model and its hooks as they were."""

import pytest
import torch

from sam_explain import ShapeError, build_mask_decoder, build_prompt_encoder


@pytest.fixture(scope="module")
def models():
    return build_mask_decoder(), build_prompt_encoder()


def good_inputs(B=3, n_sparse=4):
    return dict(
        image_embeddings=torch.randn(1, 256, 64, 64),
        image_pe=torch.randn(1, 256, 64, 64),
        sparse_prompt_embeddings=torch.randn(B, n_sparse, 256),
        dense_prompt_embeddings=torch.randn(B, 256, 64, 64),
        multimask_output=True,
    )


DECODER_CASES = {
    "wrong channel count": (
        dict(image_embeddings=torch.randn(1, 128, 64, 64)),
        "image_embeddings must be I x C x H x W = I x 256 x H x W, got 1 x 128 x 64 x 64",
    ),
    "sparse channels": (
        dict(sparse_prompt_embeddings=torch.randn(3, 4, 255)),
        "sparse_prompt_embeddings must be B x N' x C = B x N' x 256, got 3 x 4 x 255",
    ),
    "dense of wrong size": (
        dict(dense_prompt_embeddings=torch.randn(3, 256, 32, 32)),
        "dense_prompt_embeddings must be B x C x H x W = 3 x 256 x 64 x 64, got 3 x 256 x 32 x 32",
    ),
    "dense of the wrong batch (no broadcast)": (
        dict(dense_prompt_embeddings=torch.randn(1, 256, 64, 64)),
        "dense_prompt_embeddings must be B x C x H x W = 3 x 256 x 64 x 64, got 1 x 256 x 64 x 64",
    ),
    "positional encoding of the wrong grid": (
        dict(image_pe=torch.randn(1, 256, 32, 64)),
        "image_pe must be 1 x C x H x W = 1 x 256 x 64 x 64, got 1 x 256 x 32 x 64",
    ),
    "positional encoding batched": (
        dict(image_pe=torch.randn(3, 256, 64, 64)),
        "image_pe must be 1 x C x H x W = 1 x 256 x 64 x 64, got 3 x 256 x 64 x 64",
    ),
    "images and prompt sets that do not match": (
        dict(image_embeddings=torch.randn(2, 256, 64, 64)),
        "image_embeddings has I = 2 images but sparse_prompt_embeddings has B = 3 prompt sets",
    ),
    "three-dimensional image embedding": (
        dict(image_embeddings=torch.randn(256, 64, 64)),
        "got 256 x 64 x 64 (3 dims where 4 are expected",
    ),
    "dtype mismatch": (
        dict(image_embeddings=torch.randn(1, 256, 64, 64, dtype=torch.float64)),
        "image_embeddings is torch.float64 on cpu, but the decoder's weights are torch.float32",
    ),
}


@pytest.mark.parametrize("case", list(DECODER_CASES))
def test_decoder_rejects(models, case):
    decoder, _ = models
    override, message = DECODER_CASES[case]
    inputs = {**good_inputs(), **override}
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    with pytest.raises(ShapeError) as err:
        decoder(**inputs)
    assert message in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in decoder.state_dict().items())


def test_decoder_rejects_non_bool_multimask(models):
    decoder, _ = models
    with pytest.raises(TypeError, match="multimask_output must be a bool, got int"):
        decoder(**{**good_inputs(), "multimask_output": 1})


def test_decoder_accepts_good_inputs(models):
    decoder, _ = models
    masks, iou = decoder(**good_inputs())
    assert masks.shape == (3, 3, 256, 256)


def test_failure_leaves_hooks_as_they_were(models):
    decoder, _ = models
    calls = []
    handle = decoder.transformer.layers[0].self_attn.hook_probs.register_forward_hook(
        lambda *a: calls.append(1)
    )
    try:
        hooks_before = {n: dict(m._forward_hooks) for n, m in decoder.named_modules()}
        with pytest.raises(ShapeError):
            decoder(**{**good_inputs(), "dense_prompt_embeddings": torch.randn(2, 256, 64, 64)})
        assert calls == []  # rejected before anything ran
        assert {n: dict(m._forward_hooks) for n, m in decoder.named_modules()} == hooks_before
        decoder(**good_inputs())
        assert calls == [1]
    finally:
        handle.remove()


PROMPT_CASES = {
    "points without labels": (
        dict(points=(torch.rand(2, 3, 2), None)),
        "points need labels B x N",
    ),
    "points not a pair": (
        dict(points=torch.rand(2, 3, 2)),
        "points must be a pair (coords B x N x 2, labels B x N), got Tensor",
    ),
    "coords with three numbers": (
        dict(points=(torch.rand(2, 3, 3), torch.ones(2, 3))),
        "point coords must be B x N x 2, got 2 x 3 x 3",
    ),
    "labels of the wrong count": (
        dict(points=(torch.rand(2, 3, 2), torch.ones(2, 4))),
        "point labels must be B x N = 2 x 3, got 2 x 4",
    ),
    "labels of an unknown value": (
        dict(points=(torch.rand(2, 3, 2), torch.tensor([[1, 0, 2], [1, 1, 1]]))),
        "point labels must be 1 (foreground), 0 (background) or -1 (padding), got [2]",
    ),
    "boxes of the wrong shape": (
        dict(boxes=torch.rand(2, 2, 2)),
        "boxes must be B x 4, got 2 x 2 x 2",
    ),
    "boxes and points with different prompt sets": (
        dict(points=(torch.rand(2, 3, 2), torch.ones(2, 3)), boxes=torch.rand(3, 4)),
        "boxes must be B x 4 = 2 x 4, got 3 x 4 (B = 2 from point coords)",
    ),
    "mask of the wrong size": (
        dict(masks=torch.rand(2, 1, 128, 128)),
        "masks must be B x 1 x 4H x 4W = B x 1 x 256 x 256, got 2 x 1 x 128 x 128",
    ),
    "mask with the wrong prompt-set count": (
        dict(boxes=torch.rand(2, 4), masks=torch.rand(3, 1, 256, 256)),
        "masks must be B x 1 x 4H x 4W = 2 x 1 x 256 x 256, got 3 x 1 x 256 x 256 (B = 2 from boxes)",
    ),
}


@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_prompt_encoder_rejects(models, case):
    _, encoder = models
    kwargs, message = PROMPT_CASES[case]
    call = dict(points=None, boxes=None, masks=None)
    call.update(kwargs)
    with pytest.raises(ShapeError) as err:
        encoder(**call)
    assert message in str(err.value)
