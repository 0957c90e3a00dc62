"""SAM's mask decoder: output tokens + prompt tokens -> two-way transformer -> masks and IoU.

The whole path, with SAM's numbers (C = 256, H x W = 64 x 64, M = 4 mask tokens):

  output_tokens   iou_token ++ mask_tokens           (1 + M) x C  -> B x 5 x C
  tokens          output_tokens ++ sparse prompts     B x T x C,  T = 5 + N'
  src             image embedding repeated over B, plus the dense prompt   B x C x H x W
  pos_src         image_pe repeated over B            B x C x H x W
  hs, src         the two-way transformer             B x T x C, B x HW x C
  iou_token_out   hs[:, 0]                            B x C
  mask_tokens_out hs[:, 1 : 1 + M]                    B x M x C
  upscaled        two stride-2 transposed convs       B x C/8 x 4H x 4W = B x 32 x 256 x 256
  hyper_in        one MLP per mask token              B x M x C/8
  masks           hyper_in . upscaled                 B x M x 4H x 4W
  iou_pred        IoU head on iou_token_out           B x M
  forward()       multimask: tokens 1..M-1; single: token 0
"""

from typing import List, Tuple, Type

import torch
from einops import einsum, rearrange, repeat
from torch import nn
from torch.nn import functional as F

from ..shapes.check import ShapeError, expect_finite, expect_flag, expect_like_weights, expect_shape
from .common import HookPoint, LayerNorm2d


