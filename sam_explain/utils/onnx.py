"""The deployed decoder: SAM's prompt encoder, mask decoder and mask post-processing as one ONNX graph.

The official path is ``segment_anything/utils/onnx.py``; its ``SamOnnxModel`` is what Meta's
``scripts/export_onnx_model.py`` traces into the file that SAM's web demo runs. ``SamOnnxModel`` here
is a drop-in for it, built from sam-explain's annotated modules (their weights, their code), and
``export_onnx_model`` restates the official script's export call. ``OnnxDecoder`` runs an exported
file in onnxruntime and checks its inputs first: the graph itself checks nothing.

The graph's interface, the official one. Batch size 1; N points, dynamic; C x H x W the image-embedding
grid (256 x 64 x 64 in SAM); S x S the padded square input of the image encoder (1024 x 1024); H0 x W0
the original image; M mask tokens (4); K = M, or 1 with ``return_single_mask``::

  inputs (all float32)
    image_embeddings  1 x C x H x W     the image encoder's output
    point_coords      1 x N x 2         (x, y) in the resized frame: the image resized so that its
                                        longest side is S (ResizeLongestSide(S).apply_coords)
    point_labels      1 x N             1 foreground, 0 background, 2 box top-left, 3 box
                                        bottom-right, -1 padding (see ``onnx_prompt``)
    mask_input        1 x 1 x 4H x 4W   low-res mask logits (a previous low_res_masks), used when
    has_mask_input    1                 is 1, ignored when it is 0
    orig_im_size      2                 (H0, W0): height first
  outputs
    masks             1 x K x H0 x W0   mask logits over the original image (> 0 is inside)
    iou_predictions   1 x K             the predicted IoU of each mask
    low_res_masks     1 x K x 4H x 4W   mask logits before the upscaling

How it differs from the PyTorch path (``PromptEncoder`` + ``MaskDecoder`` + ``postprocess_masks``):

* Points and boxes travel together on the point path: a box is two points labelled 2 and 3. Without a
  box the caller appends the padding point ((0, 0), label -1), which ``PromptEncoder`` adds itself.
* All M masks are computed. Without ``return_single_mask`` all M come back, token 0 (the single-mask
  output) first; with it, one mask is picked by the official score (``select_masks``).
* The upscaling to S x S, the crop to the resized Hr x Wr and the resize to H0 x W0 are inside the graph.
"""

from __future__ import annotations

import importlib.util
import os
import types
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from ..modeling.common import HookPoint
from ..shapes.check import ShapeError, expect_finite, expect_labels, expect_shape, fmt_shape

ONNX_INPUTS: Tuple[str, ...] = (
    "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size",
)
ONNX_OUTPUTS: Tuple[str, ...] = ("masks", "iou_predictions", "low_res_masks")
EXTRA_METRICS_OUTPUTS: Tuple[str, ...] = ("masks", "iou_predictions", "stability_scores", "areas", "low_res_masks")
POINT_LABELS: Dict[int, str] = {-1: "padding", 0: "background", 1: "foreground", 2: "box top-left",
                                3: "box bottom-right"}
SINGLE_MASK_SWITCH = 2.5  # select_masks: token 0 wins once N > 2.5 points (padding and corners counted)
OPSETS = range(12, 24)  # torch 2.13's legacy exporter writes 12..23 (checked); 11 lacks Einsum (the decoder's)


