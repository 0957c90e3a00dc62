"""Measure the toy SAM 2 on held-out scenes: the toy SAM's figures (evaluate.py), and what SAM 2 added.

The scenes and the object clicks are the toy SAM's evaluation's (the same seed stream, the same clicks on
the same device), so the figures of the two models compare click for click. For every valid target of
every scene (each whole object and each nested part):
  click     one click drawn uniformly inside the target; one decoder pass gives all M = 4 masks: the best
            of the three multimask outputs, the one the IoU head ranks first, and the single-mask output
            twice: token 0's mask, and what the decoder returns with ``multimask_output=False`` outside
            training, where the stability switch replaces an unstable token 0 by the multimask output with
            the best predicted IoU. The switch's figures: how often it replaces token 0, and the IoU of
            both answers on the same clicks;
  box       the target's exact bounding box, as two points labelled 2 and 3 (SAM 2's image predictor),
            token 0's mask;
  skips     the same clicks with feat_s0 and feat_s1 set to zero: what the high-resolution skips add;
and per scene ``background_per_scene`` clicks where no object is. The object score (the decoder's
``object_score_logits``) is scored as a detector of "an object is there": its ROC AUC with the object
clicks as positives and the background clicks as negatives, and how often its sign is right (the video
path, ``SAM2Base._forward_sam_heads``, keeps a mask only where the score is positive).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ..prompts import Prompts
from ..sam2.prompts import boxes_as_points
from .evaluate import EVAL_SEED
from .losses import mask_ious
from .sam2_model import ToySam2Model
from .sampling import bounding_boxes, sample_background, sample_in_masks
from .scenes import generate_scenes


def roc_auc(positives: torch.Tensor, negatives: torch.Tensor) -> float:
    """The area under the ROC curve of scores (P positives, N negatives): the chance that a positive scores
    above a negative, ties counting half (the Mann-Whitney statistic). NaN without both kinds."""
    if positives.numel() == 0 or negatives.numel() == 0:
        return float("nan")
    diff = positives.double()[:, None] - negatives.double()[None, :]  # P x N
    return ((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean()).item()


@torch.no_grad()
def evaluate_sam2(
    model: ToySam2Model,
    num_scenes: int = 100,
    seed: int = EVAL_SEED,
    chunk: int = 10,
    background_per_scene: int = 2,
) -> Dict[str, float]:
    """Figures on ``num_scenes`` held-out scenes (see the module docstring)."""
    model.eval()
    device = model.device
    size = model.image_size
    decoder, prompt_encoder = model.mask_decoder, model.prompt_encoder
    gen = torch.Generator(device=device).manual_seed(seed + 1)  # the object clicks: evaluate.py's
    gen_bg = torch.Generator(device=device).manual_seed(seed + 2)  # the background clicks
    pe = prompt_encoder.get_dense_pe()  # 1 x C x H x W
    acc: Dict[str, List[torch.Tensor]] = {k: [] for k in (
        "best3", "on_part", "ranked", "single", "switched_iou", "switched", "box", "pred", "actual",
        "score_object", "score_background", "best3_no_skips", "single_no_skips")}

    def decode(emb: torch.Tensor, feats: List[torch.Tensor], prompts: Prompts
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image (1 x C x H x W, [1 x C/8 x 4H x 4W, 1 x C/4 x 2H x 2W]) and n prompt sets -> all M masks."""
        sparse, dense = prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=None)  # n x N' x C, n x C x H x W
        masks, iou_pred, _, score = decoder.predict_masks(emb, pe, sparse, dense, repeat_image=True,
                                                          high_res_features=feats)  # n x M x 4H x 4W, n x M, _, n x 1
        return masks, iou_pred, score

    for start in range(0, num_scenes, chunk):
        n = min(chunk, num_scenes - start)
        scenes = generate_scenes(n, seed=seed + start, device=device, image_size=size)
        embeddings, feats_s0, feats_s1 = model.encode(scenes.images)  # n x C x H x W, n x C/8 x 4H x 4W, n x C/4 x 2H x 2W
        targets, valid = scenes.targets, scenes.targets_valid  # n x 2K x H0 x W0, n x 2K
        K = scenes.object_masks.shape[1]
        for s in range(n):
            emb = embeddings[s: s + 1]  # 1 x C x H x W, shared by the prompt sets
            feats = [feats_s0[s: s + 1], feats_s1[s: s + 1]]  # 1 x C/8 x 4H x 4W, 1 x C/4 x 2H x 2W
            if background_per_scene:
                scene = torch.full((background_per_scene,), s, dtype=torch.long, device=device)
                bg = sample_background(scenes, scene, gen_bg)[:, None]  # n_bg x 1 x 2
                ones = torch.ones(background_per_scene, 1, dtype=torch.int64, device=device)
                acc["score_background"].append(decode(emb, feats, Prompts(points=(bg, ones)))[2][:, 0])
            idx = valid[s].nonzero()[:, 0]  # the valid targets of scene s
            if idx.numel() == 0:
                continue
            tgt = targets[s, idx]  # B x H0 x W0
            B = tgt.shape[0]
            t = tgt.flatten(1)[:, None]  # B x 1 x L

            clicks = Prompts(points=(sample_in_masks(tgt, gen)[:, None],  # B x 1 x 2
                                     torch.ones(B, 1, dtype=torch.int64, device=device)))
            masks, iou_pred, score = decode(emb, feats, clicks)  # B x M x 4H x 4W, B x M, B x 1
            actual = mask_ious(masks.flatten(2), t)  # B x M
            acc["best3"].append(actual[:, 1:].max(1).values)
            acc["on_part"].append(idx >= K)
            acc["ranked"].append(actual[:, 1:].gather(1, iou_pred[:, 1:].argmax(1, keepdim=True))[:, 0])
            acc["single"].append(actual[:, 0])
            acc["pred"].append(iou_pred[:, 1:].flatten())
            acc["actual"].append(actual[:, 1:].flatten())
            acc["score_object"].append(score[:, 0])
            # multimask_output=False outside training: the decoder's own switch (what forward() calls)
            chosen, _ = decoder._dynamic_multimask_via_stability(masks, iou_pred)  # B x 1 x 4H x 4W
            acc["switched_iou"].append(mask_ious(chosen.flatten(2), t)[:, 0])
            stability = decoder._get_stability_scores(masks[:, :1])[:, 0]  # B
            acc["switched"].append(stability < decoder.dynamic_multimask_stability_thresh)

            zero = [torch.zeros_like(f) for f in feats]
            masks0, _, _ = decode(emb, zero, clicks)  # the same clicks without the skips
            actual0 = mask_ious(masks0.flatten(2), t)  # B x M
            acc["best3_no_skips"].append(actual0[:, 1:].max(1).values)
            acc["single_no_skips"].append(actual0[:, 0])

            box_masks, _, _ = decode(emb, feats, boxes_as_points(Prompts(boxes=bounding_boxes(tgt))))
            acc["box"].append(mask_ious(box_masks[:, :1].flatten(2), t)[:, 0])

    cat = {k: torch.cat(v) if v else torch.empty(0) for k, v in acc.items()}
    best3, on_part, switched = cat["best3"], cat["on_part"], cat["switched"]

    def mean(x: torch.Tensor) -> float:
        return x.float().mean().item() if x.numel() else float("nan")

    pred, act = cat["pred"], cat["actual"]
    corr = torch.corrcoef(torch.stack([pred, act]))[0, 1].item() if pred.numel() > 1 else float("nan")
    pos, neg = cat["score_object"], cat["score_background"]
    return {
        "scenes": num_scenes,
        "prompts": best3.numel(),
        "nested_parts": int(on_part.sum()),
        "background_clicks": neg.numel(),
        "click_best_of_3_miou": mean(best3),
        "click_best_of_3_miou_objects": mean(best3[~on_part]),
        "click_best_of_3_miou_parts": mean(best3[on_part]),
        "click_top_ranked_miou": mean(cat["ranked"]),
        "click_single_mask_miou": mean(cat["single"]),  # token 0
        "click_single_output_miou": mean(cat["switched_iou"]),  # multimask_output=False: with the switch
        "switch_fraction": mean(switched),
        "switched_token0_miou": mean(cat["single"][switched]),  # the switched clicks: token 0's answer ...
        "switched_output_miou": mean(cat["switched_iou"][switched]),  # ... and the switch's
        "box_miou": mean(cat["box"]),
        "object_score_auc": roc_auc(pos, neg),
        "object_clicks_positive": mean(pos > 0),
        "background_clicks_not_positive": mean(neg <= 0),
        "click_best_of_3_miou_no_skips": mean(cat["best3_no_skips"]),
        "click_single_mask_miou_no_skips": mean(cat["single_no_skips"]),
        "iou_pred_pearson": corr,
        "iou_pred_mae": (pred - act).abs().mean().item() if pred.numel() else float("nan"),
    }


