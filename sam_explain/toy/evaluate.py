"""Measure the toy SAM on held-out scenes (a seed stream training never draws from).

For every valid target of every scene (each whole object and each nested part):
  click   one click drawn uniformly inside the target; one decoder pass gives all M = 4 masks:
          the three multimask outputs (best of three, and the one the IoU head ranks first)
          and the single-mask output (token 0, multimask_output=False);
  box     the target's exact bounding box, single-mask output;
  nested  for a click on a nested part, whether the three outputs cover both readings: one has
          IoU >= ``cover_iou`` with the part and one has IoU >= ``cover_iou`` with the whole object;
          and the best IoU of the three with the whole object (with the part it is the click's own score);
  IoU head  Pearson correlation of predicted and actual IoU over every multimask output of every click.
"""

from __future__ import annotations

from typing import Dict

import torch

from .model import ToyModel
from .scenes import generate_scenes
from .losses import mask_ious
from .sampling import bounding_boxes, sample_in_masks

EVAL_SEED = 2_024_112_400  # training draws scene seeds seed * 1_000_003 + step, far below this


@torch.no_grad()
def evaluate(
    model: ToyModel,
    num_scenes: int = 100,
    seed: int = EVAL_SEED,
    chunk: int = 10,
    cover_iou: float = 0.75,
) -> Dict[str, float]:
    """Figures on ``num_scenes`` held-out scenes (see the module docstring)."""
    model.eval()
    device = model.device
    size = model.image_size
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    pe = model.prompt_encoder.get_dense_pe()  # 1 x C x H x W
    best3, single, ranked, box_iou, pred_all, act_all, on_part = [], [], [], [], [], [], []
    best_with_whole = []
    covered = 0
    for start in range(0, num_scenes, chunk):
        n = min(chunk, num_scenes - start)
        scenes = generate_scenes(n, seed=seed + start, device=device, image_size=size)
        embeddings = model.image_encoder(scenes.images)  # n x C x H x W
        targets, valid = scenes.targets, scenes.targets_valid  # n x 2K x H0 x W0, n x 2K
        K = scenes.object_masks.shape[1]
        for s in range(n):
            idx = valid[s].nonzero()[:, 0]  # the valid targets of scene s
            if idx.numel() == 0:
                continue
            tgt = targets[s, idx]  # B x H0 x W0
            B = tgt.shape[0]
            emb = embeddings[s : s + 1]  # 1 x C x H x W, shared by the B prompt sets
            t = tgt.flatten(1)[:, None]  # B x 1 x L

            clicks = sample_in_masks(tgt, gen)[:, None]  # B x 1 x 2
            labels = torch.ones(B, 1, dtype=torch.int64, device=device)
            sparse, dense = model.prompt_encoder(points=(clicks, labels), boxes=None, masks=None)
            masks, iou_pred = model.mask_decoder.predict_masks(emb, pe, sparse, dense)  # B x M x 4H x 4W, B x M
            actual = mask_ious(masks.flatten(2), t)  # B x M
            best = actual[:, 1:].max(1).values  # B, the best of the three multimask outputs
            is_part = idx >= K  # B, the click was drawn for a nested part
            best3.append(best)
            on_part.append(is_part)
            single.append(actual[:, 0])
            ranked.append(actual[:, 1:].gather(1, iou_pred[:, 1:].argmax(1, keepdim=True))[:, 0])
            pred_all.append(iou_pred[:, 1:].flatten())
            act_all.append(actual[:, 1:].flatten())

            # Nested parts: does some output match the part (its best is ``best``) and some output the whole object?
            if is_part.any():
                whole = scenes.object_masks[s, idx[is_part] - K].flatten(1)[:, None]  # P x 1 x L
                whole_best = mask_ious(masks[is_part, 1:].flatten(2), whole).max(1).values  # P
                best_with_whole.append(whole_best)
                covered += int(((best[is_part] >= cover_iou) & (whole_best >= cover_iou)).sum())

            boxes = bounding_boxes(tgt)  # B x 4
            sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
            masks, _ = model.mask_decoder.predict_masks(emb, pe, sparse, dense)
            box_iou.append(mask_ious(masks[:, :1].flatten(2), t)[:, 0])

    cat = torch.cat
    pred, act = cat(pred_all), cat(act_all)
    best3_all, on_part_all = cat(best3), cat(on_part)
    nested = int(on_part_all.sum())

    def mean(x: torch.Tensor) -> float:
        return x.mean().item() if x.numel() else float("nan")

    corr = torch.corrcoef(torch.stack([pred, act]))[0, 1].item() if pred.numel() > 1 else float("nan")
    return {
        "scenes": num_scenes,
        "prompts": best3_all.numel(),
        "click_best_of_3_miou": best3_all.mean().item(),
        "click_best_of_3_miou_objects": mean(best3_all[~on_part_all]),  # the click drawn for a whole object
        "click_best_of_3_miou_parts": mean(best3_all[on_part_all]),  # ... for a nested part
        "click_top_ranked_miou": cat(ranked).mean().item(),
        "click_single_mask_miou": cat(single).mean().item(),
        "box_miou": cat(box_iou).mean().item(),
        "nested_parts": nested,
        "nested_both_readings_fraction": covered / nested if nested else float("nan"),
        "cover_iou": cover_iou,
        "nested_best_iou_whole": mean(cat(best_with_whole)) if best_with_whole else float("nan"),
        "iou_pred_pearson": corr,
        "iou_pred_mae": (pred - act).abs().mean().item(),
    }


def format_report(f: Dict[str, float]) -> str:
    return "\n".join([
        f"held-out scenes: {f['scenes']} (seed {EVAL_SEED}), prompts: {f['prompts']} targets (objects and nested parts)",
        f"  one click, best of the 3 multimask outputs   mIoU {f['click_best_of_3_miou']:.3f}   (target >= 0.85)",
        f"    of which clicks for whole objects {f['click_best_of_3_miou_objects']:.3f}, for nested parts "
        f"{f['click_best_of_3_miou_parts']:.3f}",
        f"  one click, the output ranked first by IoU    mIoU {f['click_top_ranked_miou']:.3f}",
        f"  one click, single-mask output (token 0)      mIoU {f['click_single_mask_miou']:.3f}   (target >= 0.75)",
        f"  box, single-mask output                      mIoU {f['box_miou']:.3f}   (target >= 0.85)",
        f"  click on a nested part: the 3 outputs cover both the part and the whole object (IoU >= "
        f"{f['cover_iou']:.2f}) in {f['nested_both_readings_fraction']:.1%} of {f['nested_parts']} cases",
        f"    the best of the 3 against the part: mIoU {f['click_best_of_3_miou_parts']:.3f} (above); "
        f"against the whole object: {f['nested_best_iou_whole']:.3f}",
        f"  predicted vs actual IoU (multimask outputs): Pearson r = {f['iou_pred_pearson']:.3f}, "
        f"mean |error| = {f['iou_pred_mae']:.3f}",
    ])
