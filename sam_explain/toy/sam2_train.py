"""Train the toy SAM 2 with SAM 2's recipe on the toy scenes, from the toy SAM's weights.

The loop is the toy SAM's (``train.train``: AdamW, warm-up and cosine decay, gradient clipping,
checkpoints, resuming), with this module's ``TOY_SAM2`` recipe. One step:
  1. draw S scenes (``generate_scenes``), encode them once: the image embedding S x C x H x W and the two
     high-resolution maps through ``conv_s0`` / ``conv_s1``, S x C/8 x 4H x 4W and S x C/4 x 2H x 2W;
  2. P prompt sets per scene (B = S x P), drawn as for the toy SAM (``sample_prompts``: a target, a click
     uniformly inside it or a noisy box around it, a click on a nested part sometimes read as the whole
     object), in three groups per scene (``Sam2TrainConfig``): ``background_per_scene`` clicks where no
     object is (target: nothing), ``boxes_per_scene`` boxes given as two points labelled 2 and 3 (N' = 3 with
     the padding point, as SAM 2's image predictor sends them), and one click on an object for the rest
     (N' = 2). The clicks and the boxes go through the decoder in two calls, each of fixed shape;
  3. the loss of each prompt set, with SAM 2.1's weights (``training/loss_fns.py``,
     ``MultiStepMultiMasksAndIous``; mask 20, dice 1, IoU 1, class 1):
       mask     20 x focal + dice, as for the toy SAM: a click takes the least over the three multimask
                outputs plus token 0's, a box token 0's (``train.step_loss``);
       IoU      L1 between the sigmoid IoU head's M predictions and the actual IoUs, on every output
                (SAM 2.1: ``iou_use_l1_loss``, ``supervise_all_iou``; the toy SAM: mean-squared error);
       object   binary cross-entropy of the object-score logit against "an object is there" (SAM 2.1's
                focal loss with gamma 0 and no alpha: ``losses.object_score_loss``);
     where no object is, the mask and IoU losses are multiplied by 0, as SAM 2 does (``target_obj``);
  4. iterative clicks on a quarter of the object prompt sets, as for the toy SAM: a click from the error
     region and the first prediction as the mask prompt, token 0 trained, with the same three losses.

``TOY_SAM2`` starts, without ``init``, from the shipped toy SAM's weights (``Sam2TrainConfig.from_toy_sam``;
``sam2_model.toy_sam2_from_toy_sam``); ``init`` may be a toy SAM file or a toy SAM 2 file.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..prompts import Prompts
from ..sam2.prompts import boxes_as_points
from .losses import best_pair_loss, mask_ious, object_score_loss
from .model import default_weights_path, save_toy_weights, toy_model
from .sam2_model import ToySam2Model, holds_toy_sam_weights, toy_sam2_from_toy_sam, toy_sam2_model
from .sampling import PromptBatch, sample_background, sample_prompts
from .scenes import SceneBatch
from .schedules import Sam2TrainConfig
from .train import (
    Recipe, StepOps, correction_clicks, encoder_config, init_metadata, step_scenes, train,
)


@dataclass
class Sam2PromptBatch:
    """B prompt sets in three groups, in this order: ``object_clicks`` clicks on an object, then clicks on
    the background (up to ``clicks``), then boxes (up to B)."""

    prompts: PromptBatch  # reordered; the background clicks' targets (and whole objects) are empty
    has_object: torch.Tensor  # B bool: False for the background clicks
    object_clicks: int
    clicks: int


def sample_sam2_prompts(scenes: SceneBatch, cfg: Sam2TrainConfig, gen: torch.Generator) -> Sam2PromptBatch:
    """The P prompt sets of each scene (``sample_prompts``, every one drawn as a click), then per scene the
    first ``background_per_scene`` become clicks where no object is and the last ``boxes_per_scene`` boxes."""
    P, n_bg, n_box = cfg.prompts_per_scene, cfg.background_per_scene, cfg.boxes_per_scene
    base = sample_prompts(scenes, P, gen, point_fraction=1.0, whole_fraction=cfg.whole_fraction,
                          both_fraction=cfg.both_fraction)
    B = base.target.shape[0]
    device = base.target.device
    slot = torch.arange(B, device=device) % P  # B: the prompt set's place among its scene's P
    is_bg, is_box = slot < n_bg, slot >= P - n_box  # B, B
    order = torch.cat([(~is_bg & ~is_box).nonzero()[:, 0], is_bg.nonzero()[:, 0], is_box.nonzero()[:, 0]])  # B
    p = PromptBatch(*(getattr(base, f.name)[order] for f in fields(PromptBatch)))
    S = scenes.images.shape[0]
    object_clicks, clicks = S * (P - n_bg - n_box), S * (P - n_box)
    index = torch.arange(B, device=device)
    background = (index >= object_clicks) & (index < clicks)  # B
    p.is_point = index < clicks
    p.point[background] = sample_background(scenes, p.scene[background], gen)[:, None]  # n_bg S x 1 x 2
    p.target[background] = False
    p.whole[background] = False
    p.whole_for_part = p.whole_for_part & p.is_point & ~background  # a box trains token 0 on its target
    p.both_readings = p.both_readings & p.is_point & ~background
    return Sam2PromptBatch(p, ~background, object_clicks, clicks)


def decode_groups(model: ToySam2Model, ops: StepOps, groups: List[Tuple[torch.Tensor, Prompts]],
                  scene: torch.Tensor, emb: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each group (rows: indices into the B prompt sets, prompts: those rows' prompt sets, of one shape)
    through the prompt encoder and all M outputs of the decoder, in float32, concatenated in group order:
    masks n x M x 4H x 4W, IoU n x M, object score n x 1. Prompt set b is on scene ``scene[b]`` (B) of the
    S encoded scenes: emb S x C x H x W, feat_s0 S x C/8 x 4H x 4W, feat_s1 S x C/4 x 2H x 2W, paired with
    the prompt sets (``repeat_image=False``)."""
    pe = model.prompt_encoder.get_dense_pe()  # 1 x C x H x W
    outs = []
    for rows, prompts in groups:
        if rows.numel() == 0:
            continue
        sparse, dense = model.prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=prompts.masks)  # n x N' x C, n x C x H x W
        on = scene[rows]  # n: the scene of each of the group's prompt sets
        masks, iou_pred, _, score = ops.predict_masks(
            image_embeddings=emb[on], image_pe=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            repeat_image=False, high_res_features=[feat_s0[on], feat_s1[on]])  # n x M x 4H x 4W, n x M, _, n x 1
        outs.append((masks.float(), iou_pred.float(), score.float()))  # the losses in float32, also under autocast
    return tuple(torch.cat(parts) for parts in zip(*outs))  # type: ignore[return-value]


