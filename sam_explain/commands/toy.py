"""``sam-explain train-toy`` and ``sam-explain eval-toy``: train the toy SAM, and measure it; with
``--model sam2``, the toy SAM 2 (SAM 2.1's decoder side on the same scenes, docs/toy_sam2.md)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from .args import CommandError, device_arg, nonnegative_int, positive_int, writable_path


def schedule_help() -> str:
    """A sentence per schedule of ``toy.schedules``, for ``train-toy --help``."""
    return ("quick (the default): from scratch on a laptop's CPU, about 20 minutes with --threads 2, eager (no C++ "
            "compiler needed); best of three 0.77 with its default seed, 0.70 with others. "
            "cpu: from scratch on a 2-core CPU, seven phases, about 80 minutes with --threads 2, compiled: every "
            "figure target. "
            "full: from scratch on one GPU (--device cuda), about 4 minutes. "
            "shipped: the seven phases that trained the weights in the package, as they were run. "
            "tiny, tiny-phases: a few dozen steps, for the tests. "
            "Each schedule's figures: docs/toy_model.md. "
            "With --model sam2 (the toy SAM 2, from the toy SAM's weights): gpu, one GPU (--device cuda), "
            "compiled, bfloat16; cpu (the default there), a 2-core CPU with --threads 2, about an hour; "
            "tiny, for the tests (docs/toy_sam2.md)")


MODELS = ("sam", "sam2")  # --model: the toy SAM, or the toy SAM 2
DEFAULT_OUT = {"sam": "toy_sam.safetensors", "sam2": "toy_sam2.safetensors"}


def register(sub: argparse._SubParsersAction) -> None:
    from ..toy.schedules import SAM2_SCHEDULES, SCHEDULES

    p = sub.add_parser("train-toy", help="train the toy SAM (or, with --model sam2, the toy SAM 2) on synthetic "
                                         "scenes and write its weights")
    p.add_argument("--model", default="sam", choices=MODELS,
                   help="sam (the default): the toy SAM; sam2: the toy SAM 2, SAM 2.1's decoder side, trained from "
                        "the toy SAM's weights")
    p.add_argument("--schedule", default=None, choices=[*SCHEDULES, *(n for n in SAM2_SCHEDULES if n not in SCHEDULES)],
                   help=schedule_help())
    p.add_argument("--stages", type=parse_stages, default=None, metavar="H0:STEPS,...",
                   help="replace the schedule's stages (image size H0 in px, steps), smallest images first, "
                        "e.g. 64:1200,128:2000,256:1200; everything else stays the schedule's")
    p.add_argument("--out", default=None,
                   help="the weights to write (safetensors; default toy_sam.safetensors, or toy_sam2.safetensors "
                        "with --model sam2); a phased schedule also keeps each phase's, "
                        "OUT.phase1.safetensors and on, and run again it goes on from where it stopped")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=None, help="default: the schedule's seed")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (1 is fastest on a shared 2-core machine: small ops drown in thread sync)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the step (default: the schedule's choice; about 1.4x faster per step on CPU "
                        "at 128 and 256 px, after about 2 minutes of compiling per image size)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast for the forward pass (default: the schedule's choice; fast on CPUs "
                        "with AVX-512 BF16 or AMX, slow on others)")
    p.add_argument("--pattern-matcher", action=argparse.BooleanOptionalAction, default=None,
                   help="with --compile: inductor's pattern rewrites (default: on). --no-pattern-matcher keeps the "
                        "decoder's attention explicit instead of the fused kernel: a 256 px CPU step in bfloat16 "
                        "took 3.4 s instead of 4.7 s (benchmarks/bench_train_step.py)")
    p.add_argument("--retain-memory", action=argparse.BooleanOptionalAction, default=None,
                   help="on CPU with glibc: malloc keeps freed memory instead of returning it to the kernel, which "
                        "spares a page fault per 4 KiB page each step (default: on; a 256 px step took 2.4 s "
                        "instead of 3.7 s, benchmarks/bench_train_step.py). --no-retain-memory leaves malloc as it is")
    p.add_argument("--checkpoint-every", type=nonnegative_int, default=25,
                   help="write the weights every this many steps (0: only at the end)")
    p.add_argument("--resume", help="a .state.pt written next to --out by an earlier run")
    p.add_argument("--init", help="start from these weights (safetensors) instead of from scratch (--model sam2: "
                                  "a toy SAM's or a toy SAM 2's; default there: the toy SAM's in the package)")
    p.add_argument("--log", help="append progress lines to this file")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval-toy", help="measure the toy SAM (or, with --model sam2, the toy SAM 2) on held-out scenes")
    e.add_argument("--model", default="sam", choices=MODELS,
                   help="sam (the default): the toy SAM; sam2: the toy SAM 2, with SAM 2's figures (the object "
                        "score against background clicks, the stability switch, the skips)")
    e.add_argument("--weights", help="safetensors weights (default: the ones shipped in the package)")
    e.add_argument("--scenes", type=positive_int, default=100,
                   help="held-out scenes (every valid target is prompted once)")
    e.add_argument("--device", type=device_arg, default="cpu")
    e.add_argument("--threads", type=positive_int, default=1)
    e.add_argument("--json", help="also write the figures to this JSON file")
    e.add_argument("--stamp", action="store_true",
                   help="write the figures into the weights file's metadata (key 'figures')")
    e.set_defaults(func=run_eval)


OVERRIDES = ("stages", "seed", "compile", "amp", "pattern_matcher", "retain_memory")  # TrainConfig fields
PER_PHASE = ("stages", "seed", "resume", "init")  # what each phase of a phased schedule sets for itself


def parse_stages(text: str) -> tuple:
    """'64:1200,128:2000' -> ((64, 1200), (128, 2000)): the --stages argument."""
    stages = []
    for part in text.split(","):
        size, sep, steps = part.strip().partition(":")
        if not (sep and size.isdigit() and steps.isdigit()):
            raise argparse.ArgumentTypeError(
                f"expected H0:STEPS pairs separated by commas (e.g. 64:1200,256:800), got {part.strip()!r} in {text!r}")
        stages.append((int(size), int(steps)))
    return tuple(stages)


def resolve_schedule(args: argparse.Namespace) -> str:
    """The schedule of ``--schedule`` for ``--model`` (its default where none is given, and the out path's
    default); a schedule of the other model is refused, naming the model's own."""
    from ..toy.schedules import DEFAULT_SAM2_SCHEDULE, DEFAULT_SCHEDULE, SAM2_SCHEDULES, SCHEDULES

    own, default = (SAM2_SCHEDULES, DEFAULT_SAM2_SCHEDULE) if args.model == "sam2" else (SCHEDULES, DEFAULT_SCHEDULE)
    if args.out is None:
        args.out = DEFAULT_OUT[args.model]
    if args.schedule is None:
        return default
    if args.schedule not in own:
        other = "sam" if args.model == "sam2" else "sam2"
        raise CommandError(f"--schedule {args.schedule} is a schedule of --model {other}; the schedules of --model "
                           f"{args.model} are {', '.join(own)}")
    return args.schedule