def format_sam2_report(f: Dict[str, float]) -> str:
    """The figures of ``evaluate_sam2`` as lines of text (the targets of docs/toy_sam2.md in brackets)."""
    return "\n".join([
        f"held-out scenes: {f['scenes']} (seed {EVAL_SEED}), prompts: {f['prompts']} targets ({f['nested_parts']} "
        f"nested parts), {f['background_clicks']} background clicks",
        f"  one click, best of the 3 multimask outputs   mIoU {f['click_best_of_3_miou']:.3f}   (target >= 0.85)",
        f"    of which clicks for whole objects {f['click_best_of_3_miou_objects']:.3f}, for nested parts "
        f"{f['click_best_of_3_miou_parts']:.3f}",
        f"  one click, the output ranked first by IoU    mIoU {f['click_top_ranked_miou']:.3f}",
        f"  one click, single mask: token 0              mIoU {f['click_single_mask_miou']:.3f}",
        f"  one click, single mask with the stability switch (multimask_output=False)  mIoU "
        f"{f['click_single_output_miou']:.3f}",
        f"    the switch replaced token 0 on {f['switch_fraction']:.1%} of the clicks" + (
            f"; there, token 0 {f['switched_token0_miou']:.3f} -> the switch's answer {f['switched_output_miou']:.3f}"
            if f["switch_fraction"] > 0 else ""),
        f"  box (two points labelled 2 and 3), token 0    mIoU {f['box_miou']:.3f}",
        f"  object score, object vs background clicks: ROC AUC {f['object_score_auc']:.3f}   (target >= 0.95); "
        f"score > 0 on {f['object_clicks_positive']:.1%} of the object clicks, <= 0 on "
        f"{f['background_clicks_not_positive']:.1%} of the background clicks",
        f"  without the high-resolution skips (feat_s0 = feat_s1 = 0): best of 3 "
        f"{f['click_best_of_3_miou_no_skips']:.3f}, token 0 {f['click_single_mask_miou_no_skips']:.3f}",
        f"  predicted vs actual IoU (multimask outputs): Pearson r = {f['iou_pred_pearson']:.3f}, "
        f"mean |error| = {f['iou_pred_mae']:.3f}",
    ])
