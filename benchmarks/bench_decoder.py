"""Per-prompt latency of our MaskDecoder against the official one, same weights, same run.

    python benchmarks/bench_decoder.py            # CPU: B = 1 and 16
    python benchmarks/bench_decoder.py --device cuda   # adds fp32 and bf16, B = 1, 64, 1024

Prints one row per setting: median milliseconds per call and per prompt set, and
ours / official (target: at most 1.05). Calls alternate between the two models so
that drift in the machine's speed hits both alike. No hooks are registered.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sam_explain import build_mask_decoder, build_prompt_encoder
from sam_explain.example import example_prompts
from sam_explain.testing import build_official_pair


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def bench(device: str, dtype: torch.dtype, batch: int, repeats: int, warmup: int = 3):
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
    times = {"ours": [], "official": []}
    models = {"ours": ours, "official": od}
    for i in range(warmup + repeats):
        order = ("ours", "official") if i % 2 == 0 else ("official", "ours")
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            models[name](*args)
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=0, help="timed calls per model (default: by size)")
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
        repeats = args.repeats or (30 if batch <= 16 else 10)
        t = bench(args.device, dtype, batch, repeats)
        ratio = t["ours"] / t["official"]
        print(f"{str(dtype).replace('torch.', ''):<9} {batch:>5} {t['ours'] * 1e3:>10.2f} "
              f"{t['official'] * 1e3:>12.2f} {t['ours'] * 1e3 / batch:>15.3f} {ratio:>7.3f}")


if __name__ == "__main__":
    main()