def sam2_step_loss(model: ToySam2Model, cfg: Sam2TrainConfig, step: int, gen: torch.Generator,
                   ops: StepOps) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The loss of one step (the module docstring) and its parts, for the log."""
    scenes = step_scenes(model, cfg, step)
    device, image_size = torch.device(cfg.device), model.image_size
    batch = sample_sam2_prompts(scenes, cfg, gen)
    p, has_object = batch.prompts, batch.has_object
    B = p.target.shape[0]
    target = p.target.flatten(1)[:, None]  # B x 1 x L (L = H0 W0 = 4H 4W)
    present = has_object.float()  # B

    encoded = ops.encode(scenes.images)  # S x C x H x W, S x C/8 x 4H x 4W, S x C/4 x 2H x 2W

    # Pass 1: one click (N' = 2 with the padding point), or one box as two points (N' = 3).
    index = torch.arange(B, device=device)
    clicks, boxes = index[: batch.clicks], index[batch.clicks:]
    ones = torch.ones(len(clicks), 1, dtype=torch.int64, device=device)
    groups = [(clicks, Prompts(points=(p.point[clicks], ones))),
              (boxes, boxes_as_points(Prompts(boxes=p.box[boxes])))]
    masks, iou_pred, score = decode_groups(model, ops, groups, p.scene, *encoded)  # B x M x 4H x 4W, B x M, B x 1
    logits = masks.flatten(2)  # B x M x L
    per_mask = ops.mask_losses(logits, target.float())  # B x M
    best_multi, best_idx = per_mask[:, 1:].min(dim=1)  # B
    if cfg.both_fraction > 0:  # both readings of a part click: the part on one output, the whole on another
        per_whole = ops.mask_losses(logits[:, 1:], p.whole.flatten(1)[:, None].float())  # B x 3
        best_multi = torch.where(p.both_readings, best_pair_loss(per_mask[:, 1:], per_whole), best_multi)  # B
    single_loss = torch.where(p.whole_for_part, 0.0, per_mask[:, 0])  # B
    mask_loss = torch.where(p.is_point, best_multi + single_loss, per_mask[:, 0]) * present  # B: none without an object
    with torch.no_grad():
        actual = mask_ious(logits, target)  # B x M
        if cfg.both_fraction > 0:
            nearer = torch.maximum(actual[:, 1:], mask_ious(logits[:, 1:], p.whole.flatten(1)[:, None]))
            actual[:, 1:] = torch.where(p.both_readings[:, None], nearer, actual[:, 1:])  # B x M
    iou_loss = (iou_pred - actual).abs().mean(dim=1) * present  # B: L1 on all M outputs
    obj_loss = object_score_loss(score, has_object)  # B
    loss = mask_loss.mean() + iou_loss.mean() + obj_loss.mean()
    oc, bx = index[: batch.object_clicks], boxes
    with torch.no_grad():
        correct = ((score[:, 0] > 0) == has_object).float()  # B: the video path's reading of the score
    stats = {"mask": mask_loss.mean().item(), "iou_l1": iou_loss.mean().item(), "object": obj_loss.mean().item(),
             "object_correct": correct.mean().item(),
             "iou_click_best3": actual[oc, 1:].max(1).values.mean().item() if len(oc) else float("nan"),
             "iou_box": actual[bx, 0].mean().item() if len(bx) else float("nan")}

    # Pass 2: an extra click in the error region of an object prompt set, the chosen mask as the mask prompt.
    if image_size >= cfg.iterative_min_size:
        sel_c = spread(oc, cfg.iterative_fraction)  # object clicks
        sel_b = spread(bx, cfg.iterative_fraction)  # boxes
        sel = torch.cat([sel_c, sel_b])  # n2
        n2 = len(sel)
        if n2 > 0:
            chosen = torch.where(p.is_point[sel], best_idx[sel] + 1, torch.zeros_like(sel))  # n2
            prev = masks[sel, chosen].detach()  # n2 x 4H x 4W
            tgt2 = p.target[sel]  # n2 x H0 x W0
            click, label = correction_clicks(prev, tgt2, gen)  # n2 x 2, n2
            mask_prompt = prev[:, None]  # n2 x 1 x 4H x 4W
            c, b = slice(0, len(sel_c)), slice(len(sel_c), n2)
            first = torch.ones_like(label[c])[:, None]  # n2c x 1
            groups = [
                (sel_c, Prompts(points=(torch.cat([p.point[sel_c], click[c, None]], 1),  # n2c x 2 x 2
                                        torch.cat([first, label[c, None]], 1)),  # n2c x 2: N' = 3
                                masks=mask_prompt[c])),
                (sel_b, boxes_as_points(Prompts(points=(click[b, None], label[b, None]), boxes=p.box[sel_b],
                                                masks=mask_prompt[b]))),  # corners, then the click: N' = 4
            ]
            masks2, iou2, score2 = decode_groups(model, ops, groups, p.scene, *encoded)  # n2 x M x 4H x 4W, ...
            logits2 = masks2.flatten(2)  # n2 x M x L
            t2 = tgt2.flatten(1)[:, None]  # n2 x 1 x L
            loss2 = ops.mask_losses(logits2[:, :1], t2.float())[:, 0]  # n2: several prompts, token 0
            with torch.no_grad():
                actual2 = mask_ious(logits2, t2)  # n2 x M
            iou_loss2 = (iou2 - actual2).abs().mean(dim=1)  # n2
            obj_loss2 = object_score_loss(score2, torch.ones(n2, dtype=torch.bool, device=device))  # n2
            loss = loss + (n2 / B) * (loss2.mean() + iou_loss2.mean() + obj_loss2.mean())
            stats["mask_iter"] = loss2.mean().item()
            stats["iou_iter"] = actual2[:, 0].mean().item()
    return loss, stats


def spread(rows: torch.Tensor, fraction: float) -> torch.Tensor:
    """round(fraction x n) of the n ``rows``, spread evenly over them (so over the scenes)."""
    n = len(rows)
    k = int(round(fraction * n))
    if k == 0:
        return rows[:0]
    return rows[torch.arange(k, device=rows.device) * n // k]


def sam2_encoder_config(cfg: Sam2TrainConfig) -> Dict[str, object]:
    """The ToySam2ImageEncoder arguments of a recipe: the toy SAM's encoder (``encoder_config``) and hr_dims."""
    return {**encoder_config(cfg), "hr_dims": tuple(cfg.hr_dims)}


