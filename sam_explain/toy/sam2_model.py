"""The toy SAM 2: the toy world trained for SAM 2.1's decoder side.

    model = sam_explain.toy_sam2_model()                 # the shipped, trained weights (toy_sam2.safetensors)
    scene = sam_explain.toy.make_scene(seed=3)
    emb, feats = model.embed(scene.image)                # 1 x C x H x W = 1 x 256 x 64 x 64,
                                                         # [feat_s0 1 x 32 x 256 x 256, feat_s1 1 x 64 x 128 x 128]
    masks, iou, score = model.predict(emb, feats, points=[(120, 80)])  # 1 x 3 x 256 x 256 logits, 1 x 3, 1 x 1

The modules are ``image_encoder`` (``ToySam2ImageEncoder``: the toy SAM's encoder and the stride-4 /
stride-8 levels, sam2_encoder.py), ``prompt_encoder`` and ``mask_decoder``: ``sam_explain.sam2``'s
PromptEncoder and MaskDecoder in SAM 2.1's configuration (object-score token and head, high-resolution
skips, IoU sigmoid, the stability switch, multimask tokens as object pointer), at SAM 2.1's sizes. The
geometry is the toy SAM's (model.py): 256 x 256 images, a 64 x 64 grid, input frame 256 x 256, so
points and boxes are toy-image pixels and the 4H x 4W masks are the image's pixels.

``toy_sam2_from_toy_sam`` builds one from a trained toy SAM (where training starts): every tensor the
two share is the toy SAM's (``sam_explain.sam2.sam2_from_sam``, and the toy's image encoder); the
object-score token and head keep their seeded initialisation, ``conv_s0`` / ``conv_s1`` start at zero
(so the skips add nothing until trained), the high-resolution branch at PyTorch's initialisation.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..checkpoint import CheckpointError
from ..sam2.build import build_sam2_mask_decoder, build_sam2_prompt_encoder, sam2_from_sam
from ..sam2.prompts import run_sam2_decoder
from .model import ToyModel, ToyParts, load_toy_weights
from .sam2_encoder import HR_DIMS, ToySam2ImageEncoder
from .scenes import IMAGE_SIZE

SAM2_WEIGHTS_NAME = "toy_sam2.safetensors"
TRAIN_COMMAND = ("sam-explain train-toy --model sam2 --out PATH (--schedule gpu --device cuda on one GPU, "
                 "--schedule cpu on a CPU)")


class ToySam2Model(ToyParts):
    """Image encoder, SAM 2.1's prompt encoder and mask decoder; see the module docstring."""

    def __init__(self, encoder_config: Optional[dict] = None, image_size: int = IMAGE_SIZE) -> None:
        """encoder_config: ``ToySam2ImageEncoder`` arguments (default: the toy SAM's encoder, D0, D1 = 32, 64);
        image_size: H0 = W0 (256)."""
        super().__init__(encoder_config, image_size)
        self.image_encoder = ToySam2ImageEncoder(image_size=image_size, **self.encoder_config)
        grid = image_size // self.image_encoder.patch_embed.stride[0]  # H = W = 64
        self.prompt_encoder = build_sam2_prompt_encoder(
            image_embedding_size=(grid, grid), input_image_size=(image_size, image_size))
        self.mask_decoder = build_sam2_mask_decoder()  # SAM 2.1's flags and build_sam2's stability switch

    def encode(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """S x 3 x H0 x W0 float in [0, 1] -> what the decoder takes, with autograd: the image embedding
        S x C x H x W, feat_s0 S x C/8 x 4H x 4W and feat_s1 S x C/4 x 2H x 2W (the encoder's stride-4 and
        stride-8 levels through the decoder's ``conv_s0`` / ``conv_s1``, as ``SAM2Base.forward_image`` does
        once per image)."""
        embedding, backbone_s0, backbone_s1 = self.image_encoder(images)  # S x C x H x W, S x C x 4H x 4W, S x C x 2H x 2W
        feat_s0 = self.mask_decoder.conv_s0(backbone_s0)  # S x C/8 x 4H x 4W
        feat_s1 = self.mask_decoder.conv_s1(backbone_s1)  # S x C/4 x 2H x 2W
        return embedding, feat_s0, feat_s1

    @torch.no_grad()
    def backbone(self, image: Union[np.ndarray, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The image encoder's three levels, before the decoder's 1 x 1 convs: the embedding 1 x C x H x W,
        backbone_s0 1 x C x 4H x 4W and backbone_s1 1 x C x 2H x 2W (S x ... for S images); what
        ``sam_explain.sam2.project_high_res_features(model.mask_decoder, s0, s1)`` takes."""
        return self.image_encoder(self.image_tensor(image))

    @torch.no_grad()
    def embed(self, image: Union[np.ndarray, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """A toy image (H0 x W0 x 3 uint8, or S x 3 x H0 x W0 float) -> (image embedding 1 x C x H x W,
        [feat_s0 1 x C/8 x 4H x 4W, feat_s1 1 x C/4 x 2H x 2W]), S in place of 1 for S images: what SAM 2's
        image predictor keeps per image (``image_embed``, ``high_res_feats``) and the decoder takes."""
        embedding, feat_s0, feat_s1 = self.encode(self.image_tensor(image))
        return embedding, [feat_s0, feat_s1]

    @torch.no_grad()
    def predict(
        self,
        image_embeddings: torch.Tensor,
        high_res_features: Sequence[torch.Tensor],
        points: Optional[Sequence[Tuple[float, float]]] = None,
        labels: Optional[Sequence[int]] = None,
        box: Optional[Sequence[float]] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One prompt set on one image: ``embed``'s two outputs (1 x C x H x W and the two maps).

        points: N clicks (x, y) in toy-image pixels; labels: N of 1 (foreground, the default) or 0
        (background); box: (x0, y0, x1, y1), given as two points labelled 2 and 3 before the clicks, as
        SAM 2's image predictor does; mask_input: 1 x 1 x 4H x 4W logits.
        Returns masks 1 x K x 4H x 4W (logits; K = 3, or 1 with multimask_output=False: token 0's mask,
        or the best multimask output where the stability switch finds token 0's unstable), predicted IoU
        1 x K (in 0..1) and the object score 1 x 1 (a logit: > 0 means an object is there; SAM 2's video
        path sets every mask logit to -1024 where it is not).
        """
        prompts = self.one_prompt_set(points, labels, box, mask_input)
        masks, iou_pred, _, object_score_logits, _, _ = run_sam2_decoder(
            self.prompt_encoder, self.mask_decoder, image_embeddings, prompts, multimask_output,
            high_res_features=list(high_res_features))
        return masks, iou_pred, object_score_logits


def toy_sam2_from_toy_sam(toy: ToyModel, hr_dims: Tuple[int, int] = HR_DIMS, seed: int = 0) -> ToySam2Model:
    """A toy SAM 2 (train mode, on ``toy``'s device) starting from a trained toy SAM: its image encoder's
    weights, and ``sam2_from_sam`` for the prompt encoder and the decoder (the transformer, the tokens, the
    upscaling, the hypernetworks, the IoU head). New: the object-score token and head (``sam2_from_sam``'s
    seeded initialisation with ``seed``), ``conv_s0`` / ``conv_s1`` at zero, so that the skips start by
    adding nothing to the toy SAM's upscaling, and the encoder's high-resolution branch (``hr_*``, at the
    current torch seed's initialisation)."""
    model = ToySam2Model(encoder_config={**toy.encoder_config, "hr_dims": tuple(hr_dims)}, image_size=toy.image_size)
    missing, unexpected = model.image_encoder.load_state_dict(toy.image_encoder.state_dict(), strict=False)
    if unexpected or not all(key.startswith("hr_") for key in missing):  # the trunk is the toy SAM's, key for key
        raise ValueError(f"toy_sam2_from_toy_sam: the toy SAM's image encoder does not fit the trunk: "
                         f"unexpected {unexpected}, missing {[k for k in missing if not k.startswith('hr_')]}")
    record = sam2_from_sam(toy.prompt_encoder, toy.mask_decoder, seed=seed)
    model.prompt_encoder.load_state_dict(record.prompt_encoder.state_dict(), strict=True)
    model.mask_decoder.load_state_dict(record.mask_decoder.state_dict(), strict=True)
    with torch.no_grad():
        for conv in (model.mask_decoder.conv_s0, model.mask_decoder.conv_s1):
            conv.weight.zero_()
            conv.bias.zero_()
    return model.to(toy.device).train()


def default_sam2_weights_path() -> Path:
    """Where the shipped toy SAM 2 weights are: sam_explain/weights/toy_sam2.safetensors."""
    return Path(str(resources.files("sam_explain") / "weights" / SAM2_WEIGHTS_NAME))


def toy_sam2_model(path: Optional[Union[str, Path]] = None,
                   device: Union[str, torch.device] = "cpu") -> ToySam2Model:
    """The trained toy SAM 2 (image encoder, SAM 2.1's prompt encoder and mask decoder) in eval mode, fp32.

    ``path`` defaults to the weights shipped in the package (sam_explain/weights/toy_sam2.safetensors).
    The file's metadata (schedule, configuration, seed, commit, figures) is in ``model.metadata``.
    Raises FileNotFoundError, naming the command that trains them, where there is no file.
    """
    path = Path(path) if path is not None else default_sam2_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"toy SAM 2 weights not found at {path}; train them with `{TRAIN_COMMAND}`")
    if holds_toy_sam_weights(path):
        raise CheckpointError(f"{path} holds a toy SAM's weights (SAM's decoder: no object-score token, no conv_s0 / "
                              f"conv_s1), expected a toy SAM 2's; load it with sam_explain.toy_model(), or train a toy "
                              f"SAM 2 from it with `{TRAIN_COMMAND} --init {path}`")
    return load_toy_weights(path, ToySam2Model, "toy SAM 2", "toy SAM 2 model", device)


def holds_toy_sam_weights(path: Path) -> bool:
    """Whether the safetensors file ``path`` holds a toy SAM's decoder (SAM's: no object-score token), by
    its key names alone; False for anything else, a file that is not safetensors included."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    except (SafetensorError, OSError):
        return False
    return "mask_decoder.iou_token.weight" in keys and "mask_decoder.obj_score_token.weight" not in keys
