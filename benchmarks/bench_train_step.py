"""Cost of one toy training step (forward and backward, both passes of SAM's recipe) at one image size,
compiled without and with inductor's pattern rewrites (``TrainConfig.pattern_matcher``), in the same
run (``timing.compare``: interleaved pairs, geometric mean of the pair ratios).

    python benchmarks/bench_train_step.py                     # 256 x 256, B = 3 x 8, bf16, compiled, 2 threads
    python benchmarks/bench_train_step.py --size 128 --pairs 10
    python benchmarks/bench_train_step.py --no-retain-memory  # malloc as it is (train-toy keeps freed memory)

The step is the last phase of ``train-toy --schedule cpu``. Each variant compiles first (minutes on a
CPU, less with a warm inductor cache). Not in ``make bench``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from sam_explain.toy.model import ToyModel
from sam_explain.toy.schedules import SCHEDULES
from sam_explain.toy.train import StepOps, train_step
from sam_explain.utils.memory import retain_freed_memory
from timing import compare


def stepper(cfg, size: int, warmup: int):
    """A function that runs the next training step of its own model, after ``warmup`` steps (compiling)."""
    torch.manual_seed(0)
    model = ToyModel().train()
    model.set_image_size(size)
    ops = StepOps.for_model(model, compile=cfg.compile, pattern_matcher=cfg.pattern_matcher)
    gen = torch.Generator().manual_seed(0)
    step = iter(range(10**9))

    def run() -> None:
        train_step(model, cfg, next(step), gen, ops)
        model.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(warmup):
        run()
    print(f"pattern_matcher={cfg.pattern_matcher}: {warmup} warm-up steps (compiling included) "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side H0")
    parser.add_argument("--pairs", type=int, default=8, help="timed pairs (even)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (compiling)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--retain-memory", action=argparse.BooleanOptionalAction, default=True,
                        help="glibc's malloc keeps freed memory, as train-toy does on CPU (process-wide, so "
                             "compare it across two runs of this script)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retained = args.retain_memory and retain_freed_memory()
    base = replace(SCHEDULES["cpu"].configs()[-1], stages=((args.size, 10**9),))
    explicit = stepper(replace(base, pattern_matcher=False), args.size, args.warmup)
    fused = stepper(replace(base, pattern_matcher=True), args.size, args.warmup)
    c = compare(explicit, fused, pairs=args.pairs, warmup=0)
    print(f"\n{args.size} x {args.size}, B = {base.scenes_per_step} x {base.prompts_per_scene}, "
          f"amp={base.amp}, compile={base.compile}, {args.threads} threads, freed memory kept: {retained}, "
          f"torch {torch.__version__}")
    print(f"rewrites off (explicit attention) {c.a_ms / 1e3:5.2f} s, rewrites on (fused) {c.b_ms / 1e3:5.2f} s, "
          f"ratio off / on {c.ratio:.2f} ({args.pairs} pairs)")


if __name__ == "__main__":
    main()
