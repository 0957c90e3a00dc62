"""Per-prompt latency of our MaskDecoder against the official one, same weights, same run.

    python benchmarks/bench_decoder.py            # CPU: B = 1 and 16
    python benchmarks/bench_decoder.py --device cuda   # fp32 and bf16, B = 1, 64, 1024

Prints one row per setting: milliseconds per call of each (geometric means) and ours / official,
the geometric mean of interleaved pair ratios (``timing.compare``; target: at most 1.05). No hooks
are registered.
"""

from __future__ import annotations

import argparse

import torch

from sam_explain import build_mask_decoder, build_prompt_encoder
from sam_explain.prompts import example_prompts
from sam_explain.testing import build_official_pair
from timing import compare


@torch.no_grad()
def bench(device: str, dtype: torch.dtype, batch: int, pairs: int):
    od, op = build_official_pair(seed=0)
    ours = build_mask_decoder()
    ours.load_state_dict(od.state_dict())
    pe = build_prompt_encoder()
    pe.load_state_dict(op.state_dict())
    od, ours, pe = od.to(device, dtype), ours.to(device, dtype), pe.to(device, dtype)
    prompts = example_prompts(points=2, batch=batch).to(device)
    sparse, dense = pe(prompts.points, None, None)
    args = (
        torch.randn(1, 256, 64, 64, device=device, dtype=dtype),
        pe.get_dense_pe(), sparse.to(dtype), dense.to(dtype), True,
    )
    return compare(lambda: ours(*args), lambda: od(*args), pairs=pairs, warmup=3, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=0, help="timed pairs per setting, even (default: by size)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        settings = [(dt, b) for dt in (torch.float32, torch.bfloat16) for b in (1, 64, 1024)]
        name = torch.cuda.get_device_name()
    else:
        settings = [(torch.float32, 1), (torch.float32, 16)]
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"MaskDecoder latency, ours vs official (segment-anything 1.0), torch {torch.__version__}, {name}")
    print(f"{'dtype':<9} {'B':>5} {'ours ms':>10} {'official ms':>12} {'ours ms/prompt':>15} {'ratio':>7}")
    for dtype, batch in settings:
        pairs = args.pairs or (30 if batch <= 16 else 10)
        c = bench(args.device, dtype, batch, pairs)
        print(f"{str(dtype).replace('torch.', ''):<9} {batch:>5} {c.a_ms:>10.2f} {c.b_ms:>12.2f} "
              f"{c.a_ms / batch:>15.3f} {c.ratio:>7.3f}")


if __name__ == "__main__":
    main()
