"""SAM's image encoder: a ViT (ViTDet style) that turns the padded 1024 x 1024 image into
the C x H x W = 256 x 64 x 64 image embedding the mask decoder reads.

The whole path, with vit_b's numbers (E = 768 channels, 12 blocks, h = 12 heads):

  image          B x 3 x 1024 x 1024       normalised and padded by Sam.preprocess
  patch_embed    16 x 16 conv, stride 16   B x H x W x E = B x 64 x 64 x 768
  + pos_embed    1 x H x W x E             absolute positions, learnt
  blocks         windowed or global attention, then an MLP, each with a residual
    windowed     the grid is padded to a multiple of S = 14 and cut into S x S windows:
                 (B nW) x S x S x E, nW = ceil(H/S) * ceil(W/S) = 5 * 5 = 25 windows
    global       every position attends to all HW = 4096 positions (blocks 2, 5, 8, 11)
    attention    q, k, v (B') x h x n x d, n = S*S = 196 or HW = 4096, d = E/h = 64;
                 logits get decomposed relative positions (one table per axis)
  neck           1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d: B x E x H x W -> B x C x H x W

Symbols: B images, E encoder channels, H x W patch grid (64 x 64), S window side,
nW windows per image, B' = B * nW (windowed) or B (global), n positions per attention,
h heads, d = E / h per-head channels, C the output channels (256).

Same class names, constructor arguments and state-dict keys as
``segment_anything.modeling.image_encoder``.
"""

from typing import Optional, Tuple, Type

import torch
from einops import einsum, rearrange
from torch import nn
from torch.nn import functional as F

from ..shapes.check import expect_like_weights, expect_shape
from .common import HookPoint, LayerNorm2d, MLPBlock


class ImageEncoderViT(nn.Module):
    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        act_layer: Type[nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        global_attn_indexes: Tuple[int, ...] = (),
    ) -> None:
        """The ViT backbone.

        Arguments:
          img_size: side of the square, padded input image (1024 in SAM).
          patch_size: side of a patch (16): the grid is H = W = img_size / patch_size.
          in_chans: image channels (3).
          embed_dim: E, the channels inside the ViT (768, 1024, 1280 for vit_b, vit_l, vit_h).
          depth: number of blocks (12, 24, 32).
          num_heads: h, attention heads per block (12, 16, 16).
          mlp_ratio: hidden width of the MLPs as a multiple of E (4).
          out_chans: C, the channels of the image embedding (256).
          qkv_bias: whether the q, k, v projection has a bias.
          norm_layer: norm of the blocks (LayerNorm, eps 1e-6 in SAM).
          act_layer: activation of the MLPs (GELU).
          use_abs_pos: add a learnt 1 x H x W x E positional embedding after the patches.
          use_rel_pos: add decomposed relative positions to the attention logits (True in SAM).
          rel_pos_zero_init: start the relative-position tables at zero (they are loaded anyway).
          window_size: S, the window side of the windowed blocks (14); 0 makes every block global.
          global_attn_indexes: the blocks that attend over the whole grid.
        """
        super().__init__()
        self.img_size = img_size
        self.in_chans = in_chans

        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )

        grid = img_size // patch_size  # H = W
        self.pos_embed: Optional[nn.Parameter] = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))  # 1 x H x W x E

        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),  # B x E x H x W -> B x C x H x W
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

        self.hook_patches = HookPoint()  # B x H x W x E, patches plus absolute positions
        self.hook_embedding = HookPoint()  # B x C x H x W, the output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x img_size x img_size (normalised, padded) -> B x C x H x W image embedding."""
        s = self.img_size
        expect_shape(
            "ImageEncoderViT", "x", x, f"B {self.in_chans} {s} {s}",
            hint=f"a batch of images, normalised and padded to {s} x {s} by Sam.preprocess",
        )
        expect_like_weights("ImageEncoderViT", "x", x, self.patch_embed.proj.weight, owner="encoder")
        x = self.patch_embed(x)  # B x 3 x 1024 x 1024 -> B x H x W x E
        if self.pos_embed is not None:
            x = x + self.pos_embed  # + 1 x H x W x E
        x = self.hook_patches(x)

        for blk in self.blocks:
            x = blk(x)  # B x H x W x E

        x = self.neck(rearrange(x, "b y x e -> b e y x"))  # B x E x H x W -> B x C x H x W
        return self.hook_embedding(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    With ``window_size`` S > 0 the attention runs inside S x S windows of the grid;
    with 0 it is global. forward: B x H x W x E -> B x H x W x E.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        act_layer: Type[nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        """Arguments as in ImageEncoderViT; ``input_size`` is the (H, W) grid, which
        sizes the relative-position tables of a global block (a windowed block's are S x S)."""
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=act_layer)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x  # B x H x W x E
        x = self.norm1(x)
        if self.window_size > 0:
            grid_hw = (x.shape[1], x.shape[2])
            x, padded_hw = window_partition(x, self.window_size)  # (B nW) x S x S x E
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, grid_hw)  # B x H x W x E
        else:
            x = self.attn(x)  # B x H x W x E
        x = shortcut + x
        return x + self.mlp(self.norm2(x))  # B x H x W x E