def load_sam2_init(model: ToySam2Model, init: Path) -> Dict[str, str]:
    """Start ``model`` from a weights file: a toy SAM 2's (every tensor), or a toy SAM's (``toy_sam2_from_toy_sam``:
    the shared tensors, the new parts initialised as it says). Returns ``init_metadata``."""
    if not holds_toy_sam_weights(init):
        start = toy_sam2_model(init)
        model.load_state_dict(start.state_dict())
        return {**init_metadata(init, start), "init_model": "toy SAM 2"}
    toy = toy_model(init)
    start = toy_sam2_from_toy_sam(toy, hr_dims=model.image_encoder.hr_dims)
    model.load_state_dict(start.state_dict())
    return {**init_metadata(init, toy), "init_model": "toy SAM"}


TOY_SAM2 = Recipe(
    build=lambda cfg: ToySam2Model(encoder_config=sam2_encoder_config(cfg)),
    load_init=load_sam2_init,
    ops=lambda model, compile, pattern_matcher: StepOps.of(model.encode, model.mask_decoder.predict_masks,
                                                           compile, pattern_matcher),
    loss=lambda *args: sam2_step_loss(*args),
    save=lambda model, path, metadata: save_toy_weights(model, path, {**metadata, "model": "toy SAM 2"}),
    default_init=lambda cfg: default_weights_path() if cfg.from_toy_sam else None,
)


def train_sam2(cfg: Sam2TrainConfig, out: Optional[Path] = None, init: Optional[Path] = None,
               log: Optional[Callable[[str], None]] = None, **kwargs) -> Tuple[ToySam2Model, Dict[str, list]]:
    """Train a toy SAM 2 (``train.train`` with ``TOY_SAM2``): from ``init`` if given, else from the shipped
    toy SAM's weights (``cfg.from_toy_sam``) or from scratch. Returns the model (eval mode) and the history."""
    if not isinstance(cfg, Sam2TrainConfig):
        raise TypeError(f"train_sam2: expected a Sam2TrainConfig, got {type(cfg).__name__}")
    return train(cfg, out=out, init=init, log=log, recipe=TOY_SAM2, **kwargs)  # type: ignore[return-value]