class SamOnnxModel(nn.Module):
    """Prompt encoder + mask decoder + mask post-processing, traceable into one ONNX graph.

    A drop-in for ``segment_anything.utils.onnx.SamOnnxModel``: the same constructor, forward and
    outputs (see the module docstring). Not for calling directly: it takes the graph's flat inputs
    (B = 1, the padding point included by the caller) and has no input checks (``OnnxDecoder`` has).
    """

    def __init__(
        self,
        model: nn.Module,
        return_single_mask: bool,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        """Arguments:
          model: a ``Sam`` (or anything with ``.prompt_encoder`` and ``.mask_decoder``, such as
            ``toy_model()``); its modules are shared, not copied. ``SamOnnxModel.from_parts`` takes the two.
          return_single_mask: return the one mask ``select_masks`` picks (K = 1) instead of all M.
          use_stability_score: replace the IoU predictions by the stability score of the low-res masks.
          return_extra_metrics: also return the stability scores and areas of the upscaled masks.
        """
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        height, width = self.prompt_encoder.input_image_size
        if height != width:
            raise ValueError(f"SamOnnxModel: the prompt encoder's input must be square S x S, got {height} x {width}")
        self.img_size = int(height)  # S: the official reads model.image_encoder.img_size, the same number
        self.mask_threshold = float(getattr(model, "mask_threshold", 0.0))
        self.return_single_mask = return_single_mask
        self.use_stability_score = use_stability_score
        self.stability_score_offset = 1.0
        self.return_extra_metrics = return_extra_metrics

    @classmethod
    def from_parts(cls, prompt_encoder: nn.Module, mask_decoder: nn.Module, return_single_mask: bool,
                   **options: bool) -> "SamOnnxModel":
        """The same from the two modules alone (a checkpoint without an image encoder)."""
        parts = types.SimpleNamespace(prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)
        return cls(parts, return_single_mask, **options)

    @staticmethod
    def resize_longest_image_size(input_image_size: torch.Tensor, longest_side: int) -> torch.Tensor:
        """(H0, W0) -> (Hr, Wr), int64: the longer side becomes ``longest_side``, each side rounded half
        up, in float32 as the official graph does (``ResizeLongestSide`` rounds in float64)."""
        input_image_size = input_image_size.to(torch.float32)  # 2
        scale = longest_side / torch.max(input_image_size)
        return torch.floor(scale * input_image_size + 0.5).to(torch.int64)  # 2: (Hr, Wr)

    def _embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """1 x N x 2 coords, 1 x N labels (float) -> 1 x N x C sparse embeddings.

        The prompt encoder's weights, with labels 2 and 3 (box corners) on the same path as clicks.
        """
        pe_layer = self.prompt_encoder.pe_layer
        coords = (point_coords + 0.5) / self.img_size  # 1 x N x 2, the pixel centre, in [0, 1]
        embedding = pe_layer._pe_encoding(coords)  # 1 x N x C
        labels = rearrange(point_labels, "b n -> b n 1")  # 1 x N x 1, broadcast over C
        # padding (-1): no position, only not_a_point_embed; a label k in 0..3: position + point_embeddings[k]
        embedding = torch.where(labels == -1, self.prompt_encoder.not_a_point_embed.weight, embedding)
        for k, label_embedding in enumerate(self.prompt_encoder.point_embeddings):
            embedding = torch.where(labels == k, embedding + label_embedding.weight, embedding)
        return embedding  # 1 x N x C

    def _embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """1 x 1 x 4H x 4W logits, has_mask_input (1) -> 1 x C x H x W dense embedding: the downscaled
        mask when has_mask_input is 1, no_mask_embed everywhere when it is 0 (no branch in the graph)."""
        downscaled = self.prompt_encoder.mask_downscaling(mask_input)  # 1 x C x H x W
        no_mask = rearrange(self.prompt_encoder.no_mask_embed.weight, "1 c -> 1 c 1 1")  # 1 x C x 1 x 1
        return has_mask_input * downscaled + (1 - has_mask_input) * no_mask  # 1 x C x H x W

    def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """1 x K x 4H x 4W logits -> 1 x K x H0 x W0: bilinear to S x S, crop to the resized Hr x Wr
        (the rest is the encoder's padding), bilinear to (H0, W0) = orig_im_size."""
        masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear",
                              align_corners=False)  # 1 x K x S x S
        resized = self.resize_longest_image_size(orig_im_size, self.img_size)  # 2: (Hr, Wr)
        # 1 x K x Hr x Wr. Tensor bounds: the tracer records a dynamic Slice. The official int(...) bounds
        # are frozen at export, to the Hr x Wr of the example input (docs/onnx.md).
        masks = masks[..., : resized[0], : resized[1]]
        orig_im_size = orig_im_size.to(torch.int64)  # 2: (H0, W0)
        return F.interpolate(masks, size=(orig_im_size[0], orig_im_size[1]), mode="bilinear",
                             align_corners=False)  # 1 x K x H0 x W0

    def select_masks(self, masks: torch.Tensor, iou_preds: torch.Tensor, num_points: int
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """1 x M x 4H x 4W, 1 x M -> 1 x 1 x 4H x 4W, 1 x 1: the best of tokens 1..M-1 when N <= 2
        (one click and its padding point, or a box alone), token 0 once N >= 3, unless another
        token's score is more than 1000 * (N - 2.5) higher. The official rule, without control flow."""
        m = self.mask_decoder.num_mask_tokens
        reweight = torch.tensor([[1000.0] + [0.0] * (m - 1)], device=iou_preds.device)  # 1 x M
        score = iou_preds + (num_points - SINGLE_MASK_SWITCH) * reweight  # 1 x M
        best = torch.argmax(score, dim=1)  # 1, an index into M
        batch = torch.arange(masks.shape[0])  # 1
        masks = rearrange(masks[batch, best], "b h4 w4 -> b 1 h4 w4")  # 1 x 1 x 4H x 4W
        iou_preds = rearrange(iou_preds[batch, best], "b -> b 1")  # 1 x 1
        return masks, iou_preds

    @torch.no_grad()
    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> Tuple[torch.Tensor, ...]:
        """The graph: the six inputs of the module docstring -> (masks 1 x K x H0 x W0, iou_predictions
        1 x K, low_res_masks 1 x K x 4H x 4W); with ``return_extra_metrics`` (masks, scores,
        stability_scores 1 x K, areas 1 x K, low_res_masks)."""
        sparse = self._embed_points(point_coords, point_labels)  # 1 x N x C
        dense = self._embed_masks(mask_input, has_mask_input)  # 1 x C x H x W
        masks, scores = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),  # 1 x C x H x W, a constant of the graph
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )  # 1 x M x 4H x 4W, 1 x M: all M tokens, token 0 included
        if self.use_stability_score:
            scores = stability_score(masks, self.mask_threshold, self.stability_score_offset)  # 1 x M
        if self.return_single_mask:
            masks, scores = self.select_masks(masks, scores, point_coords.shape[1])  # 1 x 1 x 4H x 4W, 1 x 1
        upscaled = self.mask_postprocessing(masks, orig_im_size)  # 1 x K x H0 x W0
        if self.return_extra_metrics:
            stability = stability_score(upscaled, self.mask_threshold, self.stability_score_offset)  # 1 x K
            areas = (upscaled > self.mask_threshold).sum(dim=(-2, -1))  # 1 x K
            return upscaled, scores, stability, areas, masks
        return upscaled, scores, masks