class Attention(nn.Module):
    """Multi-head self-attention over a 2-D grid, with decomposed relative positions.

    forward: B' x Y x X x E -> B' x Y x X x E, where Y x X is a window (S x S) or the
    whole grid (H x W) and n = Y * X.

    Hook points:
      hook_q, hook_k, hook_v  B' x h x n x d
      hook_logits             B' x h x n x n   q k^T / sqrt(d) plus the relative positions
      hook_probs              B' x h x n x n   softmax over the keys: the attention map
      hook_out                B' x h x n x d   probabilities times values, before the heads merge
    In a windowed block B' = B * nW and the windows are in row-major order over the
    padded grid (see ``window_partition``).

    The n x n maps (hook_logits, hook_probs) are only built when a hook of their own asks for
    them (``trace_shapes(..., on_demand=True)``, ``register_forward_hook``), or when
    ``use_fused_attention`` is False; otherwise one fused call
    (``F.scaled_dot_product_attention``, the relative positions as its additive mask)
    computes the same output, equal up to float rounding, faster and without the maps.
    """

    use_fused_attention: bool = True

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        """Arguments:
          dim: E, the channels in and out.
          num_heads: h; d = E / h.
          qkv_bias: whether the joint q, k, v projection has a bias.
          use_rel_pos: add the relative-position terms to the logits.
          rel_pos_zero_init: unused beyond the zero start (kept for the official signature).
          input_size: (Y, X), the grid this attention sees; sizes the tables
            rel_pos_h: (2Y - 1) x d and rel_pos_w: (2X - 1) x d.
        """
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"Attention: num_heads h = {num_heads} must divide the channels E = {dim}")
        self.num_heads = num_heads
        head_dim = dim // num_heads  # d
        self.scale = head_dim**-0.5

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)  # E -> 3 E = (q, k, v) x h x d
        self.proj = nn.Linear(dim, dim)

        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("Attention: use_rel_pos=True needs input_size, the (Y, X) grid it attends over")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))  # (2Y-1) x d
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))  # (2X-1) x d

        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_logits = HookPoint(on_demand=True)  # built only when hooked: see attention_map_hooked
        self.hook_probs = HookPoint(on_demand=True)
        self.hook_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, grid_y, grid_x, _ = x.shape  # B' x Y x X x E
        qkv = self.qkv(x)  # B' x Y x X x 3E
        q, k, v = rearrange(
            qkv, "b y x (three h d) -> three b h (y x) d", three=3, h=self.num_heads
        ).unbind(0)  # each B' x h x n x d
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        grid = (grid_y, grid_x)

        if self.use_fused_attention and not self.attention_map_hooked():
            # Nothing looks at the n x n maps: let the fused kernel compute softmax(q k^T / sqrt(d) + bias) v
            bias = None
            if self.use_rel_pos:
                bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, grid, grid)  # B' x h x n x n
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # B' x h x n x d
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)  # B' x h x n x n
            if self.use_rel_pos:
                logits = add_decomposed_rel_pos(logits, q, self.rel_pos_h, self.rel_pos_w, grid, grid)
            logits = self.hook_logits(logits)
            probs = self.hook_probs(logits.softmax(dim=-1))  # each row sums to 1 over the n keys
            out = probs @ v  # B' x h x n x d

        out = self.hook_out(out)
        out = rearrange(out, "b h (y x) d -> b y x (h d)", y=grid_y)  # B' x Y x X x E
        return self.proj(out)

    def attention_map_hooked(self) -> bool:
        """True when a hook of hook_logits' or hook_probs' own wants the maps (a global module hook, such
        as torchinfo's, does not: it would change the computation it observes)."""
        return self.hook_logits.has_own_hooks() or self.hook_probs.has_own_hooks()


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Cut the grid into S x S windows, zero-padding the bottom and right edges first.

    x: B x H x W x E -> windows (B nW) x S x S x E, and the padded (Hp, Wp);
    nW = (Hp / S) * (Wp / S), windows in row-major order within each image.
    """
    _, height, width, _ = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # B x Hp x Wp x E
    windows = rearrange(
        x, "b (ny sy) (nx sx) e -> (b ny nx) sy sx e", sy=window_size, sx=window_size
    )  # (B nW) x S x S x E
    return windows, (height + pad_h, width + pad_w)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of ``window_partition``: (B nW) x S x S x E -> B x H x W x E, padding dropped."""
    padded_h, padded_w = pad_hw
    height, width = hw
    x = rearrange(
        windows, "(b ny nx) sy sx e -> b (ny sy) (nx sx) e",
        ny=padded_h // window_size, nx=padded_w // window_size,
    )  # B x Hp x Wp x E
    if padded_h > height or padded_w > width:
        x = x[:, :height, :width, :]
    return x.contiguous()


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """The relative-position embedding of every (query, key) pair along one axis.

    rel_pos: L x d, one row per offset, L = 2 max(q_size, k_size) - 1 (linearly resized
    if it is not). Returns q_size x k_size x d: row i, column j holds the embedding of
    the offset i - j (offsets rescaled when the two sizes differ).
    """
    length = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != length:
        resized = F.interpolate(
            rearrange(rel_pos, "l d -> 1 d l"), size=length, mode="linear"
        )  # 1 x d x L
        rel_pos = rearrange(resized, "1 d l -> l d")  # L x d
    # offsets i - j, shifted to be >= 0; the shorter axis is stretched to the longer
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)  # q_size x 1
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)  # 1 x k_size
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)  # q_size x k_size
    return rel_pos[offsets.long()]  # q_size x k_size x d


