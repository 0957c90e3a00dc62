"""SAM's losses for one prompt set's masks, and the IoU the IoU head learns.

  mask loss   20 x focal + dice (SAM: focal : dice = 20 : 1), per mask
  best pair   both readings of a click on a nested part, on two different outputs
  mask_ious   the actual IoU of each thresholded mask with its target (the IoU head's target)
  object score  SAM 2's loss on its object-score logit (the toy SAM 2, sam2_train.py)
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

FOCAL_WEIGHT = 20.0  # SAM: focal : dice = 20 : 1


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss, mean over pixels: B x K x L logits, B x 1 x L {0, 1} -> B x K."""
    target = target.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice: B x K x L logits, B x 1 x L {0, 1} -> B x K."""
    prob = logits.sigmoid()
    inter = (prob * target).sum(-1)
    return 1 - (2 * inter + 1) / (prob.sum(-1) + target.sum(-1) + 1)


def mask_ious(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each thresholded mask with the target: B x K x L logits, B x 1 x L bool -> B x K."""
    pred = logits > 0
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return inter / union.clamp(min=1)


def best_pair_loss(loss_part: torch.Tensor, loss_whole: torch.Tensor) -> torch.Tensor:
    """Both readings of a click on a nested part, on two different outputs: B x 3, B x 3 -> B, the least
    loss_part[i] + loss_whole[j] over i != j."""
    pairs = loss_part[:, :, None] + loss_whole[:, None, :]  # B x 3 x 3: the part on output i, the whole on j
    same = torch.eye(pairs.shape[-1], dtype=torch.bool, device=pairs.device)
    return pairs.masked_fill(same, float("inf")).flatten(1).min(1).values  # B


def object_score_loss(logits: torch.Tensor, has_object: torch.Tensor) -> torch.Tensor:
    """SAM 2's object-score loss: B x 1 logits, B bool (an object is there) -> B. SAM 2.1's training loss
    (``training/loss_fns.py``, ``MultiStepMultiMasksAndIous``) is a sigmoid focal loss on the logit with
    gamma 0 and no alpha weighting (``focal_gamma_obj_score: 0.0``, ``focal_alpha_obj_score: -1.0``), which is
    the binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(logits[:, 0], has_object.to(logits.dtype), reduction="none")  # B