def stability_score(masks: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """... x h x w logits -> ...: the IoU of the mask thresholded at ``mask_threshold + offset`` with
    the one at ``mask_threshold - offset`` (the first lies inside the second, so the IoU is the ratio
    of their areas). The official ``calculate_stability_score``, counted in int32."""
    inner = (masks > (mask_threshold + offset)).sum(dim=(-2, -1), dtype=torch.int32)  # ...
    outer = (masks > (mask_threshold - offset)).sum(dim=(-2, -1), dtype=torch.int32)  # ...
    return inner / outer


# --- exporting ------------------------------------------------------------------------------------


def hooked_points(*modules: nn.Module) -> Sequence[str]:
    """The names of the HookPoints in ``modules`` that have a hook (their own or a global one)."""
    return [name for module in modules for name, m in module.named_modules()
            if isinstance(m, HookPoint) and m.is_hooked()]


def dummy_inputs(prompt_encoder: nn.Module, mask_decoder: nn.Module, num_points: int = 5, seed: int = 0
                 ) -> Dict[str, torch.Tensor]:
    """The official script's example inputs (any valid values do: they only carry the shapes through
    the trace): 5 points with labels 0..3, a mask input, has_mask_input 1, a 1500 x 2250 image."""
    gen = torch.Generator().manual_seed(seed)
    h, w = prompt_encoder.image_embedding_size
    side = int(prompt_encoder.input_image_size[0])
    device = next(mask_decoder.parameters()).device
    inputs = {
        "image_embeddings": torch.randn(1, mask_decoder.transformer_dim, h, w, generator=gen),  # 1 x C x H x W
        "point_coords": torch.randint(0, side, (1, num_points, 2), generator=gen).float(),  # 1 x N x 2
        "point_labels": torch.randint(0, 4, (1, num_points), generator=gen).float(),  # 1 x N
        "mask_input": torch.randn(1, 1, 4 * h, 4 * w, generator=gen),  # 1 x 1 x 4H x 4W
        "has_mask_input": torch.tensor([1.0]),  # 1
        "orig_im_size": torch.tensor([1500.0, 2250.0]),  # 2: (H0, W0)
    }
    return {name: t.to(device) for name, t in inputs.items()}


def require_onnx() -> None:
    """Raise ImportError, with the install command, when the onnx package (which torch's exporter
    writes the file with) is missing."""
    if importlib.util.find_spec("onnx") is None:
        raise ImportError("exporting to ONNX needs the onnx package: pip install 'sam-explain[onnx]'")


def export_onnx_model(
    prompt_encoder: nn.Module,
    mask_decoder: nn.Module,
    output: Union[str, os.PathLike],
    *,
    return_single_mask: bool = False,
    opset: int = 17,
    use_stability_score: bool = False,
    return_extra_metrics: bool = False,
    gelu_approximate: bool = False,
) -> Path:
    """Write the decoder side as an ONNX file, as the official ``scripts/export_onnx_model.py`` does.

    Arguments:
      prompt_encoder, mask_decoder: sam-explain's modules (float32, eval mode; left unchanged, GELUs
        included: ``gelu_approximate`` swaps them for the export only).
      output: the .onnx file to write.
      return_single_mask: the graph returns K = 1 mask (``SamOnnxModel.select_masks``), else all M.
      opset: the ONNX opset, 12..23 (the official default is 17; the official script allows 11, but the
        decoder's einsum needs 12).
      use_stability_score, return_extra_metrics: the official script's options (see ``SamOnnxModel``);
        with extra metrics the outputs are named ``EXTRA_METRICS_OUTPUTS``.
      gelu_approximate: tanh GELUs, for runtimes without a fast Erf (changes the numbers).

    Returns the path written. Needs the onnx package, and neither a network nor a GPU. Uses the legacy TorchScript exporter
    (``dynamo=False``): torch 2.13's default, the dynamo exporter, needs the onnxscript package and does
    not export the official model (docs/onnx.md says what was tried).
    Raises ImportError without the onnx package, ValueError for an opset outside 12..23, weights that are not float32, or a HookPoint with a
    hook (the hook's work would be traced into the graph).
    """
    require_onnx()
    if opset not in OPSETS:
        raise ValueError(f"opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    for name, module in (("prompt encoder", prompt_encoder), ("mask decoder", mask_decoder)):
        dtypes = {p.dtype for p in module.parameters()}
        if dtypes != {torch.float32}:
            raise ValueError(f"the {name}'s weights must be float32 to export, got {sorted(map(str, dtypes))}")
    hooked = hooked_points(prompt_encoder, mask_decoder)
    if hooked:
        raise ValueError(f"remove the hooks before exporting: {len(hooked)} hook points are hooked "
                         f"({', '.join(hooked[:3])}{', ...' if len(hooked) > 3 else ''})")
    model = SamOnnxModel.from_parts(prompt_encoder, mask_decoder, return_single_mask,
                                    use_stability_score=use_stability_score,
                                    return_extra_metrics=return_extra_metrics).eval()
    inputs = dummy_inputs(prompt_encoder, mask_decoder)
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)] if gelu_approximate else []
    saved = [m.approximate for m in gelus]
    path = Path(output)
    try:
        for m in gelus:
            m.approximate = "tanh"
        model(**inputs)  # one eager run first, as the official script does: a bad model fails here, plainly
        with warnings.catch_warnings():
            # the tracer's notes on int() and shape arithmetic (the crop is traced as dynamic all the
            # same), and the legacy exporter's deprecation notice
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(
                model,
                tuple(inputs.values()),
                str(path),
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=list(ONNX_INPUTS),
                output_names=list(EXTRA_METRICS_OUTPUTS if return_extra_metrics else ONNX_OUTPUTS),
                dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                dynamo=False,
            )
    finally:
        for m, approximate in zip(gelus, saved):
            m.approximate = approximate
    return path


