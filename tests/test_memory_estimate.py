"""The decoder's memory estimate, which the command line checks before a batch runs, is an upper
bound of what a forward really holds at its peak (measured in a fresh process)."""

import subprocess
import sys
import textwrap

import pytest

from sam_explain.utils.memory import decoder_bytes, parse_size

PROBE = textwrap.dedent("""
    import gc, resource, sys, torch
    torch.set_num_threads(1)
    from sam_explain import build_mask_decoder, build_prompt_encoder
    from sam_explain.prompts import example_prompts, run_decoder
    decoder, prompt_encoder = build_mask_decoder(), build_prompt_encoder()
    emb = torch.randn(1, 256, 64, 64)
    run_decoder(prompt_encoder, decoder, emb, example_prompts(points=1, batch=1))  # warm: kernels, allocator
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    run_decoder(prompt_encoder, decoder, emb, example_prompts(points=1, batch=int(sys.argv[1])))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux")
def test_decoder_estimate_bounds_the_measured_peak():
    B = 12
    grown = int(subprocess.run([sys.executable, "-c", PROBE, str(B)], capture_output=True, text=True,
                               check=True, timeout=300).stdout.split()[-1])
    assert grown > 0.5 * decoder_bytes(B)  # the estimate is of the right size ...
    assert decoder_bytes(B) >= grown  # ... and above what the forward took


def test_sizes_parse():
    assert parse_size("8G") == 8 * 2**30 and parse_size("512MiB") == 512 * 2**20 and parse_size("100") == 100
    with pytest.raises(ValueError, match="expected a size such as 8G"):
        parse_size("lots")
