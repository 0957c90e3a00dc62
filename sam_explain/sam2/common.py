"""SAM 2's MLP: SAM's, with its activation as a module (``sam2.modeling.sam2_utils.MLP``).

SAM 2 uses one MLP class everywhere in its decoder: the hypernetworks (C -> C -> C -> C/8), the IoU
head (C -> iou_hidden -> iou_hidden -> M), the object-score head (C -> C -> C -> 1) and, where SAM
had ``MLPBlock`` (``lin1`` / ``lin2``), the two-way block's MLP (C -> mlp_dim -> C: keys
``mlp.layers.0`` / ``mlp.layers.1``). The activation is a module, ``act``, which holds no weights, so
the state-dict keys are SAM's ``layers.i``; a shape trace shows it as rows ``*.act``.
"""

from __future__ import annotations

from typing import Type

import torch
from torch import nn

from ..modeling.mask_decoder import MLP as SamMLP


class MLP(SamMLP):
    """``num_layers`` linear layers, ``activation`` (ReLU) between them, an optional sigmoid at the end.

    ... x input_dim -> ... x hidden_dim -> ... -> ... x output_dim, on the last axis.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: Type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__(input_dim, hidden_dim, output_dim, num_layers, sigmoid_output=sigmoid_output)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)  # ... x n_in -> ... x n_out
            if i < self.num_layers - 1:
                x = self.act(x)
        if self.sigmoid_output:
            x = torch.sigmoid(x)
        return x