# --- running an exported file ---------------------------------------------------------------------


def onnx_prompt(
    points: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    box: Optional[np.ndarray] = None,
    original_size: Optional[Tuple[int, int]] = None,
    img_size: int = 1024,
) -> Tuple[np.ndarray, np.ndarray]:
    """Clicks and a box -> (point_coords 1 x N x 2, point_labels 1 x N), float32, by the graph's convention.

    Arguments:
      points: P x 2 (x, y) clicks, labels: P (1 foreground, 0 background); or None.
      box: 4 (x0, y0, x1, y1) or None: two more points, labelled 2 and 3.
      original_size: (H0, W0); when given, the coordinates are in its pixels and are moved to the
        resized frame (ResizeLongestSide(img_size)); when None they are already in it.

    N = P + 1 without a box (the padding point (0, 0), label -1, appended) and P + 2 with one, as the
    PyTorch PromptEncoder builds its sparse prompt. Raises ShapeError for bad shapes or labels.
    """
    from .transforms import ResizeLongestSide

    where = "onnx_prompt"
    coords, point_labels = np.zeros((0, 2), np.float64), np.zeros((0,), np.float64)
    if points is not None:
        coords = np.asarray(points, dtype=np.float64)  # P x 2
        _expect(where, "points", coords, "P 2")
        point_labels = np.asarray(labels if labels is not None else np.ones(len(coords)), dtype=np.float64)  # P
        _expect(where, "labels", point_labels, "P", P=len(coords), hint="one label per point")
        if not np.isin(point_labels, (0, 1)).all():
            raise ShapeError(f"{where}: click labels must be 1 (foreground) or 0 (background), "
                             f"got {sorted(set(point_labels.tolist()) - {0.0, 1.0})}")
    if box is not None:
        corners = np.asarray(box, dtype=np.float64)
        _expect(where, "box", corners, "4", hint="x0, y0, x1, y1")
        coords = np.concatenate([coords, corners.reshape(2, 2)])  # (P + 2) x 2
        point_labels = np.concatenate([point_labels, [2.0, 3.0]])  # P + 2
    elif points is not None:
        coords = np.concatenate([coords, np.zeros((1, 2))])  # (P + 1) x 2, the padding point
        point_labels = np.concatenate([point_labels, [-1.0]])  # P + 1
    else:
        raise ShapeError(f"{where}: give points, a box or both, got neither")
    if original_size is not None:
        coords = ResizeLongestSide(img_size).apply_coords(coords, tuple(original_size))  # N x 2, resized frame
        if box is None:
            coords[-1] = 0.0  # the padding point stays at (0, 0)
    return coords[None].astype(np.float32), point_labels[None].astype(np.float32)  # 1 x N x 2, 1 x N


