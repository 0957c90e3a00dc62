"""Benchmark: the decoder's forward traced by ``trace_shapes`` versus untraced, in one run.

    python benchmarks/bench_trace.py                 # CPU, B = 1 and 16
    python benchmarks/bench_trace.py --device cuda --dtype bfloat16

For each B it times, interleaved so that both see the same machine load:
  untraced   decoder(...) with no hooks
  traced     decoder(...) inside a live ``trace_shapes`` block (the hooks' cost)
  with-block ``with trace_shapes(decoder): decoder(...)`` (registering and removing the
             hooks included)
and prints the best times and the ratios traced / untraced (target: at most 1.3), with the
ratios of the medians beside them.
Random weights; the prompt encoder runs once per B, outside the timings.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sam_explain import build_mask_decoder, build_prompt_encoder, trace_shapes
from sam_explain.example import example_prompts


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def overhead(device: torch.device, dtype: torch.dtype, decoder, repeats: int) -> None:
    """The tracer's absolute cost, where the forward is nearly free: a 4 x 4 grid, B = 1.
    What a traced forward costs on top of an untraced one is about this, whatever the grid."""
    pe = build_prompt_encoder(image_embedding_size=(4, 4), input_image_size=(64, 64)).to(device, dtype)
    prompts = example_prompts(points=1, batch=1, image_size=(64, 64)).to(device)
    times = {"untraced": [], "traced": [], "with-block": []}
    with torch.no_grad():
        sparse, dense = pe(points=prompts.points, boxes=None, masks=None)
        inputs = dict(image_embeddings=torch.randn(1, 256, 4, 4, device=device, dtype=dtype),
                      image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
                      dense_prompt_embeddings=dense, multimask_output=True)
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            decoder(**inputs)
            sync(device)
            times["untraced"].append(time.perf_counter() - t0)
            with trace_shapes(decoder):
                t0 = time.perf_counter()
                decoder(**inputs)
                sync(device)
                times["traced"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with trace_shapes(decoder):
                decoder(**inputs)
            sync(device)
            times["with-block"].append(time.perf_counter() - t0)
    best = {k: min(v) * 1e3 for k, v in times.items()}
    print(f"absolute cost (4 x 4 grid, B = 1, best of {repeats}): untraced {best['untraced']:.2f} ms; "
          f"the hooks add {best['traced'] - best['untraced']:.2f} ms per forward, "
          f"registering and removing them {best['with-block'] - best['traced']:.2f} ms more")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="values of B (default 1 16)")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per mode and B")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    prompt_encoder = build_prompt_encoder().to(device, dtype)
    decoder = build_mask_decoder().to(device, dtype)
    image = torch.randn(1, 256, 64, 64, device=device, dtype=dtype)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", {args.dtype}, {torch.get_num_threads()} thread(s), {args.repeats} repeats; "
          "times are the best of the repeats (least disturbed by other load), ratios of medians in brackets")
    print(f"{'B':>3}  {'untraced ms':>12}  {'traced ms':>10}  {'with-block ms':>14}  "
          f"{'traced/untraced':>15}  {'with-block/untraced':>19}  rows")
    worst = 0.0
    for B in args.batch:
        prompts = example_prompts(points=1, batch=B).to(device)
        with torch.no_grad():
            sparse, dense = prompt_encoder(points=prompts.points, boxes=None, masks=None)
            inputs = dict(image_embeddings=image, image_pe=prompt_encoder.get_dense_pe(),
                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                          multimask_output=True)

            def untraced() -> None:
                decoder(**inputs)

            def with_block() -> None:
                with trace_shapes(decoder):
                    decoder(**inputs)

            live = trace_shapes(decoder)
            times = {"untraced": [], "traced": [], "with-block": []}
            for _ in range(2):  # warm-up
                untraced(), with_block()
            for _ in range(args.repeats):
                for name in ("untraced", "traced", "with-block"):
                    if name == "traced":
                        trace = live.__enter__()
                    sync(device)
                    t0 = time.perf_counter()
                    (with_block if name == "with-block" else untraced)()
                    sync(device)
                    times[name].append(time.perf_counter() - t0)
                    if name == "traced":
                        live.__exit__(None, None, None)
                        rows = len(trace)
                        live = trace_shapes(decoder)
        best = {k: min(v) * 1e3 for k, v in times.items()}
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        r1, r2 = best["traced"] / best["untraced"], best["with-block"] / best["untraced"]
        m1, m2 = med["traced"] / med["untraced"], med["with-block"] / med["untraced"]
        worst = max(worst, r1, r2)
        print(f"{B:>3}  {best['untraced']:>12.2f}  {best['traced']:>10.2f}  {best['with-block']:>14.2f}  "
              f"{r1:>15.3f}  {r2:>19.3f}  {rows}   (medians: {m1:.3f}, {m2:.3f})")
    print(f"largest ratio {worst:.3f} (target <= 1.3: {'met' if worst <= 1.3 else 'NOT met'})")
    overhead(device, dtype, decoder, args.repeats * 8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
