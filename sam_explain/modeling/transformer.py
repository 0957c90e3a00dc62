"""The two-way transformer: prompt tokens and image positions attend to each other.

Shapes (SAM's configuration in brackets):
  tokens   (queries)  B x T x C        [B x (5 + N') x 256]
  image    (keys)     B x HW x C       [B x 4096 x 256]
  inside Attention:   q, k, v  B x h x n x d, with h * d = C / downsample_rate
                      self-attention: rate 1, d = 32; cross-attentions: rate 2, d = 16
"""

import math
from typing import Tuple, Type

import torch
from einops import rearrange
from torch import Tensor, nn

from .common import HookPoint, MLPBlock


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the channels by ``downsample_rate``.

    forward(q: B x N_q x C, k: B x N_k x C, v: B x N_k x C) -> B x N_q x C

    Hook points (identity modules; a forward hook on them sees the tensor):
      hook_q       B x h x N_q x d   queries after the head split
      hook_k       B x h x N_k x d   keys after the head split
      hook_v       B x h x N_k x d   values after the head split
      hook_logits  B x h x N_q x N_k q k^T / sqrt(d)
      hook_probs   B x h x N_q x N_k softmax over N_k: the attention map
      hook_out     B x h x N_q x d   probabilities times values, before the heads merge
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
    ) -> None:
        super().__init__()
        if num_heads < 1 or downsample_rate < 1:
            raise ValueError(f"Attention: expected num_heads h >= 1 and downsample_rate >= 1, got h = {num_heads}, "
                             f"downsample_rate = {downsample_rate}")
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(
                f"Attention: num_heads h = {num_heads} must divide the internal channels "
                f"C / downsample_rate = {embedding_dim} / {downsample_rate} = {self.internal_dim}"
            )

        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_logits = HookPoint()
        self.hook_probs = HookPoint()
        self.hook_out = HookPoint()

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        h = self.num_heads
        q = self.q_proj(q)  # B x N_q x C -> B x N_q x (h d)
        k = self.k_proj(k)  # B x N_k x C -> B x N_k x (h d)
        v = self.v_proj(v)  # B x N_k x C -> B x N_k x (h d)

        q = self.hook_q(rearrange(q, "b n_q (h d) -> b h n_q d", h=h))
        k = self.hook_k(rearrange(k, "b n_k (h d) -> b h n_k d", h=h))
        v = self.hook_v(rearrange(v, "b n_k (h d) -> b h n_k d", h=h))

        d = q.shape[-1]
        # einsum "b h n_q d, b h n_k d -> b h n_q n_k", written as a batched matmul (one kernel, no copies)
        logits = q @ k.transpose(-2, -1)  # B x h x N_q x N_k
        logits = self.hook_logits(logits / math.sqrt(d))
        probs = self.hook_probs(torch.softmax(logits, dim=-1))  # each row sums to 1 over N_k

        out = probs @ v  # "b h n_q n_k, b h n_k d -> b h n_q d": B x h x N_q x d
        out = self.hook_out(out)
        out = rearrange(out, "b h n_q d -> b n_q (h d)")  # B x N_q x (h d)
        return self.out_proj(out)  # B x N_q x C


class TwoWayAttentionBlock(nn.Module):
    """One block of the two-way transformer, four steps on queries (tokens) and keys (image):

    1. self-attention of the tokens          (+ norm1)   B x T x C
    2. token-to-image cross-attention        (+ norm2)   tokens query the HW image positions
    3. MLP on the tokens                     (+ norm3)   B x T x C -> B x T x mlp_dim -> B x T x C
    4. image-to-token cross-attention        (+ norm4)   image positions query the T tokens

    In the first block (``skip_first_layer_pe``) step 1 takes no positional encoding
    and its output replaces the tokens (no residual).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)

        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)

        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)

        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )

        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> Tuple[Tensor, Tensor]:
        # queries, query_pe: B x T x C      keys, key_pe: B x HW x C
        # 1. tokens attend to each other
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        # 2. tokens attend to the image: T queries over HW keys
        q = queries + query_pe
        k = keys + key_pe
        queries = queries + self.cross_attn_token_to_image(q=q, k=k, v=keys)
        queries = self.norm2(queries)

        # 3. MLP on each token
        queries = queries + self.mlp(queries)
        queries = self.norm3(queries)

        # 4. the image attends to the tokens: HW queries over T keys
        q = queries + query_pe
        k = keys + key_pe
        keys = keys + self.cross_attn_image_to_token(q=k, k=q, v=queries)
        keys = self.norm4(keys)

        return queries, keys  # B x T x C, B x HW x C


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a final token-to-image attention.

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
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
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
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image_embedding: Tensor,
        image_pe: Tensor,
        point_embedding: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        keys = rearrange(image_embedding, "b c h w -> b (h w) c")  # B x HW x C
        key_pe = rearrange(image_pe, "b c h w -> b (h w) c")  # B x HW x C
        queries = point_embedding  # B x T x C; also the query positional encoding

        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe)

        q = queries + point_embedding
        k = keys + key_pe
        queries = queries + self.final_attn_token_to_image(q=q, k=k, v=keys)
        queries = self.norm_final_attn(queries)
        return queries, keys  # B x T x C, B x HW x C