def line_logger(path: Optional[str]) -> Optional[Callable[[str], None]]:
    """--log: a function appending a line to ``path`` (None without --log)."""
    if not path:
        return None

    def log(line: str) -> None:
        with open(path, "a") as f:
            f.write(line + "\n")
    return log


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ..toy.schedules import SCHEDULES, PhasedSchedule
    from ..toy.train import train, train_phases

    args.schedule = resolve_schedule(args)
    if args.model == "sam2":
        return run_train_sam2(args)
    # Each override given on the command line replaces that field of the schedule; TrainConfig checks
    # the result (the --stages against the schedule's decay_from_stage, for one).
    writable_path(args.out, "--out")
    if not isinstance(SCHEDULES[args.schedule], PhasedSchedule):  # (a phased schedule refuses them below)
        for name in ("init", "resume"):
            if getattr(args, name) is not None and not Path(getattr(args, name)).is_file():
                raise CommandError(f"--{name} {getattr(args, name)}: no such file")
    if args.log is not None:
        writable_path(args.log, "--log")
    args.device = str(args.device)
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    log = line_logger(args.log)
    schedule = SCHEDULES[args.schedule]
    if isinstance(schedule, PhasedSchedule):
        given = [f"--{name}" for name in PER_PHASE if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{args.schedule} is a phased schedule (its phases set their own stages and seeds, and "
                             f"each starts from the weights of the one before): expected none of "
                             f"{', '.join('--' + name for name in PER_PHASE)}, got {', '.join(given)}")
        overrides["device"] = args.device
        configs = schedule.configs(**overrides)  # checked before anything runs
        torch.set_num_threads(args.threads)
        print(f"train-toy: schedule {args.schedule}, {len(configs)} phases, {sum(c.steps for c in configs)} steps, "
              f"device {args.device}")
        train_phases(args.schedule, Path(args.out), overrides=overrides, checkpoint_every=args.checkpoint_every, log=log)
        print(f"wrote {args.out}")
        return 0
    cfg = replace(schedule, device=args.device, **overrides)
    torch.set_num_threads(args.threads)  # only once the configuration is known to be valid
    print(f"train-toy: schedule {args.schedule}, {cfg.steps} steps, stages (H0, steps) {cfg.stages}, "
          f"B = {cfg.scenes_per_step} scenes x {cfg.prompts_per_scene} prompt sets, device {cfg.device}")
    train(cfg, out=Path(args.out), checkpoint_every=args.checkpoint_every,
          resume=Path(args.resume) if args.resume else None, log=log, schedule_name=args.schedule,
          init=Path(args.init) if args.init else None)
    print(f"wrote {args.out}")
    return 0


def run_train_sam2(args: argparse.Namespace) -> int:
    """train-toy --model sam2: one configuration of ``SAM2_SCHEDULES`` with the command line's overrides."""
    import torch

    from ..toy.sam2_train import train_sam2
    from ..toy.schedules import SAM2_SCHEDULES

    writable_path(args.out, "--out")
    for name in ("init", "resume"):
        if getattr(args, name) is not None and not Path(getattr(args, name)).is_file():
            raise CommandError(f"--{name} {getattr(args, name)}: no such file")
    if args.log is not None:
        writable_path(args.log, "--log")
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    cfg = replace(SAM2_SCHEDULES[args.schedule], device=str(args.device), **overrides)  # checked here
    if cfg.from_toy_sam and args.init is None and args.resume is None:
        from ..toy.model import default_weights_path

        if not default_weights_path().is_file():
            raise CommandError(f"--model sam2 starts from the toy SAM's weights, expected at {default_weights_path()}; "
                               f"no such file (give --init PATH)")
    log = line_logger(args.log)
    torch.set_num_threads(args.threads)  # only once the configuration is known to be valid
    print(f"train-toy: toy SAM 2, schedule {args.schedule}, {cfg.steps} steps, stages (H0, steps) {cfg.stages}, "
          f"B = {cfg.scenes_per_step} scenes x {cfg.prompts_per_scene} prompt sets ({cfg.background_per_scene} on the "
          f"background, {cfg.boxes_per_scene} boxes), compile {cfg.compile}, amp {cfg.amp}, device {cfg.device}")
    train_sam2(cfg, out=Path(args.out), init=Path(args.init) if args.init else None, log=log,
               checkpoint_every=args.checkpoint_every, resume=Path(args.resume) if args.resume else None,
               schedule_name=args.schedule)
    print(f"wrote {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import json

    import torch

    from ..toy.evaluate import evaluate, format_report
    from ..toy.model import toy_model

    if args.json is not None:
        writable_path(args.json, "--json")
    if args.weights is not None and not Path(args.weights).is_file():
        raise CommandError(f"--weights {args.weights}: no such file")
    torch.set_num_threads(args.threads)
    if args.model == "sam2":
        from ..toy.sam2_evaluate import evaluate_sam2, format_sam2_report
        from ..toy.sam2_model import toy_sam2_model

        figures = evaluate_sam2(toy_sam2_model(args.weights, device=args.device), num_scenes=args.scenes)
        print(format_sam2_report(figures))
    else:
        model = toy_model(args.weights, device=args.device)
        figures = evaluate(model, num_scenes=args.scenes)
        print(format_report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.stamp:
        from safetensors import safe_open
        from safetensors.torch import save_file

        from ..toy.model import default_weights_path
        from ..toy.sam2_model import default_sam2_weights_path

        path = str(args.weights or (default_sam2_weights_path() if args.model == "sam2" else default_weights_path()))
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta["figures"] = json.dumps(figures)
        save_file(tensors, path, metadata=meta)
        print(f"wrote the figures into the metadata of {path}")
    return 0