def _expect(where: str, name: str, array: np.ndarray, symbols: str, hint: str = "", **known: Optional[int]
            ) -> Dict[str, int]:
    """``expect_shape`` for a numpy array (checked through a data-less tensor of its shape)."""
    return expect_shape(where, name, torch.empty(array.shape, device="meta"), symbols, hint, **known)


def _as_float32(where: str, name: str, value: object) -> np.ndarray:
    """A real-valued array-like -> float32 numpy; ShapeError for anything else (strings, complex, None)."""
    array = np.asarray(value) if value is not None else None
    if array is None or array.dtype.kind not in "iuf":
        got = "None" if array is None else f"an array of {array.dtype}"
        raise ShapeError(f"{where}: {name} must be a real-valued (float32) array, got {got}")
    return array.astype(np.float32, copy=False)


class OnnxDecoder:
    """An exported file (``export_onnx_model``, or the official export) in onnxruntime.

    ``decoder(image_embeddings, point_coords, point_labels, orig_im_size, mask_input=None)`` returns a
    dict of the graph's outputs by name (masks, iou_predictions, low_res_masks). Every input is checked
    against the file's interface before anything runs; a bad one raises ShapeError naming the expected
    and the actual shape or value.
    """

    def __init__(self, path: Union[str, os.PathLike], threads: Optional[int] = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        """Arguments:
          path: the .onnx file.
          threads: onnxruntime's intra-op threads (default: its own choice, one per core).
          providers: onnxruntime execution providers, in order of preference.
        Raises ImportError without onnxruntime, ValueError for a file without the graph's six inputs.
        """
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("running an ONNX file needs onnxruntime: pip install 'sam-explain[onnx]'") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=list(providers))
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        if set(shapes) != set(ONNX_INPUTS):
            raise ValueError(f"{self.path} is not a SAM decoder export: its inputs are {sorted(shapes)}, "
                             f"expected {list(ONNX_INPUTS)}")
        fixed = [d if isinstance(d, int) else None for d in shapes["image_embeddings"]]
        self.C, self.H, self.W = fixed[1], fixed[2], fixed[3]  # None where the file leaves an axis free
        self.output_names = [o.name for o in self.session.get_outputs()]

    def check_inputs(self, feeds: Mapping[str, object]) -> Dict[str, np.ndarray]:
        """The six inputs by name -> float32 arrays the graph accepts. Raises ShapeError naming the
        expected and the actual shape or value of the first bad one."""
        where = "OnnxDecoder"
        missing = [n for n in ONNX_INPUTS if n not in feeds]
        extra = [n for n in feeds if n not in ONNX_INPUTS]
        if missing or extra:
            raise ShapeError(f"{where}: the inputs must be {list(ONNX_INPUTS)}, "
                             f"missing {missing}, unknown {extra}")
        a = {name: _as_float32(where, name, feeds[name]) for name in ONNX_INPUTS}
        h4 = None if self.H is None else 4 * self.H
        w4 = None if self.W is None else 4 * self.W
        _expect(where, "image_embeddings", a["image_embeddings"], "1 C H W", C=self.C, H=self.H, W=self.W,
                hint="one image; C x H x W fixed by the file")
        n = _expect(where, "point_coords", a["point_coords"], "1 N 2", hint="(x, y) per point")["N"]
        if n < 1:
            raise ShapeError(f"{where}: point_coords must be 1 x N x 2 with N >= 1, got "
                             f"{fmt_shape(a['point_coords'].shape)} (add the padding point (0, 0), label -1)")
        _expect(where, "point_labels", a["point_labels"], "1 N", N=n, hint="one label per point, from point_coords")
        _expect(where, "mask_input", a["mask_input"], "1 1 4H 4W", **{"4H": h4, "4W": w4},
                hint="low-res mask logits; zeros with has_mask_input 0 when there is none")
        _expect(where, "has_mask_input", a["has_mask_input"], "1")
        _expect(where, "orig_im_size", a["orig_im_size"], "2", hint="(H0, W0), height first")
        for name in ONNX_INPUTS:  # NaN or inf anywhere spreads to every output (0 * NaN is NaN)
            expect_finite(where, name, torch.from_numpy(a[name]))
        expect_labels(where, "point_labels", torch.from_numpy(a["point_labels"]), sorted(POINT_LABELS),
                      ", ".join(f"{k} ({v})" for k, v in POINT_LABELS.items()))
        if a["has_mask_input"][0] not in (0.0, 1.0):
            raise ShapeError(f"{where}: has_mask_input must be [1] or [0], got {a['has_mask_input'].tolist()}")
        size = a["orig_im_size"]
        if not ((size >= 1).all() and (size == np.round(size)).all()):
            raise ShapeError(f"{where}: orig_im_size must be (H0, W0), two whole numbers >= 1, got {size.tolist()}")
        return a

    def run(self, feeds: Mapping[str, object]) -> Dict[str, np.ndarray]:
        """The graph on the six inputs by name (the official interface): its outputs by name."""
        checked = self.check_inputs(feeds)
        return dict(zip(self.output_names, self.session.run(None, checked)))

    def __call__(
        self,
        image_embeddings: np.ndarray,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        orig_im_size: Sequence[float],
        mask_input: Optional[np.ndarray] = None,
    ) -> Dict[str, np.ndarray]:
        """One prediction. image_embeddings 1 x C x H x W, point_coords 1 x N x 2 and point_labels 1 x N
        in the resized frame with the padding point or box corners (``onnx_prompt`` builds them),
        orig_im_size (H0, W0), mask_input 1 x 1 x 4H x 4W or None (then has_mask_input is 0).
        Returns {masks: 1 x K x H0 x W0, iou_predictions: 1 x K, low_res_masks: 1 x K x 4H x 4W}."""
        if mask_input is None:
            if self.H is None or self.W is None:
                raise ShapeError("OnnxDecoder: this file leaves H x W free; pass mask_input 1 x 1 x 4H x 4W")
            mask_input = np.zeros((1, 1, 4 * self.H, 4 * self.W), np.float32)  # 1 x 1 x 4H x 4W, unused
            has_mask = np.zeros(1, np.float32)
        else:
            has_mask = np.ones(1, np.float32)
        return self.run({
            "image_embeddings": image_embeddings, "point_coords": point_coords, "point_labels": point_labels,
            "mask_input": mask_input, "has_mask_input": has_mask, "orig_im_size": np.asarray(orig_im_size),
        })
