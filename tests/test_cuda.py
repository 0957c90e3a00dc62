"""On a GPU: parity with the official code, attention capture and the toy model. Skipped without CUDA
(CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``."""

import copy

import numpy as np
import pytest
import torch

from sam_explain.attention import record_attention
from sam_explain.prompts import example_prompts
from sam_explain.testing import run_both

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# float32 on the GPU: the two codes may pick different kernels (cuDNN convolutions run in TF32 by
# default), so the bound is looser than the CPU tests' 1e-5.
CUDA_TOL = 1e-3


@pytest.fixture(scope="module")
def cuda_pair(sam_pair):
    return tuple(copy.deepcopy(m).cuda() for m in sam_pair)


@pytest.mark.parametrize("kind", [dict(points=2), dict(points=1, box=True), dict(points=1, mask=True)],
                         ids=["points", "points+box", "points+mask"])
@pytest.mark.parametrize("batch", [1, 16])
def test_parity_on_cuda_float32(cuda_pair, kind, batch):
    prompts = example_prompts(**kind, batch=batch, seed=batch).to("cuda")
    emb = torch.randn(1, 256, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(batch))
    _, _, (m_off, m_our), (i_off, i_our) = run_both(*cuda_pair, prompts, emb, multimask=True)
    assert m_our.device.type == "cuda" and m_our.shape == (batch, 3, 256, 256)
    assert (m_our - m_off).abs().max().item() <= CUDA_TOL * max(1.0, m_off.abs().max().item())
    assert (i_our - i_off).abs().max().item() <= CUDA_TOL
    assert m_our.std() > 0.01


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_parity_on_cuda_under_autocast(cuda_pair, dtype):
    prompts = example_prompts(points=2, box=True, batch=4).to("cuda")
    emb = torch.randn(1, 256, 64, 64, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        _, _, (m_off, m_our), (i_off, i_our) = run_both(*cuda_pair, prompts, emb, multimask=True)
    assert m_our.dtype == m_off.dtype and i_our.dtype == i_off.dtype
    scale = max(1.0, m_off.float().abs().max().item())
    assert (m_our.float() - m_off.float()).abs().max().item() <= 2e-2 * scale
    assert (i_our.float() - i_off.float()).abs().max().item() <= 2e-2


def test_attention_maps_on_cuda_stay_or_move(cuda_pair):
    *_, d, p = cuda_pair
    prompts = example_prompts(points=2, batch=2).to("cuda")
    with torch.no_grad():
        sparse, dense = p(points=prompts.points, boxes=None, masks=None)
        kw = dict(image_embeddings=torch.randn(1, 256, 64, 64, device="cuda"), image_pe=p.get_dense_pe(),
                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
        with record_attention(d) as on_gpu:
            d(**kw)
        with record_attention(d, device="cpu") as on_cpu:
            d(**kw)
    T = 5 + 2 + 1  # output tokens + 2 clicks + the padding point
    name = "transformer.final_attn_token_to_image"
    assert on_gpu[name].device.type == "cuda" and on_cpu[name].device.type == "cpu"
    assert on_gpu[name].shape == (2, 8, T, 4096)
    assert torch.equal(on_gpu[name].cpu(), on_cpu[name])
    assert torch.allclose(on_gpu[name].sum(-1), torch.ones(2, 8, T, device="cuda"), atol=1e-4)


def test_toy_model_on_cuda_matches_cpu():
    from sam_explain.toy import make_scene, toy_model
    from sam_explain.toy.evaluate import evaluate

    cpu, gpu = toy_model(), toy_model(device="cuda")
    image = make_scene(2).image
    emb_cpu, emb_gpu = cpu.embed(image), gpu.embed(image)
    assert emb_gpu.device.type == "cuda" and emb_gpu.shape == (1, 256, 64, 64)
    m_cpu, i_cpu = cpu.predict(emb_cpu, points=[(128.0, 128.0)])
    m_gpu, i_gpu = gpu.predict(emb_gpu, points=[(128.0, 128.0)])
    assert ((m_cpu > 0) == (m_gpu.cpu() > 0)).float().mean() > 0.999
    assert torch.allclose(i_cpu, i_gpu.cpu(), atol=1e-2)
    figures = evaluate(gpu, num_scenes=4)
    assert figures["click_best_of_3_miou"] >= 0.70, figures


def test_training_on_cuda_lowers_the_loss():
    from dataclasses import replace

    from sam_explain.toy.schedules import SCHEDULES
    from sam_explain.toy.train import train

    cfg = replace(SCHEDULES["tiny"], stages=((32, 30),), device="cuda", amp=True)
    model, history = train(cfg, out=None, progress=False)
    assert next(model.parameters()).device.type == "cuda"
    losses = history["loss"]
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:3]), losses