class MaskDecoder(nn.Module):
    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: Type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        """Predicts masks from an image embedding and prompt embeddings.

        Arguments:
          transformer_dim: C, the channels of the embeddings and tokens.
          transformer: the module that lets tokens and image attend to each other
            (a TwoWayTransformer in SAM).
          num_multimask_outputs: masks returned with multimask_output=True; the
            decoder has M = num_multimask_outputs + 1 mask tokens.
          activation: activation of the upscaling path (exact GELU in SAM).
          iou_head_depth, iou_head_hidden_dim: layers and width of the IoU MLP.
        """
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer

        self.num_multimask_outputs = num_multimask_outputs

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

        self.hook_output_tokens = HookPoint()
        self.hook_tokens = HookPoint()
        self.hook_src = HookPoint()
        self.hook_pos_src = HookPoint()
        self.hook_hs = HookPoint()
        self.hook_iou_token_out = HookPoint()
        self.hook_mask_tokens_out = HookPoint()
        self.hook_upscaled_embedding = HookPoint()
        self.hook_hyper_in = HookPoint()
        self.hook_masks = HookPoint()
        self.hook_iou_pred = HookPoint()

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompt sets on one image.

        Arguments:
          image_embeddings: 1 x C x H x W (one image, shared by every prompt set), or
            B x C x H x W (one image per prompt set, paired by index; an extension of
            the official contract, which accepts only one image).
          image_pe: 1 x C x H x W, the dense positional encoding (PromptEncoder.get_dense_pe()).
          sparse_prompt_embeddings: B x N' x C, points and box corners.
          dense_prompt_embeddings: B x C x H x W, the mask prompt (or no_mask_embed).
          multimask_output: True returns the M - 1 ambiguity-aware masks, False the single one.

        Returns:
          masks: B x (M - 1) x 4H x 4W if multimask_output else B x 1 x 4H x 4W (logits).
          iou_pred: B x (M - 1) or B x 1, the predicted IoU of each mask.
        """
        multimask_output = expect_flag("MaskDecoder", "multimask_output", multimask_output)
        masks, iou_pred = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
        )
        # B x M x 4H x 4W -> B x (M-1) x 4H x 4W (tokens 1..M-1) or B x 1 x 4H x 4W (token 0)
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice, :, :], iou_pred[:, mask_slice]

    def check_inputs(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> Tuple[int, int, int]:
        """Validate the decoder's inputs; return (B, H, W). Raises ShapeError."""
        where = "MaskDecoder"
        C = self.transformer_dim
        sizes = expect_shape(where, "sparse_prompt_embeddings", sparse_prompt_embeddings, "B N' C", C=C)
        B = sizes["B"]
        sizes = expect_shape(
            where, "image_embeddings", image_embeddings, "I C H W", C=C,
            hint="I, the number of images, must be 1 or B",
        )
        I, H, W = sizes["I"], sizes["H"], sizes["W"]
        if I not in (1, B):
            raise ShapeError(
                f"{where}: image_embeddings has I = {I} images but sparse_prompt_embeddings has "
                f"B = {B} prompt sets; give one image (I = 1, shared by all B prompt sets) or "
                f"one image per prompt set (I = B)"
            )
        expect_shape(where, "image_pe", image_pe, "1 C H W", C=C, H=H, W=W,
                     hint="the positional encoding of the H x W grid, PromptEncoder.get_dense_pe()")
        expect_shape(where, "dense_prompt_embeddings", dense_prompt_embeddings, "B C H W",
                     B=B, C=C, H=H, W=W,
                     hint="B is the number of prompt sets, from sparse_prompt_embeddings")
        for name, t in (("image_embeddings", image_embeddings), ("image_pe", image_pe),
                        ("sparse_prompt_embeddings", sparse_prompt_embeddings),
                        ("dense_prompt_embeddings", dense_prompt_embeddings)):
            expect_like_weights(where, name, t, self.iou_token.weight, owner="decoder")
            expect_finite(where, name, t)
        return B, H, W

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """All M masks and IoU predictions, before the multimask slice. See ``forward``."""
        B, H, W = self.check_inputs(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )

        # The output tokens: one IoU token and M mask tokens, the same for every prompt set.
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)  # (1+M) x C
        output_tokens = self.hook_output_tokens(repeat(output_tokens, "t c -> b t c", b=B))  # B x (1+M) x C
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)  # B x T x C, T = 1+M+N'
        tokens = self.hook_tokens(tokens)

        # The image embedding, once per prompt set, plus that set's dense prompt.
        if image_embeddings.shape[0] == 1:
            src = repeat(image_embeddings, "1 c h w -> b c h w", b=B)  # B x C x H x W
        else:
            src = image_embeddings  # already B x C x H x W: one image per prompt set
        src = self.hook_src(src + dense_prompt_embeddings)  # B x C x H x W
        pos_src = self.hook_pos_src(repeat(image_pe, "1 c h w -> b c h w", b=B))  # B x C x H x W

        hs, src = self.transformer(src, pos_src, tokens)  # B x T x C, B x HW x C
        hs = self.hook_hs(hs)
        iou_token_out = self.hook_iou_token_out(hs[:, 0, :])  # B x C
        mask_tokens_out = self.hook_mask_tokens_out(hs[:, 1 : 1 + self.num_mask_tokens, :])  # B x M x C

        # Upscale the image side 4x: B x C x H x W -> B x C/4 x 2H x 2W -> B x C/8 x 4H x 4W
        src = rearrange(src, "b (h w) c -> b c h w", h=H, w=W)  # B x C x H x W
        upscaled_embedding = self.hook_upscaled_embedding(self.output_upscaling(src))

        # Each mask token becomes C/8 weights through its own MLP ...
        hyper_in_list: List[torch.Tensor] = [
            mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)
        ]  # M tensors of B x C/8
        hyper_in = self.hook_hyper_in(torch.stack(hyper_in_list, dim=1))  # B x M x C/8
        # ... and a mask is those weights times the C/8 upscaled feature maps.
        masks = einsum(
            hyper_in, upscaled_embedding, "b m c8, b c8 h4 w4 -> b m h4 w4"
        )  # B x M x 4H x 4W
        masks = self.hook_masks(masks)

        iou_pred = self.hook_iou_pred(self.iou_prediction_head(iou_token_out))  # B x M
        return masks, iou_pred


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (no activation after the last).

    input_dim -> hidden_dim -> ... -> hidden_dim -> output_dim, on the last axis.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip([input_dim] + hidden, hidden + [output_dim])
        )
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        if self.sigmoid_output:
            x = torch.sigmoid(x)
        return x
