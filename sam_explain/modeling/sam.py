"""The whole of SAM: image encoder + prompt encoder + mask decoder, with the official
pre- and post-processing around them.

  image (uint8 RGB)  H0 x W0 x 3
  resized            ResizeLongestSide: the longer side becomes 1024   Hr x Wr x 3
  preprocess         (x - pixel_mean) / pixel_std, zero-pad right and bottom to 1024 x 1024
  image_encoder      B x 3 x 1024 x 1024 -> B x C x H x W = B x 256 x 64 x 64
  prompt encoder + mask decoder  -> low-res mask logits B x k x 4H x 4W = B x k x 256 x 256
  postprocess_masks  upsample to 1024 x 1024, crop to Hr x Wr, resize to H0 x W0

Same attribute names, buffers and state-dict keys as ``segment_anything.modeling.Sam``.
"""

from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..shapes.check import ShapeError, expect_finite, expect_flag, expect_shape
from ..utils.transforms import postprocess_masks
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)  # ImageNet mean, in 0..255 RGB
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    mask_threshold: float = 0.0  # logits above it are inside the mask
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        """SAM: predicts masks from an image and prompts.

        Arguments:
          image_encoder: the ViT that makes the B x C x H x W image embedding.
          prompt_encoder: points, boxes and masks -> sparse and dense embeddings.
          mask_decoder: embeddings -> low-res mask logits and IoU predictions.
          pixel_mean, pixel_std: per-channel normalisation of 0..255 RGB pixels.
            Kept as non-persistent buffers (not in the state dict, as in the official model).
        """
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(list(pixel_mean)).view(-1, 1, 1), False)  # 3 x 1 x 1
        self.register_buffer("pixel_std", torch.tensor(list(pixel_std)).view(-1, 1, 1), False)  # 3 x 1 x 1

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the square, padded encoder input (1024)."""
        return self.image_encoder.img_size

    @torch.no_grad()
    def forward(
        self,
        batched_input: List[Dict[str, Any]],
        multimask_output: bool,
    ) -> List[Dict[str, torch.Tensor]]:
        """End to end over a list of images, each with its own prompts.

        Arguments:
          batched_input: one dict per image with
            'image': 3 x Hr x Wr float tensor, already resized (ResizeLongestSide), 0..255;
            'original_size': (H0, W0) before resizing;
            optional 'point_coords' B x N x 2 and 'point_labels' B x N, 'boxes' B x 4
            (in resized pixels), 'mask_inputs' B x 1 x 4H x 4W.
          multimask_output: 3 masks per prompt set (True) or 1 (False).

        Returns one dict per image: 'masks' B x k x H0 x W0 (bool), 'iou_predictions' B x k,
        'low_res_logits' B x k x 4H x 4W; k = 3 or 1.
        """
        multimask_output = expect_flag("Sam.forward", "multimask_output", multimask_output)
        for i, record in enumerate(batched_input):
            self.check_record(record, i)
        images = torch.stack([self.preprocess(record["image"]) for record in batched_input], dim=0)
        image_embeddings = self.image_encoder(images)  # I x 3 x 1024 x 1024 -> I x C x H x W

        outputs = []
        for record, embedding in zip(batched_input, image_embeddings):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )  # B x N' x C, B x C x H x W
            low_res_masks, iou_predictions = self.mask_decoder(
                image_embeddings=embedding.unsqueeze(0),  # 1 x C x H x W
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )  # B x k x 4H x 4W, B x k
            masks = self.postprocess_masks(
                low_res_masks,
                input_size=tuple(record["image"].shape[-2:]),
                original_size=tuple(record["original_size"]),
            )  # B x k x H0 x W0
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou_predictions,
                    "low_res_logits": low_res_masks,
                }
            )
        return outputs

    def check_record(self, record: Dict[str, Any], index: int = 0) -> None:
        """One entry of ``batched_input``: its keys, the image 3 x Hr x Wr, a positive (H0, W0)."""
        where = f"Sam.forward: batched_input[{index}]"
        if not isinstance(record, dict):
            raise ShapeError(f"{where} must be a dict with 'image' and 'original_size', got {type(record).__name__}")
        missing = [k for k in ("image", "original_size") if k not in record]
        if missing:
            raise ShapeError(f"{where} lacks {missing}: each entry needs 'image' (3 x Hr x Wr, resized) and "
                             f"'original_size' (H0, W0), the size before resizing")
        expect_shape(where, "image", record["image"], "3 Hr Wr")
        expect_finite(where, "image", record["image"])
        check_original_size(where, record["original_size"])
        if "point_coords" in record and "point_labels" not in record:
            raise ShapeError(f"{where} has 'point_coords' without 'point_labels' (B x N)")

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: Tuple[int, ...],
        original_size: Tuple[int, ...],
    ) -> torch.Tensor:
        """Low-res logits back onto the original image.

        masks: B x k x 4H x 4W logits -> B x k x 1024 x 1024 (bilinear), cropped to the
        resized image input_size = (Hr, Wr) (the rest was padding), then B x k x H0 x W0
        for original_size = (H0, W0). Still logits; threshold at ``mask_threshold``.
        """
        expect_shape("Sam.postprocess_masks", "masks", masks, "B k 4H 4W")
        check_original_size("Sam.postprocess_masks", original_size)
        s = self.img_size
        if not (0 < input_size[0] <= s and 0 < input_size[1] <= s):
            raise ShapeError(
                f"Sam.postprocess_masks: input_size (Hr, Wr) must be within the {s} x {s} "
                f"encoder input, got {tuple(input_size)}"
            )
        return postprocess_masks(masks, input_size, original_size, s)  # B x k x H0 x W0

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the colours and zero-pad to a square.

        x: ... x 3 x Hr x Wr (0..255, the longer side already ``img_size``)
        -> ... x 3 x 1024 x 1024, padded on the right and the bottom.
        """
        s = self.img_size
        if x.dim() not in (3, 4) or x.shape[-3] != 3 or x.shape[-2] > s or x.shape[-1] > s:
            raise ShapeError(
                f"Sam.preprocess: x must be 3 x Hr x Wr or B x 3 x Hr x Wr with Hr, Wr <= {s} "
                f"(resize with ResizeLongestSide({s}) first), got "
                f"{' x '.join(str(v) for v in x.shape)}"
            )
        x = (x - self.pixel_mean) / self.pixel_std  # ... x 3 x Hr x Wr
        pad_h, pad_w = s - x.shape[-2], s - x.shape[-1]
        return F.pad(x, (0, pad_w, 0, pad_h))  # ... x 3 x 1024 x 1024


def check_original_size(where: str, original_size: object) -> None:
    """(H0, W0): two whole numbers of pixels, both at least 1."""
    size = tuple(original_size) if isinstance(original_size, (tuple, list, torch.Size)) else None
    if size is None or len(size) != 2 or not all(isinstance(v, int) or type(v).__name__.startswith("int") for v in size) \
            or min(int(v) for v in size) < 1:
        raise ShapeError(f"{where}: original_size must be (H0, W0), two whole numbers >= 1 (the image's size before "
                         f"resizing), got {original_size!r}")
