"""Train the toy SAM with SAM's recipe on synthetic scenes.

One step:
  1. draw S scenes on the training device (``generate_scenes``), embed them once: S x C x H x W;
  2. sample P prompt sets per scene (B = S * P, SAM's "B prompt sets per image" contract):
     a target mask (a whole object or a nested part), then either one click uniformly inside it
     or its bounding box with noise (std 10% of the side, at most 5 px = SAM's 20 px at 1024);
     a click on a nested part may take the whole object as its target (``whole_fraction``), so
     that both readings of such a click are trained;
  3. decode all B; the loss of each mask is 20 * focal + dice. A single click is ambiguous, so
     it takes the minimum loss over the three multimask outputs (plus the single-output mask,
     token 0, so that multimask_output=False also answers a click, with the clicked shape itself:
     not on the whole-object reading); a box trains token 0. With ``both_fraction``, a click on a
     nested part may instead take the least sum of two losses on two different multimask
     outputs, one against the part and one against its whole object (``best_pair_loss``);
  4. iterative clicks: for a fraction of the prompt sets, a second pass adds one click drawn
     uniformly from the error region of the first prediction (foreground where the mask missed,
     background where it spilled) and the first prediction's logits as the mask prompt; with
     several prompts the answer is token 0;
  5. every pass adds the mean-squared error between the predicted IoU of each of the M masks
     and its actual IoU with the target.
AdamW, linear warm-up then cosine decay, gradient clipping at 1. Optionally (``amp``) the forward
pass runs under bfloat16 autocast, with the losses in float32.

The recipes are in ``schedules``, the prompts in ``sampling``, the losses in ``losses``; ``train``
runs one configuration, ``train_phases`` a phased schedule.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.nn import functional as F

from ..utils.memory import retain_freed_memory
from .encoder import DILATIONS
from .losses import FOCAL_WEIGHT, best_pair_loss, dice_loss, focal_loss, mask_ious
from .model import ToyModel, ToyParts, save_toy_weights, toy_model
from .sampling import sample_in_masks, sample_prompts
from .scenes import SceneBatch, generate_scenes
from .schedules import SCHEDULES, PhasedSchedule, TrainConfig

TRAIN_SEED_STRIDE = 1_000_003  # scene seed of step t: seed * stride + t (evaluation uses its own stream)


@dataclass
class StepOps:
    """The heavy functions of a training step: eager by default, or compiled (``TrainConfig.compile``).
    Compiling fuses the elementwise work at 4H x 4W (LayerNorm2d, GELU, the losses), which dominates
    a CPU step at 256 x 256; each image size compiles once (about 2 minutes on a 2-core CPU)."""

    encode: Callable  # S x 3 x H0 x W0 -> S x C x H x W
    predict_masks: Callable  # the decoder's predict_masks: B x M x 4H x 4W, B x M
    focal_loss: Callable
    dice_loss: Callable

    @classmethod
    def for_model(cls, model: ToyModel, compile: bool = False, pattern_matcher: bool = True) -> "StepOps":
        """``pattern_matcher=False`` compiles without inductor's pattern rewrites. One of them turns the
        decoder's explicit softmax attention into the fused SDPA kernel, which on CPU in bfloat16 is 2 to
        3 times slower than the explicit form for these shapes (4096 queries x 7 keys and back)."""
        return cls.of(model.image_encoder, model.mask_decoder.predict_masks, compile, pattern_matcher)

    @classmethod
    def of(cls, encode: Callable, predict_masks: Callable, compile: bool = False,
           pattern_matcher: bool = True) -> "StepOps":
        """The ops of a model whose images go through ``encode`` and whose decoder pass is ``predict_masks``
        (the toy SAM 2's: ``sam2_train``), with SAM's losses; compiled as ``for_model`` says."""
        ops = cls(encode, predict_masks, focal_loss, dice_loss)
        if compile:
            options = None if pattern_matcher else {"pattern_matcher": False}
            ops = cls(*(torch.compile(f, dynamic=False, options=options) for f in (
                ops.encode, ops.predict_masks, ops.focal_loss, ops.dice_loss)))
        return ops

    def mask_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """SAM's loss of each mask, 20 x focal + dice: B x K x L logits, B x 1 x L {0, 1} -> B x K."""
        return FOCAL_WEIGHT * self.focal_loss(logits, target) + self.dice_loss(logits, target)


def decode_embedded(model: ToyModel, emb, sparse, dense, ops: StepOps):
    """All M masks of the decoder for embedded prompts: B x M x 4H x 4W, B x M."""
    return ops.predict_masks(
        image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
    )


def train_step(model: ToyModel, cfg: TrainConfig, step: int, gen: torch.Generator,
               ops: Optional[StepOps] = None, loss_fn: Optional[Callable] = None) -> Dict[str, float]:
    """Forward and backward of one step (the optimiser is the caller's). Returns the losses.
    With ``cfg.amp`` the forward runs under bfloat16 autocast (from H0 = ``cfg.amp_min_size`` on); the
    backward runs outside it. ``loss_fn`` (default ``step_loss``, the toy SAM's) takes (model, cfg, step,
    gen, ops) and returns the loss and its parts."""
    amp = cfg.amp and cfg.image_size_at(step) >= cfg.amp_min_size
    with torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=amp):
        loss, stats = (loss_fn or step_loss)(model, cfg, step, gen, ops or StepOps.for_model(model))
    loss.backward()
    stats["loss"] = loss.item()
    return stats


