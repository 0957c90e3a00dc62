"""Cost of recording the attention maps: the decoder inside ``record_attention`` against the same
decoder without hooks, same weights, same run (``timing.compare``: interleaved pairs, geometric mean).

    python benchmarks/bench_attention.py                  # CPU, B = 1 and 8
    python benchmarks/bench_attention.py --device cuda --batch 1 64

Prints per setting: ms of a plain call and of a recorded call, their ratio, and the bytes the
record held against the estimate made before the forward.
"""

from __future__ import annotations

import argparse

import torch

from sam_explain import build_mask_decoder, build_prompt_encoder, record_attention
from sam_explain.attention.capture import format_bytes
from sam_explain.modeling.build import randomize_
from sam_explain.prompts import example_prompts
from timing import compare


@torch.no_grad()
def bench(device: str, batch: int, options: dict, pairs: int):
    torch.manual_seed(0)
    decoder = randomize_(build_mask_decoder()).to(device)
    pe = randomize_(build_prompt_encoder(), 1).to(device)
    prompts = example_prompts(points=2, batch=batch).to(device)
    sparse, dense = pe(prompts.points, None, None)
    args = (torch.randn(1, 256, 64, 64, device=device), pe.get_dense_pe(), sparse, dense, True)
    held = {}

    def recorded() -> None:
        with record_attention(decoder, **options) as attn:
            decoder(*args)
        held.update(held=attn.nbytes, estimated=attn.estimated_bytes)

    c = compare(recorded, lambda: decoder(*args), pairs=pairs, device=device)
    return c, held["held"], held["estimated"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--pairs", type=int, default=8, help="timed pairs per setting (even)")
    args = parser.parse_args()
    settings = {
        "all heads, kept": {},
        "all heads, to cpu": {"device": "cpu"},
        "head mean": {"average_heads": True},
    }
    print(f"{'setting':<20} {'B':>4} {'plain ms':>9} {'recorded ms':>12} {'ratio':>6} {'held':>10} {'estimate':>10}")
    for batch in args.batch:
        for label, options in settings.items():
            c, held, estimated = bench(args.device, batch, options, args.pairs)
            print(f"{label:<20} {batch:>4} {c.b_ms:>9.1f} {c.a_ms:>12.1f} "
                  f"{c.ratio:>6.2f} {format_bytes(held):>10} {format_bytes(estimated):>10}")


if __name__ == "__main__":
    main()
