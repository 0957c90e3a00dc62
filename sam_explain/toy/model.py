"""The toy SAM: a small image encoder + SAM's PromptEncoder and MaskDecoder at SAM's sizes.

    model = sam_explain.toy_model()                     # the shipped, trained weights
    scene = sam_explain.toy.make_scene(seed=3)
    emb = model.embed(scene.image)                      # 1 x C x H x W = 1 x 256 x 64 x 64
    masks, iou = model.predict(emb, points=[(120, 80)])  # 1 x 3 x 256 x 256 logits, 1 x 3

Geometry: the toy image is H0 x W0 = 256 x 256 pixels, and the prompt encoder's
``input_image_size`` is (256, 256), so point and box coordinates are toy-image pixels
(x, y). The 4H x 4W = 256 x 256 low-res masks therefore line up one-to-one with the
image's pixels.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np
import torch
from torch import nn

from safetensors import SafetensorError, safe_open

from ..checkpoint import CheckpointError, check_state_dict
from ..modeling import build_mask_decoder, build_prompt_encoder
from ..prompts import Prompts
from .encoder import ToyImageEncoder
from .scenes import IMAGE_SIZE

WEIGHTS_NAME = "toy_sam.safetensors"


class ToyParts(nn.Module):
    """What the toy SAM and the toy SAM 2 (``sam2_model.ToySam2Model``) share: an ``image_encoder``
    (a ToyImageEncoder or a subclass), a ``prompt_encoder`` and a ``mask_decoder`` that subclasses build,
    the toy image's geometry, and the conversion of an image to the encoder's input."""

    image_encoder: nn.Module
    prompt_encoder: nn.Module
    mask_decoder: nn.Module

    def __init__(self, encoder_config: Optional[Dict] = None, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.image_size = image_size
        self.encoder_config = dict(encoder_config or {})
        self.metadata: Dict[str, str] = {}

    def set_image_size(self, image_size: int) -> None:
        """Run on H0 x W0 = image_size x image_size images: the grid becomes H = W = image_size / 4
        and the masks 4H x 4W = image_size. Used by training, which starts on small images."""
        grid = image_size // self.image_encoder.patch_embed.stride[0]
        self.image_size = image_size
        self.image_encoder.image_size = image_size
        pe = self.prompt_encoder
        pe.image_embedding_size = (grid, grid)
        pe.input_image_size = (image_size, image_size)
        pe.mask_input_size = (4 * grid, 4 * grid)

    @property
    def device(self) -> torch.device:
        return self.mask_decoder.iou_token.weight.device

    def one_prompt_set(
        self,
        points: Optional[Sequence[Tuple[float, float]]] = None,
        labels: Optional[Sequence[int]] = None,
        box: Optional[Sequence[float]] = None,
        mask_input: Optional[torch.Tensor] = None,
    ) -> Prompts:
        """``predict``'s arguments as one prompt set (B = 1) on the model's device: N clicks (x, y) with
        N labels (1 when not given) -> points 1 x N x 2 and 1 x N; a box (x0, y0, x1, y1) -> 1 x 4."""
        pts = None
        if points is not None:
            coords = torch.as_tensor(points, dtype=torch.float32, device=self.device).reshape(1, -1, 2)  # 1 x N x 2
            if labels is None:
                labels = [1] * coords.shape[1]
            lab = torch.as_tensor(labels, dtype=torch.int64, device=self.device).reshape(1, -1)  # 1 x N
            pts = (coords, lab)
        boxes = None if box is None else torch.as_tensor(box, dtype=torch.float32, device=self.device).reshape(1, 4)
        return Prompts(points=pts, boxes=boxes, masks=mask_input)

    def image_tensor(self, image: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """H0 x W0 x 3 uint8 (one image), or S x 3 x H0 x W0 float in [0, 1] -> S x 3 x H0 x W0 float."""
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(image)
        if image.dtype == torch.uint8:
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"a uint8 image must be H0 x W0 x 3, got {tuple(image.shape)}")
            image = image.permute(2, 0, 1)[None].float() / 255.0  # 1 x 3 x H0 x W0
        if image.ndim != 4 or image.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(
                f"images must be S x 3 x H0 x W0 = S x 3 x {self.image_size} x {self.image_size} "
                f"(or H0 x W0 x 3 uint8), got {tuple(image.shape)}"
            )
        return image.to(self.device, torch.float32)


class ToyModel(ToyParts):
    def __init__(self, encoder_config: Optional[Dict] = None, image_size: int = IMAGE_SIZE) -> None:
        super().__init__(encoder_config, image_size)
        self.image_encoder = ToyImageEncoder(image_size=image_size, **self.encoder_config)
        grid = image_size // self.image_encoder.patch_embed.stride[0]  # H = W = 64
        self.prompt_encoder = build_prompt_encoder(
            image_embedding_size=(grid, grid), input_image_size=(image_size, image_size)
        )
        self.mask_decoder = build_mask_decoder()

    @torch.no_grad()
    def embed(self, image: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """The image embedding of a toy image: 1 x C x H x W (or S x C x H x W for S images)."""
        return self.image_encoder(self.image_tensor(image))

    @torch.no_grad()
    def predict(
        self,
        image_embeddings: torch.Tensor,
        points: Optional[Sequence[Tuple[float, float]]] = None,
        labels: Optional[Sequence[int]] = None,
        box: Optional[Sequence[float]] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One prompt set on one image embedding (1 x C x H x W).

        points: N clicks (x, y) in toy-image pixels; labels: N of 1 (foreground, the default)
        or 0 (background); box: (x0, y0, x1, y1); mask_input: 1 x 1 x 4H x 4W logits.
        Returns masks 1 x K x 4H x 4W (logits; K = 3 or 1) and predicted IoU 1 x K.
        """
        prompts = self.one_prompt_set(points, labels, box, mask_input)
        sparse, dense = self.prompt_encoder(points=prompts.points, boxes=prompts.boxes, masks=prompts.masks)
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )


def save_toy_weights(model: ToyModel, path: Union[str, Path], metadata: Dict[str, object], half: bool = True) -> None:
    """Write the model's weights as safetensors (fp16 by default) with JSON-able metadata."""
    from safetensors.torch import save_file

    state = {k: (v.detach().to("cpu").contiguous().half() if half and v.is_floating_point() else v.detach().cpu().contiguous())
             for k, v in model.state_dict().items()}
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()}
    meta["encoder_config"] = json.dumps(model.encoder_config)
    save_file(state, str(path), metadata=meta)


def default_weights_path() -> Path:
    return Path(str(resources.files("sam_explain") / "weights" / WEIGHTS_NAME))


def toy_model(path: Optional[Union[str, Path]] = None, device: Union[str, torch.device] = "cpu") -> ToyModel:
    """The trained toy SAM (image encoder, prompt encoder, mask decoder) in eval mode, fp32.

    ``path`` defaults to the weights shipped in the package (sam_explain/weights/toy_sam.safetensors).
    The file's metadata (training schedule, seed, commit, measured figures) is in ``model.metadata``.
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"toy weights not found at {path}; train them with `sam-explain train-toy`")
    return load_toy_weights(path, ToyModel, "toy", "toy model", device)


M = TypeVar("M", bound=ToyParts)


def load_toy_weights(path: Path, model_class: Type[M], what: str, model_name: str,
                     device: Union[str, torch.device] = "cpu") -> M:
    """A model of ``model_class`` (built with the file's ``encoder_config``) with the weights of the safetensors
    file ``path``, eval mode, fp32, its metadata in ``model.metadata``. The keys and shapes are checked against
    a model built on the meta device before anything is built for real; a file that is not one (or holds
    another model's weights) raises CheckpointError naming ``what`` ("toy") and ``model_name``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        encoder_config = json.loads(metadata.get("encoder_config", "{}"))
        encoder_config = {k: tuple(v) if isinstance(v, list) else v for k, v in encoder_config.items()}  # JSON lists
        with torch.device("meta"):
            shell = model_class(encoder_config=encoder_config)  # shapes only: checked before building
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: not {what} weights written by train-toy ({err})") from err
    check_state_dict(shell.state_dict(), state, f"{what} weights {path}", model_name, CheckpointError)
    model = model_class(encoder_config=encoder_config)
    model.load_state_dict(state, strict=True)
    model.metadata = metadata
    return model.to(device).eval()
