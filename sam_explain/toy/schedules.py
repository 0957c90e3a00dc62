"""The toy SAM's training recipes, as data: ``TrainConfig`` and the schedules ``train-toy`` offers.

  quick        the default: from scratch on a laptop's CPU in about 20 minutes, eager (no compiler
               needed); meets the best-of-three target with its default seed, not the others
  cpu          from scratch on a 2-core CPU in about 80 minutes, seven phases: every figure target
  full         from scratch on one GPU in about 4 minutes
  shipped      the seven phases that trained the weights in the package, as they were run
  tiny, tiny-phases   a few dozen steps on 32 px images, for the tests

A phased schedule trains its phases one after the other, each from the weights the one before wrote.
docs/toy_model.md has the figures each schedule measured.

The toy SAM 2's recipes (``train-toy --model sam2``) are ``Sam2TrainConfig`` and ``SAM2_SCHEDULES``, at the
end: ``gpu`` and ``cpu`` start from the shipped toy SAM's weights, ``tiny`` (the tests') from scratch
(docs/toy_sam2.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, NamedTuple, Tuple, Union

from .encoder import DILATIONS, PATCH_SIZE

MIN_IMAGE_SIZE = 32  # the smallest H0 trained on (the "tiny" schedule: an 8 x 8 grid)


@dataclass
class TrainConfig:
    stages: Tuple[Tuple[int, int], ...] = ((256, 3000),)  # (image size H0, steps): small images first
    scenes_per_step: int = 4  # S
    prompts_per_scene: int = 8  # P; B = S * P prompt sets per step
    lr: float = 6e-4
    warmup: int = 100
    weight_decay: float = 0.01
    iterative_fraction: float = 0.25  # prompt sets that also get an error-region click
    iterative_min_size: int = 0  # ... only in the stages with H0 at least this
    seed: int = 0
    encoder_dim: int = 96  # D, the toy encoder's hidden channels
    encoder_dilations: Tuple[int, ...] = DILATIONS  # its residual convs on the H x W grid
    encoder_context_size: int = 0  # 0, or h0: its context branch on the image resized to h0 x h0 (encoder.py)
    device: str = "cpu"
    decay_from_stage: int = 0  # the lr is constant after warm-up until this stage, then decays (cosine) to 5%
    compile: bool = False  # torch.compile the encoder, the decoder and the losses (needs a C++ compiler on CPU)
    compile_min_size: int = 0  # with compile: stages of smaller images run eager (compiling them costs more than it saves)
    pattern_matcher: bool = True  # with compile: inductor's graph rewrites, among them explicit attention -> fused SDPA
    amp: bool = False  # bfloat16 autocast for the forward pass (losses in float32)
    amp_min_size: int = 0  # with amp: stages of smaller images run in float32
    whole_fraction: float = 0.0  # clicks on a nested part whose target becomes the whole object
    both_fraction: float = 0.0  # of the other clicks on a nested part: trained on the part and the whole at once
    retain_memory: bool = True  # on CPU: glibc's malloc keeps freed memory (retain_freed_memory); speed only

    def __post_init__(self) -> None:
        # Every schedule, and every override of one (train-toy --stages), passes through here.
        if not self.stages:
            raise ValueError("stages: expected at least one (H0, steps) stage, got none")
        for size, steps in self.stages:
            if size < MIN_IMAGE_SIZE or size % PATCH_SIZE:
                raise ValueError(f"stages: expected each H0 a multiple of {PATCH_SIZE} (the encoder's patch) "
                                 f"and at least {MIN_IMAGE_SIZE}, got H0 = {size} in {self.stages}")
            if steps < 1:
                raise ValueError(f"stages: expected at least 1 step per stage, got {steps} at H0 = {size}")
        if not 0 <= self.decay_from_stage < len(self.stages):
            raise ValueError(f"decay_from_stage: expected a stage index in 0..{len(self.stages) - 1} "
                             f"({len(self.stages)} stages), got {self.decay_from_stage}")

    @property
    def steps(self) -> int:
        return sum(steps for _, steps in self.stages)

    def image_size_at(self, step: int) -> int:
        """H0, the image size of ``step``."""
        end = 0
        for size, steps in self.stages:
            end += steps
            if step < end:
                return size
        return self.stages[-1][0]


class Phase(NamedTuple):
    """One phase of a phased schedule: its name (for the log and the metadata), its configuration, its
    seed, and fields of its own."""

    name: str
    config: TrainConfig
    seed: int
    overrides: Tuple[Tuple[str, object], ...] = ()


@dataclass(frozen=True)
class PhasedSchedule:
    """Configurations trained one after the other: each phase starts, with a fresh optimiser, from the
    weights the phase before wrote. ``overrides`` apply to every phase."""

    phases: Tuple[Phase, ...]
    overrides: Tuple[Tuple[str, object], ...] = ()

    def configs(self, **overrides) -> Tuple[TrainConfig, ...]:
        """One TrainConfig per phase; keyword overrides replace the schedule's, which replace the phase's."""
        return tuple(replace(phase.config, seed=phase.seed,
                             **{**dict(phase.overrides), **dict(self.overrides), **overrides})
                     for phase in self.phases)


Schedule = Union[TrainConfig, PhasedSchedule]

# The phases of the CPU schedules, on 2 threads (the train-toy default is 1; pass --threads 2).
FROM_SCRATCH = TrainConfig(stages=((32, 800), (64, 120), (128, 24), (256, 6)), scenes_per_step=3,
                           prompts_per_scene=8, decay_from_stage=2)  # mostly tiny images: leaves the plateau
FINETUNE = TrainConfig(stages=((64, 700), (128, 60), (256, 12)), scenes_per_step=3, prompts_per_scene=8,
                       lr=3e-4, warmup=20, decay_from_stage=1)
HIRES = TrainConfig(stages=((128, 1400), (256, 300)), scenes_per_step=3, prompts_per_scene=8,
                    lr=3e-4, warmup=20, decay_from_stage=1, compile=True)  # most steps at 128 px, compiled
AT_256 = TrainConfig(stages=((256, 350),), scenes_per_step=3, prompts_per_scene=8,
                     lr=2e-4, warmup=10, decay_from_stage=0, compile=True)  # where the evaluation runs
NESTED = TrainConfig(stages=((256, 650),), scenes_per_step=3, prompts_per_scene=8, lr=1.5e-4, warmup=10,
                     decay_from_stage=0, compile=True, amp=True, whole_fraction=0.5)  # both readings of a part click

FIRST_FOUR = (Phase("from-scratch", FROM_SCRATCH, 0), Phase("finetune", FINETUNE, 0),
              Phase("finetune", FINETUNE, 2), Phase("finetune", FINETUNE, 3))
BOTH_READINGS = (("both_fraction", 1.0),)  # each click on a nested part trained on the part and its whole object

TINY = TrainConfig(stages=((32, 40),), scenes_per_step=2, prompts_per_scene=4, lr=1e-3, warmup=5)

SCHEDULES: Dict[str, Schedule] = {
    # A laptop, from scratch, eager: mostly 64 px, where a step is cheapest, then 128 and 256; an encoder
    # twice as wide (D = 192) with a context branch that sees every image at 64 x 64, so that the 64 px
    # steps carry over to 256 px; the iterative clicks from 128 px on.
    "quick": TrainConfig(stages=((64, 1800), (128, 560), (256, 36)), scenes_per_step=3, prompts_per_scene=8,
                         lr=6e-4, warmup=100, seed=13, encoder_dim=192, encoder_dilations=(1, 2),
                         encoder_context_size=64, iterative_min_size=128, decay_from_stage=1, amp=True,
                         whole_fraction=0.35,
                         compile_min_size=128, pattern_matcher=False),  # with --compile: 128 and 256 px, rewrites off
    # A 2-core CPU, from scratch: the shipped weights' first six phases and a second 256 px one, float32
    # below 128 px and bfloat16 above, explicit attention when compiled, and both readings of a click on
    # a nested part trained at once in the last three phases.
    "cpu": PhasedSchedule(
        phases=(*FIRST_FOUR, Phase("hires", HIRES, 5, BOTH_READINGS), Phase("256", AT_256, 6, BOTH_READINGS),
                Phase("256", AT_256, 7, BOTH_READINGS)),
        overrides=(("amp", True), ("amp_min_size", 128), ("pattern_matcher", False))),
    # One GPU, from scratch: 256 x 256 only (a GPU step costs about the same at every size, being bound
    # by kernel launches), B = 128, compiled, bfloat16.
    "full": TrainConfig(stages=((256, 2300),), scenes_per_step=16, prompts_per_scene=8, lr=8e-4, warmup=100,
                        seed=11, decay_from_stage=0, compile=True, amp=True, whole_fraction=0.35),
    # The seven phases that trained the shipped weights, each as it was run (float32 but the last).
    "shipped": PhasedSchedule(phases=(*FIRST_FOUR, Phase("hires", HIRES, 5), Phase("256", AT_256, 6),
                                      Phase("nested", NESTED, 9))),
    # For the tests: tiny images (32 x 32, an 8 x 8 grid), a few dozen steps; and two such phases.
    "tiny": TINY,
    "tiny-phases": PhasedSchedule(phases=(Phase("tiny", TINY, 0), Phase("tiny", TINY, 1))),
}
DEFAULT_SCHEDULE = "quick"


# --- the toy SAM 2 (train-toy --model sam2; sam2_train.py) ----------------------------------------------


@dataclass
class Sam2TrainConfig(TrainConfig):
    """A toy SAM 2 recipe: TrainConfig's fields, and how the P prompt sets of each scene are split. Of the
    P, ``background_per_scene`` are one click where no object is (the object score's negative case: the
    mask and IoU losses do not apply, as in SAM 2), ``boxes_per_scene`` a noisy box (given as two points
    labelled 2 and 3, as SAM 2's image predictor does), the rest one click on an object."""

    background_per_scene: int = 1
    boxes_per_scene: int = 3
    hr_dims: Tuple[int, int] = (32, 64)  # D0, D1: the encoder's stride-4 and stride-8 branches (sam2_encoder.py)
    from_toy_sam: bool = True  # without --init: start from the shipped toy SAM's weights (else from scratch)

    def __post_init__(self) -> None:
        super().__post_init__()
        P, bg, boxes = self.prompts_per_scene, self.background_per_scene, self.boxes_per_scene
        if bg < 0 or boxes < 0 or bg + boxes >= P:
            raise ValueError(f"prompts_per_scene: expected room for at least one object click besides "
                             f"background_per_scene and boxes_per_scene (each >= 0), got P = {P}, "
                             f"{bg} background click(s), {boxes} box(es)")


SAM2_SCHEDULES: Dict[str, Sam2TrainConfig] = {
    # One GPU (an H200), from the toy SAM's weights: 256 px only, B = 16 scenes x 8 prompt sets (1 background
    # click, 3 boxes, 4 object clicks), compiled, bfloat16, the part clicks read as the whole object a third
    # of the time, as the toy SAM's `full`. Four decoder shapes compile (clicks, boxes, and both with an
    # iterative click).
    "gpu": Sam2TrainConfig(stages=((256, 1200),), scenes_per_step=16, prompts_per_scene=8, lr=3e-4, warmup=50,
                           seed=21, decay_from_stage=0, compile=True, amp=True, whole_fraction=0.35),
    # A 2-core CPU, from the toy SAM's weights, eager, float32, 256 px only (the figures are measured there,
    # and 128 px steps lowered them at 256 px in a trial), about 45 to 60 minutes (docs/toy_sam2.md).
    "cpu": Sam2TrainConfig(stages=((256, 180),), scenes_per_step=3, prompts_per_scene=8, lr=3e-4, warmup=10,
                           seed=22, decay_from_stage=0, whole_fraction=0.35),
    # For the tests: 32 px images, a few dozen steps, from scratch (the toy SAM's weights, trained at 256 px,
    # gain little in 40 steps at 32 px: the losses would only show noise).
    "tiny": Sam2TrainConfig(stages=((32, 40),), scenes_per_step=2, prompts_per_scene=4, lr=1e-3, warmup=5,
                            background_per_scene=1, boxes_per_scene=1, from_toy_sam=False),
}
DEFAULT_SAM2_SCHEDULE = "cpu"