def rel_pos_terms(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: Tuple[int, int],
    k_size: Tuple[int, int],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two terms of MViTv2's decomposed relative positions.

    q: ... x n_q x d (unscaled queries), n_q = qY * qX. Returns
    rel_h ... x qY x qX x kY (q . R_h[qy, ky], the vertical offset) and
    rel_w ... x qY x qX x kX (q . R_w[qx, kx], the horizontal offset).
    """
    q_y, q_x = q_size
    k_y, k_x = k_size
    r_h = get_rel_pos(q_y, k_y, rel_pos_h)  # qY x kY x d
    r_w = get_rel_pos(q_x, k_x, rel_pos_w)  # qX x kX x d
    q_grid = q.unflatten(-2, (q_y, q_x))  # ... x qY x qX x d
    rel_h = einsum(q_grid, r_h, "... qy qx d, qy ky d -> ... qy qx ky")  # ... x qY x qX x kY
    rel_w = einsum(q_grid, r_w, "... qy qx d, qx kx d -> ... qy qx kx")  # ... x qY x qX x kX
    return rel_h, rel_w


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: Tuple[int, int],
    k_size: Tuple[int, int],
) -> torch.Tensor:
    """Add the decomposed relative positions to attention logits: the logit of query
    (qy, qx) for key (ky, kx) gets q . R_h[qy, ky] + q . R_w[qx, kx].

    attn: ... x n_q x n_k logits (leading axes e.g. B' x h), n_k = kY * kX;
    q: ... x n_q x d with the same leading axes. Returns ... x n_q x n_k.
    """
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    attn = attn.unflatten(-2, q_size).unflatten(-1, k_size)  # ... x qY x qX x kY x kX
    attn = attn + rel_h[..., :, None] + rel_w[..., None, :]
    return attn.flatten(-4, -3).flatten(-2, -1)  # ... x n_q x n_k


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: Tuple[int, int],
    k_size: Tuple[int, int],
) -> torch.Tensor:
    """The same terms as an additive attention mask: q ... x n_q x d -> ... x n_q x n_k."""
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # ... x qY x qX x kY x kX
    return bias.flatten(-4, -3).flatten(-2, -1)  # ... x n_q x n_k


class PatchEmbed(nn.Module):
    """A strided conv that cuts the image into patches: B x 3 x 1024 x 1024 -> B x H x W x E."""

    def __init__(
        self,
        kernel_size: Tuple[int, int] = (16, 16),
        stride: Tuple[int, int] = (16, 16),
        padding: Tuple[int, int] = (0, 0),
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b e y x -> b y x e")  # B x E x H x W -> B x H x W x E
