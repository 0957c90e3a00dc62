"""Benchmark: the decoder's forward traced by ``trace_shapes`` against the same forward untraced.

    python benchmarks/bench_trace.py                 # CPU, B = 1 and 16
    python benchmarks/bench_trace.py --device cuda --dtype bfloat16

For each B: ``with trace_shapes(decoder): decoder(...)`` (registering and removing the hooks included)
against ``decoder(...)`` with no hooks, interleaved pairs, geometric mean of the pair ratios
(``timing.compare``; target: at most 1.3). Then the tracer's absolute cost where the forward is
nearly free (a 4 x 4 grid, B = 1). Random weights; the prompt encoder runs outside the timings.
"""

from __future__ import annotations

import argparse

import torch

from sam_explain import build_mask_decoder, build_prompt_encoder, trace_shapes
from sam_explain.prompts import example_prompts
from timing import compare


def decoder_inputs(prompt_encoder, image: torch.Tensor, batch: int, image_size=(1024, 1024)) -> dict:
    prompts = example_prompts(points=1, batch=batch, image_size=image_size).to(image.device)
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=prompts.points, boxes=None, masks=None)
    return dict(image_embeddings=image, image_pe=prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, multimask_output=True)


@torch.no_grad()
def traced_against_untraced(decoder, inputs: dict, pairs: int, device):
    def traced() -> None:
        with trace_shapes(decoder) as trace:
            decoder(**inputs)
        rows.append(len(trace))

    rows: list = []
    return compare(traced, lambda: decoder(**inputs), pairs=pairs, device=device), rows[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="values of B (default 1 16)")
    p.add_argument("--pairs", type=int, default=6, help="timed pairs per B (even)")
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
          + f", {args.dtype}, {torch.get_num_threads()} thread(s), {args.pairs} pairs per B")
    print(f"{'B':>3}  {'untraced ms':>12}  {'traced ms':>10}  {'traced/untraced':>15}  rows")
    worst = 0.0
    for B in args.batch:
        c, rows = traced_against_untraced(decoder, decoder_inputs(prompt_encoder, image, B), args.pairs, device)
        worst = max(worst, c.ratio)
        print(f"{B:>3}  {c.b_ms:>12.2f}  {c.a_ms:>10.2f}  {c.ratio:>15.3f}  {rows}")
    print(f"largest ratio {worst:.3f} (target <= 1.3: {'met' if worst <= 1.3 else 'NOT met'})")
    small_pe = build_prompt_encoder(image_embedding_size=(4, 4), input_image_size=(64, 64)).to(device, dtype)
    small = torch.randn(1, 256, 4, 4, device=device, dtype=dtype)
    c, _ = traced_against_untraced(decoder, decoder_inputs(small_pe, small, 1, (64, 64)), args.pairs * 8, device)
    print(f"absolute cost (4 x 4 grid, B = 1): untraced {c.b_ms:.2f} ms; tracing adds {c.a_ms - c.b_ms:.2f} ms "
          f"per forward (the hooks and their registration)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
