"""Set an image once, then ask for masks from as many prompts as you like.

    predictor = SamPredictor(build_sam(checkpoint="sam_vit_b_01ec64.pth"))
    predictor.set_image(image)                               # H0 x W0 x 3 uint8 RGB
    masks, iou, low_res = predictor.predict(point_coords=np.array([[500, 375]]),
                                            point_labels=np.array([1]))
    # masks k x H0 x W0 bool, iou k float32, low_res k x 256 x 256 float32 logits (k = 3)

The contract (arguments, shapes, dtypes) is the official ``SamPredictor``'s. Hooks on
``predictor.model`` (e.g. the decoder's attention hook points) fire during ``predict``;
hooks on ``predictor.model.image_encoder`` fire during ``set_image``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from .modeling.sam import Sam
from .shapes.check import ShapeError, expect_finite, expect_labels, expect_shape
from .utils.transforms import ResizeLongestSide, check_image


class SamPredictor:
    def __init__(self, sam_model: Sam) -> None:
        """Wraps ``sam_model``: ``set_image`` runs the image encoder once, ``predict``
        runs the prompt encoder and the mask decoder on the stored embedding."""
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute the image embedding of ``image``: H0 x W0 x 3 uint8 in ``image_format``
        ('RGB' or 'BGR'). It is resized (longer side 1024), normalised, padded and encoded."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        check_image(image, "SamPredictor.set_image")
        if image_format != self.model.image_format:
            image = image[..., ::-1]  # swap the colour order
        input_image = self.transform.apply_image(image)  # Hr x Wr x 3 uint8
        input_image_torch = torch.as_tensor(input_image, device=self.device)
        input_image_torch = input_image_torch.permute(2, 0, 1).contiguous()[None]  # 1 x 3 x Hr x Wr
        self.set_torch_image(input_image_torch, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Tuple[int, ...]) -> None:
        """Like ``set_image`` for an image already resized with ResizeLongestSide:
        transformed_image 1 x 3 x Hr x Wr (0..255), original_image_size (H0, W0)."""
        s = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or max(shape[2:]) != s:
            raise ShapeError(
                f"SamPredictor.set_torch_image: transformed_image must be 1 x 3 x Hr x Wr with "
                f"max(Hr, Wr) = {s}, got {' x '.join(str(v) for v in shape)}"
            )
        # Encode first: a failure leaves the previous image in place.
        features = self.model.image_encoder(self.model.preprocess(transformed_image))  # 1 x C x H x W
        self.reset_image()
        self.original_size = tuple(int(v) for v in original_image_size)
        self.input_size = tuple(int(v) for v in shape[-2:])
        self.features = features
        self.is_image_set = True

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set on the current image.

        Arguments:
          point_coords: N x 2 (x, y) in original-image pixels; point_labels: N (1 fg, 0 bg).
          box: 4 (x0, y0, x1, y1) in original-image pixels.
          mask_input: 1 x 4H x 4W = 1 x 256 x 256 logits, e.g. a previous low_res output.
          multimask_output: k = 3 masks (True) or 1 (False).
          return_logits: return the masks as logits instead of thresholding them.

        Returns (numpy): masks k x H0 x W0 (bool, or float32 logits), iou_predictions k
        (float32), low_res_logits k x 4H x 4W (float32).
        """
        self._require_image()
        coords_torch = labels_torch = box_torch = mask_input_torch = None
        if point_coords is None and point_labels is not None:
            raise ShapeError("SamPredictor.predict: point_labels (N) given without point_coords (N x 2)")
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels (N) must be given with point_coords (N x 2)")
            coords = np.asarray(point_coords)
            labels = np.asarray(point_labels)
            if coords.ndim != 2 or coords.shape[1] != 2 or labels.shape != (coords.shape[0],):
                raise ShapeError(
                    f"SamPredictor.predict: point_coords must be N x 2 and point_labels N, got "
                    f"{' x '.join(map(str, coords.shape))} and {' x '.join(map(str, labels.shape)) or '(scalar)'}"
                )
            where = "SamPredictor.predict"
            expect_finite(where, "point_coords", _as_tensor(where, "point_coords", coords))
            expect_labels(where, "point_labels", _as_tensor(where, "point_labels", labels), (-1, 0, 1),
                          "1 (foreground), 0 (background) or -1 (padding)")  # before the cast to int
            coords = self.transform.apply_coords(coords, self.original_size)  # N x 2, resized pixels
            coords_torch = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]  # 1 x N x 2
            labels_torch = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]  # 1 x N
        if box is not None:
            box = np.asarray(box)
            if box.size != 4:
                raise ShapeError(f"SamPredictor.predict: box must be 4 numbers (x0, y0, x1, y1), got shape {box.shape}")
            expect_finite("SamPredictor.predict", "box", _as_tensor("SamPredictor.predict", "box", box))
            box = self.transform.apply_boxes(box, self.original_size)  # 1 x 4
            box_torch = torch.as_tensor(box, dtype=torch.float, device=self.device)  # 1 x 4
        if mask_input is not None:
            mask = _as_tensor("SamPredictor.predict", "mask_input", mask_input)
            expect_shape("SamPredictor.predict", "mask_input", mask, "1 4H 4W",
                         **dict(zip(("4H", "4W"), self.model.prompt_encoder.mask_input_size)),
                         hint="low-res logits, e.g. a previous low_res output")
            if not mask.is_floating_point():
                raise ShapeError(f"SamPredictor.predict: mask_input must be low-res logits (floating point), got "
                                 f"dtype {mask.dtype}")
            expect_finite("SamPredictor.predict", "mask_input", mask)
            mask_input_torch = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)[None]  # 1 x 1 x 4H x 4W

        masks, iou_predictions, low_res_masks = self.predict_torch(
            coords_torch, labels_torch, box_torch, mask_input_torch, multimask_output, return_logits=return_logits
        )
        return (
            masks[0].detach().cpu().numpy(),  # k x H0 x W0
            iou_predictions[0].detach().cpu().numpy(),  # k
            low_res_masks[0].detach().cpu().numpy(),  # k x 4H x 4W
        )

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for B prompt sets at once, prompts already in resized pixels
        (``predictor.transform.apply_coords_torch`` / ``apply_boxes_torch``).

        Arguments: point_coords B x N x 2 and point_labels B x N, boxes B x 4,
        mask_input B x 1 x 4H x 4W; each may be None.
        Returns (torch): masks B x k x H0 x W0, iou_predictions B x k, low_res_logits B x k x 4H x 4W.
        """
        self._require_image()
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res_masks, iou_predictions = self.model.mask_decoder(
            image_embeddings=self.features,  # 1 x C x H x W, shared by the B prompt sets
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,  # B x N' x C
            dense_prompt_embeddings=dense,  # B x C x H x W
            multimask_output=multimask_output,
        )  # B x k x 4H x 4W, B x k
        masks = self.model.postprocess_masks(low_res_masks, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou_predictions, low_res_masks

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, 1 x C x H x W (1 x 256 x 64 x 64)."""
        self._require_image()
        return self.features

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")


def _as_tensor(where: str, name: str, value) -> torch.Tensor:
    """A numpy array (or anything array-like) of numbers as a tensor, for the checks; ShapeError otherwise."""
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ShapeError(f"{where}: {name} must be an array of numbers, got {type(value).__name__} ({err})") from None
