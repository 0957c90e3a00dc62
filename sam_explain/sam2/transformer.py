"""SAM 2's two-way transformer: SAM's, with two details changed.

Shapes (SAM 2.1's configuration in brackets; O = 1 object-score token):
  tokens   (queries)  B x T x C        [B x (6 + N') x 256],  T = O + 1 + M + N'
  image    (keys)     B x HW x C       [B x 4096 x 256]
  inside Attention:   q, k, v  B x h x n x d; self-attention d = C/h = 32, cross-attentions d = (C/2)/h = 16

What differs from ``sam_explain.modeling.transformer``:
  * the block's MLP is SAM 2's ``MLP`` (keys ``mlp.layers.0`` / ``mlp.layers.1``, SAM's are
    ``mlp.lin1`` / ``mlp.lin2``), the same computation: C -> mlp_dim -> ReLU -> C;
  * the official SAM 2 attention calls ``F.scaled_dot_product_attention``, which returns the
    values read but never the probabilities. sam-explain keeps SAM's ``Attention``, which writes
    the softmax out (q k^T / sqrt(d), softmax over the keys, times v), so its hook points
    (``hook_logits``, ``hook_probs``) see the seven attention maps. The two agree within float
    rounding (tests/test_sam2_parity.py). The official class's ``dropout`` (0 in the decoder) and
    ``kv_in_dim`` (used by SAM 2's memory attention, not by the decoder) are not implemented.
"""

from __future__ import annotations

from typing import Type

from torch import nn

from ..modeling.transformer import Attention
from ..modeling.transformer import TwoWayAttentionBlock as SamTwoWayAttentionBlock
from ..modeling.transformer import TwoWayTransformer as SamTwoWayTransformer
from .common import MLP

__all__ = ["Attention", "TwoWayAttentionBlock", "TwoWayTransformer"]


class TwoWayAttentionBlock(SamTwoWayAttentionBlock):
    """SAM's block (self-attention, token -> image, MLP, image -> token, each followed by a
    LayerNorm), with SAM 2's ``MLP``: queries B x T x C -> B x T x mlp_dim -> B x T x C."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__(embedding_dim, num_heads, mlp_dim=mlp_dim, activation=activation,
                         attention_downsample_rate=attention_downsample_rate,
                         skip_first_layer_pe=skip_first_layer_pe)
        # replaces SAM's MLPBlock in place (same position among the submodules, keys mlp.layers.0/1)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation)


class TwoWayTransformer(SamTwoWayTransformer):
    """``depth`` SAM 2 two-way blocks, then a final token-to-image attention (SAM's forward).

    forward(image_embedding: B x C x H x W, image_pe: B x C x H x W,
            point_embedding: B x T x C) -> (queries B x T x C, keys B x HW x C)
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        # SAM's constructor with no blocks (it makes the final attention and its norm), then SAM 2's
        # blocks in SAM's place: the keys come out in the official order, nothing built twice.
        super().__init__(depth=0, embedding_dim=embedding_dim, num_heads=num_heads, mlp_dim=mlp_dim,
                         activation=activation, attention_downsample_rate=attention_downsample_rate)
        self.depth = depth
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