def correction_clicks(prev: torch.Tensor, target: torch.Tensor, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAM's iterative click: one pixel drawn uniformly from the error region of each prediction (n x 4H x 4W
    logits) against its target (n x H0 x W0 bool, H0 = 4H), or from the target where there is no error.
    Returns the clicks n x 2 (x, y) and their labels n (1 where the target is, else 0)."""
    error = (prev > 0) ^ target  # n x H0 x W0
    error = torch.where(error.flatten(1).any(1)[:, None, None], error, target)
    click = sample_in_masks(error, gen)  # n x 2
    xi, yi = click[:, 0].long(), click[:, 1].long()
    label = target[torch.arange(target.shape[0], device=target.device), yi, xi].long()  # 1 foreground, 0 background
    return click, label


def step_scenes(model: ToyParts, cfg: TrainConfig, step: int) -> SceneBatch:
    """The scenes of training step ``step`` (seed ``cfg.seed * TRAIN_SEED_STRIDE + step``), at the image size
    the schedule has then; the model is set to that size first."""
    image_size = cfg.image_size_at(step)
    if model.image_size != image_size:
        model.set_image_size(image_size)
    return generate_scenes(cfg.scenes_per_step, seed=cfg.seed * TRAIN_SEED_STRIDE + step,
                           device=torch.device(cfg.device), image_size=image_size)


def step_loss(model: ToyModel, cfg: TrainConfig, step: int, gen: torch.Generator,
              ops: StepOps) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The loss of one step (steps 1 to 5 of the module docstring) and its parts, for the log."""
    scenes = step_scenes(model, cfg, step)
    device, image_size = torch.device(cfg.device), model.image_size
    prompts = sample_prompts(scenes, cfg.prompts_per_scene, gen, whole_fraction=cfg.whole_fraction,
                             both_fraction=cfg.both_fraction)
    B = prompts.target.shape[0]
    target = prompts.target.flatten(1)[:, None]  # B x 1 x L (L = H0 W0 = 4H 4W)
    target_f = target.float()
    whole = prompts.whole.flatten(1)[:, None]  # B x 1 x L, the whole object of each target

    emb = ops.encode(scenes.images)  # S x C x H x W
    emb = emb[prompts.scene]  # B x C x H x W, paired with the prompt sets

    # Pass 1: one click (padded to N' = 2) or one box (N' = 2), on the same B prompt sets.
    ones = torch.ones(B, 1, dtype=torch.int64, device=device)
    sp_point, dense = model.prompt_encoder(points=(prompts.point, ones), boxes=None, masks=None)  # B x 2 x C
    sp_box, _ = model.prompt_encoder(points=None, boxes=prompts.box, masks=None)  # B x 2 x C
    sparse = torch.where(prompts.is_point[:, None, None], sp_point, sp_box)  # B x 2 x C
    masks, iou_pred = decode_embedded(model, emb, sparse, dense, ops)  # B x M x 4H x 4W, B x M
    masks, iou_pred = masks.float(), iou_pred.float()  # the losses in float32, also under autocast
    logits = masks.flatten(2)  # B x M x L
    per_mask = ops.mask_losses(logits, target_f)  # B x M
    best_multi, best_idx = per_mask[:, 1:].min(dim=1)  # B
    if cfg.both_fraction > 0:  # both readings of a part click: the part on one output, the whole on another
        per_whole = ops.mask_losses(logits[:, 1:], whole.float())  # B x 3
        best_multi = torch.where(prompts.both_readings, best_pair_loss(per_mask[:, 1:], per_whole), best_multi)  # B
    # token 0 answers a click with the clicked shape itself: not trained on the whole-object reading
    single_loss = torch.where(prompts.whole_for_part, 0.0, per_mask[:, 0])  # B
    mask_loss = torch.where(prompts.is_point, best_multi + single_loss, per_mask[:, 0])  # B
    with torch.no_grad():
        actual = mask_ious(logits, target)  # B x M
        if cfg.both_fraction > 0:  # a multimask output of a two-reading click scores against the nearer reading
            nearer = torch.maximum(actual[:, 1:], mask_ious(logits[:, 1:], whole))
            actual[:, 1:] = torch.where(prompts.both_readings[:, None], nearer, actual[:, 1:])  # B x M
    iou_loss = F.mse_loss(iou_pred, actual)
    loss = mask_loss.mean() + iou_loss
    stats = {"mask": mask_loss.mean().item(), "iou_mse": iou_loss.item(),
             "iou_click_best3": actual[prompts.is_point, 1:].max(1).values.mean().item() if prompts.is_point.any() else float("nan"),
             "iou_box": actual[~prompts.is_point, 0].mean().item() if (~prompts.is_point).any() else float("nan")}

    # Pass 2: an extra click in the error region, and the chosen mask as the mask prompt.
    n2 = int(round(cfg.iterative_fraction * B)) if image_size >= cfg.iterative_min_size else 0
    if n2 > 0:
        sel = torch.arange(n2, device=device) * B // n2  # spread over the scenes
        chosen = torch.where(prompts.is_point[sel], best_idx[sel] + 1, torch.zeros_like(sel))  # n2
        prev = masks[sel, chosen].detach()  # n2 x 4H x 4W
        tgt2 = prompts.target[sel]  # n2 x H0 x W0
        click, label = correction_clicks(prev, tgt2, gen)  # n2 x 2, n2
        mask_prompt = prev[:, None]  # n2 x 1 x 4H x 4W
        pts_a = (torch.cat([prompts.point[sel], click[:, None]], 1),
                 torch.cat([torch.ones_like(label)[:, None], label[:, None]], 1))  # n2 x 2 x 2, n2 x 2
        sp_a, dense2 = model.prompt_encoder(points=pts_a, boxes=None, masks=mask_prompt)  # n2 x 3 x C
        sp_b, _ = model.prompt_encoder(points=(click[:, None], label[:, None]), boxes=prompts.box[sel], masks=None)
        sparse2 = torch.where(prompts.is_point[sel][:, None, None], sp_a, sp_b)  # n2 x 3 x C
        masks2, iou2 = decode_embedded(model, emb[sel], sparse2, dense2, ops)
        masks2, iou2 = masks2.float(), iou2.float()
        logits2 = masks2.flatten(2)
        t2 = tgt2.flatten(1)[:, None]
        loss2 = ops.mask_losses(logits2[:, :1], t2.float())
        with torch.no_grad():
            actual2 = mask_ious(logits2, t2)
        iou_loss2 = F.mse_loss(iou2, actual2)
        loss = loss + (n2 / B) * (loss2.mean() + iou_loss2)
        stats["mask_iter"] = loss2.mean().item()
        stats["iou_iter"] = actual2[:, 0].mean().item()
    return loss, stats


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, constant until stage ``decay_from_stage``, then cosine decay to 5% at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    decay_start = max(cfg.warmup, sum(n for _, n in cfg.stages[: cfg.decay_from_stage]))
    if step < decay_start:
        return cfg.lr
    progress = (step - decay_start) / max(1, cfg.steps - decay_start)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def encoder_config(cfg: TrainConfig) -> Dict[str, object]:
    """The ToyImageEncoder arguments of a schedule (the ones older weights lack are left out at their default)."""
    config: Dict[str, object] = {"dim": cfg.encoder_dim}
    if tuple(cfg.encoder_dilations) != DILATIONS:
        config["dilations"] = tuple(cfg.encoder_dilations)
    if cfg.encoder_context_size:
        config["context_size"] = cfg.encoder_context_size
    return config


