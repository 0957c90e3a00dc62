"""The decoder's memory estimate, which the command line checks before a batch runs, is an upper
bound of what a forward really holds at its peak."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from sam_explain import build_mask_decoder, build_prompt_encoder
from sam_explain.prompts import example_prompts, run_decoder
from sam_explain.utils.memory import decoder_bytes, parse_size


def peak_tensor_bytes(fn) -> int:
    """The most bytes of tensors alive at once while fn runs, from the profiler's record of every
    allocation and free (exact and the same on every machine, unlike the process's resident size)."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    live = peak = 0
    for _, n in events:
        live += n
        peak = max(peak, live)
    return peak


def test_decoder_estimate_bounds_the_measured_peak():
    torch.manual_seed(0)
    decoder, prompt_encoder = build_mask_decoder(), build_prompt_encoder()
    emb = torch.randn(1, 256, 64, 64)
    B = 12
    peak = peak_tensor_bytes(lambda: run_decoder(prompt_encoder, decoder, emb, example_prompts(points=1, batch=B)))
    assert peak > 0.5 * decoder_bytes(B)  # the estimate is of the right size ...
    assert decoder_bytes(B) >= peak  # ... and above what the forward held (22 MiB per prompt set)


def test_decoder_estimate_covers_sam2_with_its_skips():
    from sam_explain.sam2 import (boxes_as_points, build_sam2_mask_decoder, build_sam2_prompt_encoder,
                                  project_high_res_features, run_sam2_decoder, stand_in_backbone_features)
    torch.manual_seed(0)
    decoder, prompt_encoder = build_sam2_mask_decoder(), build_sam2_prompt_encoder()
    emb = torch.randn(1, 256, 64, 64)
    with torch.no_grad():
        feats = project_high_res_features(decoder, *stand_in_backbone_features(emb))
    B = 12
    prompts = boxes_as_points(example_prompts(points=1, batch=B))
    peak = peak_tensor_bytes(lambda: run_sam2_decoder(prompt_encoder, decoder, emb, prompts, high_res_features=feats))
    assert 0.5 * decoder_bytes(B) < peak <= decoder_bytes(B)  # 24 MiB per prompt set


def test_sizes_parse():
    assert parse_size("8G") == 8 * 2**30 and parse_size("512MiB") == 512 * 2**20 and parse_size("100") == 100
    with pytest.raises(ValueError, match="expected a size such as 8G"):
        parse_size("lots")
