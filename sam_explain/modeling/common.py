"""Small building blocks shared by the decoder and the prompt encoder.

Symbols used in shape comments throughout ``sam_explain.modeling``:
B prompt sets, N points, N' sparse prompt tokens, T = 5 + N' tokens,
C channels (256 in SAM), H x W the image-embedding grid (64 x 64), h heads,
d per-head channels.
"""

from typing import Type

import torch
from einops import rearrange
from torch import nn
from torch.nn.modules import module as _module


class HookPoint(nn.Module):
    """An identity module that marks a tensor worth looking at.

    It holds no parameters, so it adds nothing to the state dict. Register an
    ordinary forward hook on it (or use ``sam_explain.trace_shapes`` /
    ``record_attention``) to see the tensor that passes through; with no hook
    registered, calling it returns ``x`` at once, without ``nn.Module.__call__``'s
    bookkeeping (SAM's decoder passes 53 of them per forward).

    ``on_demand=True`` marks a tensor that its module computes only when a hook of the hook point's
    own asks for it (the image encoder's n x n attention maps: without them the encoder runs one fused
    kernel). ``trace_shapes`` leaves such hook points alone unless told otherwise, and a global module
    hook does not count, so that looking at shapes never changes what is computed.
    """

    def __init__(self, on_demand: bool = False) -> None:
        super().__init__()
        self.on_demand = on_demand

    def has_own_hooks(self) -> bool:
        """True when a hook registered on this hook point itself wants its tensor (global hooks aside)."""
        return bool(self._forward_hooks or self._forward_pre_hooks or self._backward_hooks
                    or self._backward_pre_hooks)

    def is_hooked(self) -> bool:
        """True when a hook, its own or a global module hook, wants this tensor (or its gradient)."""
        return bool(self._forward_hooks or self._forward_pre_hooks or self._backward_hooks
                    or self._backward_pre_hooks or _module._global_forward_hooks
                    or _module._global_forward_pre_hooks or _module._global_backward_hooks
                    or _module._global_backward_pre_hooks)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return super().__call__(x) if self.is_hooked() else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MLPBlock(nn.Module):
    """lin1 -> act -> lin2: ... x C -> ... x mlp_dim -> ... x C."""

    def __init__(
        self,
        embedding_dim: int,
        mlp_dim: int,
        act: Type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))  # B x T x C -> B x T x mlp_dim -> B x T x C


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a B x C x H x W map (eps 1e-6, as in SAM)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)  # B x 1 x H x W
        var = (x - mean).pow(2).mean(1, keepdim=True)  # B x 1 x H x W
        x = (x - mean) / torch.sqrt(var + self.eps)
        weight = rearrange(self.weight, "c -> c 1 1")
        bias = rearrange(self.bias, "c -> c 1 1")
        return weight * x + bias
