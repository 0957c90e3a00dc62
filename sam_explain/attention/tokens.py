"""Names of the decoder's T = 5 + N' tokens, derived from the prompts given to the prompt encoder.

Order (as MaskDecoder concatenates them): ``iou``, ``mask0`` ... ``mask3``, then the sparse
prompt tokens in the prompt encoder's order:

  points      ``point0 (+)`` foreground, ``point1 (-)`` background, ``point2 (pad)`` a point the
              user labelled -1
  ``pad``     the padding point the prompt encoder appends when there are points and no box
  box         ``box corner 0`` (x0, y0, top-left), ``box corner 1`` (x1, y1, bottom-right)
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

LABEL_SUFFIX = {1: "(+)", 0: "(-)", -1: "(pad)"}


def output_token_names(num_mask_tokens: int = 4) -> List[str]:
    """``iou``, ``mask0`` ... ``mask{M-1}``: the 1 + M learned output tokens."""
    return ["iou"] + [f"mask{i}" for i in range(num_mask_tokens)]


def sparse_token_names(
    points: Optional[Tuple[torch.Tensor, torch.Tensor]],
    boxes: Optional[torch.Tensor],
    prompt_set: int = 0,
) -> List[str]:
    """The N' names of one prompt set's sparse tokens (see the module docstring)."""
    names: List[str] = []
    if points is not None:
        labels = points[1][prompt_set].tolist()  # N
        names += [f"point{i} {LABEL_SUFFIX.get(int(lab), f'(label {lab})')}" for i, lab in enumerate(labels)]
        if boxes is None:
            names.append("pad")
    if boxes is not None:
        names += ["box corner 0", "box corner 1"]
    return names


def token_names(prompts, num_mask_tokens: int = 4) -> List[List[str]]:
    """T names per prompt set, for a ``sam_explain.prompts.Prompts`` (or anything with
    ``points``, ``boxes`` and ``batch``): a list of B lists."""
    return [
        output_token_names(num_mask_tokens) + sparse_token_names(prompts.points, prompts.boxes, b)
        for b in range(prompts.batch)
    ]


def token_positions(prompts, prompt_set: int = 0) -> List[Optional[Tuple[float, float]]]:
    """(x, y) in input-frame pixels of each sparse token of one prompt set, None where the token
    has no position (the padding point); the output tokens are not included."""
    where: List[Optional[Tuple[float, float]]] = []
    if prompts.points is not None:
        coords, labels = prompts.points
        for (x, y), lab in zip(coords[prompt_set].tolist(), labels[prompt_set].tolist()):
            where.append(None if int(lab) == -1 else (x, y))
        if prompts.boxes is None:
            where.append(None)
    if prompts.boxes is not None:
        x0, y0, x1, y1 = prompts.boxes[prompt_set].tolist()
        where += [(x0, y0), (x1, y1)]
    return where
