"""Cost of one toy training step (forward and backward, both passes of SAM's recipe) at one image size,
compiled with and without inductor's pattern rewrites (``TrainConfig.pattern_matcher``), in the
same run. Steps alternate between the variants, so drift in the machine's speed hits both alike.

    python benchmarks/bench_train_step.py                     # 256 x 256, B = 3 x 8, bf16, compiled, 2 threads
    python benchmarks/bench_train_step.py --size 128 --steps 10
    python benchmarks/bench_train_step.py --no-retain-memory  # malloc as it is (train-toy keeps freed memory)

Prints per variant: the median seconds of a step, min and max, and the ratio to the first variant
(cpu-amp's step: rewrites on). Each variant compiles first (minutes on a CPU, less
with a warm inductor cache).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from sam_explain.toy.model import ToyModel
from sam_explain.toy.train import SCHEDULES, StepOps, retain_freed_memory, train_step

VARIANTS = (  # (label, pattern_matcher)
    ("rewrites on (fused attention)", True),
    ("rewrites off (explicit attention)", False),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side H0")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (compiling)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--retain-memory", action=argparse.BooleanOptionalAction, default=True,
                        help="glibc's malloc keeps freed memory, as train-toy does on CPU (process-wide, so "
                             "compare it across two runs of this script)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retained = args.retain_memory and retain_freed_memory()
    base = replace(SCHEDULES["cpu-amp"], stages=((args.size, 10_000),), compile=True)  # the switch acts on compiling
    runs = []
    for label, patterns in VARIANTS:
        cfg = replace(base, pattern_matcher=patterns)
        torch.manual_seed(0)
        model = ToyModel().train()
        model.set_image_size(args.size)
        ops = StepOps.for_model(model, compile=cfg.compile, pattern_matcher=cfg.pattern_matcher)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for step in range(args.warmup):
            train_step(model, cfg, step, gen, ops)
            model.zero_grad(set_to_none=True)
        print(f"{label}: {args.warmup} warm-up steps (compiling included) {time.perf_counter() - t0:.0f} s", flush=True)
        runs.append((label, cfg, model, ops, gen, []))
    for i in range(args.steps):  # alternate the variants
        for label, cfg, model, ops, gen, times in runs:
            t = time.perf_counter()
            train_step(model, cfg, args.warmup + i, gen, ops)
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
    print(f"\n{args.size} x {args.size}, B = {base.scenes_per_step} x {base.prompts_per_scene}, "
          f"amp={base.amp}, compile={base.compile}, {args.threads} threads, freed memory kept: {retained}, "
          f"torch {torch.__version__}")
    ref = statistics.median(runs[0][-1])
    for label, *_, times in runs:
        med = statistics.median(times)
        print(f"{label:36s} median {med:5.2f} s  (min {min(times):.2f}, max {max(times):.2f})  ratio {med / ref:.2f}")


if __name__ == "__main__":
    main()