def git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def init_metadata(init: Path, start_model: torch.nn.Module) -> Dict[str, str]:
    """What a model trained from the weights ``init`` records of them (their model's ``metadata``)."""
    return {"init": str(init), "init_schedule": start_model.metadata.get("schedule", ""),
            "init_config": start_model.metadata.get("config", ""),
            "init_train_seconds": start_model.metadata.get("train_seconds", "")}


def load_toy_init(model: torch.nn.Module, init: Path) -> Dict[str, str]:
    """Start the toy SAM ``model`` from the weights file ``init``; returns ``init_metadata``."""
    start_model = toy_model(init)
    model.load_state_dict(start_model.state_dict())
    return init_metadata(init, start_model)


@dataclass(frozen=True)
class Recipe:
    """What ``train`` needs of the model it trains; the rest (optimiser, learning rate, the loop, the
    checkpoints, resuming) is the same for every model. ``TOY_SAM`` is the toy SAM's; the toy SAM 2's
    is ``sam2_train.TOY_SAM2``.

      build(cfg)                        a fresh model for the configuration (train mode, on the CPU)
      load_init(model, path)            start from a weights file; returns what the metadata records of it
      default_init(cfg)                 the weights to start from when no ``init`` is given (or None)
      ops(model, compile, pm)           the step's heavy functions (``StepOps``), eager or compiled
      loss(model, cfg, step, gen, ops)  the loss of one step and its parts (``train_step``'s loss_fn)
      save(model, path, metadata)       write the weights (safetensors)
    """

    build: Callable[[TrainConfig], torch.nn.Module]
    load_init: Callable[[torch.nn.Module, Path], Dict[str, str]]
    ops: Callable[[torch.nn.Module, bool, bool], StepOps]
    loss: Callable
    save: Callable[[torch.nn.Module, Path, Dict[str, object]], None]
    default_init: Callable[[TrainConfig], Optional[Path]] = lambda cfg: None


