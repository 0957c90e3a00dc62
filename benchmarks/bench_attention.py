"""Cost of recording the attention maps: the decoder inside ``record_attention`` against the same
decoder without hooks, same weights, same run (calls alternate so machine drift hits both alike).

    python benchmarks/bench_attention.py                  # CPU, B = 1 and 8
    python benchmarks/bench_attention.py --device cuda --batch 1 64

Prints per setting: median ms of a plain call, of a recorded call, their ratio, and the bytes the
record held against the estimate made before the forward.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sam_explain import build_mask_decoder, build_prompt_encoder, record_attention
from sam_explain.attention.capture import format_bytes
from sam_explain.example import example_prompts
from sam_explain.testing import randomize_


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def bench(device: str, batch: int, options: dict, repeats: int, warmup: int = 2):
    torch.manual_seed(0)
    decoder = randomize_(build_mask_decoder()).to(device)
    pe = randomize_(build_prompt_encoder(), 1).to(device)
    prompts = example_prompts(points=2, batch=batch).to(device)
    sparse, dense = pe(prompts.points, None, None)
    args = (torch.randn(1, 256, 64, 64, device=device), pe.get_dense_pe(), sparse, dense, True)
    times = {"plain": [], "recorded": []}
    held = estimated = 0
    for i in range(warmup + repeats):
        for name in (("plain", "recorded") if i % 2 == 0 else ("recorded", "plain")):
            sync(device)
            t0 = time.perf_counter()
            if name == "plain":
                decoder(*args)
            else:
                with record_attention(decoder, **options) as attn:
                    decoder(*args)
                held, estimated = attn.nbytes, attn.estimated_bytes
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return statistics.median(times["plain"]), statistics.median(times["recorded"]), held, estimated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    settings = {
        "all heads, kept": {},
        "all heads, to cpu": {"device": "cpu"},
        "head mean": {"average_heads": True},
    }
    print(f"{'setting':<20} {'B':>4} {'plain ms':>9} {'recorded ms':>12} {'ratio':>6} {'held':>10} {'estimate':>10}")
    for batch in args.batch:
        for label, options in settings.items():
            plain, recorded, held, estimated = bench(args.device, batch, options, args.repeats)
            print(f"{label:<20} {batch:>4} {plain * 1e3:>9.1f} {recorded * 1e3:>12.1f} "
                  f"{recorded / plain:>6.2f} {format_bytes(held):>10} {format_bytes(estimated):>10}")


if __name__ == "__main__":
    main()