TOY_SAM = Recipe(
    build=lambda cfg: ToyModel(encoder_config=encoder_config(cfg)),
    load_init=load_toy_init,
    ops=lambda model, compile, pattern_matcher: StepOps.for_model(model, compile=compile,
                                                                  pattern_matcher=pattern_matcher),
    loss=lambda *args: step_loss(*args),  # looked up at call time
    save=lambda model, path, metadata: save_toy_weights(model, path, metadata),
)


def train(
    cfg: TrainConfig,
    out: Optional[Path] = None,
    checkpoint_every: int = 100,
    resume: Optional[Path] = None,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
    schedule_name: str = "custom",
    init: Optional[Path] = None,
    recipe: Recipe = TOY_SAM,
) -> Tuple[ToyModel, Dict[str, list]]:
    """Train from scratch, or from the weights ``init`` (a safetensors file; fresh optimiser), or resume
    from ``resume`` (a .pt training state); write ``out`` (safetensors) every ``checkpoint_every``
    steps and at the end. Returns the model and the loss history. ``recipe`` says which model (default:
    the toy SAM)."""
    device = torch.device(cfg.device)
    if cfg.retain_memory and device.type == "cpu":
        retain_freed_memory()
    torch.manual_seed(cfg.seed)
    model = recipe.build(cfg).to(device).train()
    init_meta = {}
    init = init if init is not None else (recipe.default_init(cfg) if resume is None else None)
    if init is not None:
        init_meta = recipe.load_init(model, init)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    start, history, elapsed0 = 0, {"loss": []}, 0.0
    state_path = None if out is None else Path(out).with_suffix(".state.pt")
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"].cpu() if device.type == "cpu" else state["generator"])
        start, history, elapsed0 = state["step"], state["history"], state.get("elapsed", 0.0)

    def save(step: int, elapsed: float) -> None:
        if out is None:
            return
        trained_size = model.image_size
        model.set_image_size(cfg.stages[-1][0])
        meta = {"schedule": schedule_name, "config": asdict(cfg), "steps_done": step,
                "train_seconds": round(elapsed, 1), "device": str(device), "git_commit": git_commit(),
                "torch": torch.__version__, **init_meta}
        recipe.save(model, out, meta)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "generator": gen.get_state(), "history": history, "elapsed": elapsed}, state_path)
        model.set_image_size(trained_size)

    eager_ops = recipe.ops(model, False, True)
    compiled_ops = recipe.ops(model, True, cfg.pattern_matcher) if cfg.compile else eager_ops
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train-toy", unit="step", dynamic_ncols=True)
    t0 = time.time()
    for step in range(start, cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        ops = compiled_ops if cfg.image_size_at(step) >= cfg.compile_min_size else eager_ops
        stats = train_step(model, cfg, step, gen, ops, loss_fn=recipe.loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for k, v in stats.items():
            history.setdefault(k, []).append(v)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", click3=f"{stats['iou_click_best3']:.2f}",
                            box=f"{stats['iou_box']:.2f}")
        if log is not None and (step % 20 == 0 or step == cfg.steps - 1):
            log(f"step {step} t={elapsed0 + time.time() - t0:.0f}s lr={lr_at(step, cfg):.2e} "
                + " ".join(f"{k}={v:.4f}" for k, v in stats.items()))
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < cfg.steps:
            save(step + 1, elapsed0 + time.time() - t0)
    if bar is not None:
        bar.close()
    save(cfg.steps, elapsed0 + time.time() - t0)
    model.set_image_size(cfg.stages[-1][0])
    return model.eval(), history


def phase_path(out: Path, index: int) -> Path:
    """Where phase ``index`` (from 1) of a phased schedule writing ``out`` keeps its weights: toy.phase1.safetensors."""
    return out.with_name(f"{out.stem}.phase{index}{out.suffix}")


def weights_metadata(path: Path) -> Dict[str, str]:
    """The metadata of a safetensors weights file, without loading its tensors ({} if there is no file)."""
    from safetensors import safe_open

    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def config_json(cfg: TrainConfig) -> Dict[str, object]:
    """``cfg`` as the weights' metadata records it, read back (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def phase_progress(path: Path, cfg: TrainConfig) -> int:
    """Steps of ``cfg`` already in ``path``: its checkpoint's steps_done if it was written with this very
    configuration, else 0 (no file, or another configuration: the phase starts over). A field the file
    does not record, added to TrainConfig since, counts as its default, which is how the file was trained."""
    meta = weights_metadata(path)
    same = "config" in meta and {**config_json(TrainConfig()), **json.loads(meta["config"])} == config_json(cfg)
    return int(meta.get("steps_done", 0)) if same else 0


def train_phases(name: str, out: Path, overrides: Optional[Dict[str, object]] = None,
                 log: Optional[Callable[[str], None]] = None, **train_kwargs) -> ToyModel:
    """Train the phased schedule ``name``: phase i writes ``phase_path(out, i)`` from the weights of phase
    i - 1, then ``out`` gets the last phase's weights with metadata for the whole run. Run again after an
    interruption, it skips the finished phases and resumes the one it was in from its last checkpoint
    (a phase after one trained in this run always starts over: its weights on disk came from other ones)."""
    out = Path(out)
    phased = SCHEDULES[name]
    if not isinstance(phased, PhasedSchedule):
        raise ValueError(f"train_phases: {name!r} is not a phased schedule")
    configs = phased.configs(**(overrides or {}))
    init: Optional[Path] = None
    phases: List[Dict[str, object]] = []
    trained = False
    for index, (schedule, cfg) in enumerate(zip((phase.name for phase in phased.phases), configs), start=1):
        path = phase_path(out, index)
        done = 0 if trained else phase_progress(path, cfg)
        if log is not None:
            log(f"phase {index} of {len(configs)}: {schedule}, seed {cfg.seed}, {cfg.steps} steps"
                + (f" ({done} done)" if done else ""))
        if done < cfg.steps:
            state = path.with_suffix(".state.pt")
            train(cfg, out=path, resume=state if done and state.is_file() else None, log=log,
                  schedule_name=f"{name}, phase {index}: {schedule}", init=init, **train_kwargs)
            trained = True
        meta = weights_metadata(path)
        phases.append({"schedule": schedule, "config": json.loads(meta["config"]),
                       "train_seconds": float(meta["train_seconds"])})
        init = path
    model = toy_model(init)
    save_toy_weights(model, out, {"schedule": name, "phases": phases, "steps_done": sum(c.steps for c in configs),
                                  "train_seconds": round(sum(p["train_seconds"] for p in phases), 1),
                                  "device": model.metadata.get("device", ""), "git_commit": git_commit(),
                                  "torch": torch.__version__})
    return toy_model(out)
