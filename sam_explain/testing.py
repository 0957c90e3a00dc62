"""Helpers shared by the tests and the benchmarks: the official code, side by side.

``official_modeling()`` imports ``segment_anything.modeling`` from the PyPI package
without running ``segment_anything/__init__.py`` (which imports torchvision, absent
on CPU-only machines).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Tuple

import torch
from torch import nn

from .modeling.build import randomize_
from .prompts import run_decoder


def official_modeling() -> types.ModuleType:
    """Return the official ``segment_anything.modeling`` module (needs the PyPI package)."""
    if "segment_anything.modeling" in sys.modules:
        return sys.modules["segment_anything.modeling"]
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the official package is not installed: pip install segment-anything")
    if "segment_anything" not in sys.modules:
        parent = types.ModuleType("segment_anything")
        parent.__path__ = list(spec.submodule_search_locations)  # a package, its __init__ not run
        sys.modules["segment_anything"] = parent
    return importlib.import_module("segment_anything.modeling")


def build_official_pair(
    *,
    transformer_dim: int = 256,
    depth: int = 2,
    num_heads: int = 8,
    mlp_dim: int = 2048,
    num_multimask_outputs: int = 3,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
    image_embedding_size: Tuple[int, int] = (64, 64),
    input_image_size: Tuple[int, int] = (1024, 1024),
    mask_in_chans: int = 16,
    seed: int = 0,
) -> Tuple[nn.Module, nn.Module]:
    """Official (MaskDecoder, PromptEncoder) with random weights, every parameter and
    buffer drawn from N(0, 1/fan) so that the outputs are not dominated by defaults."""
    sa = official_modeling()
    torch.manual_seed(seed)
    decoder = sa.MaskDecoder(
        num_multimask_outputs=num_multimask_outputs,
        transformer=sa.TwoWayTransformer(
            depth=depth, embedding_dim=transformer_dim, mlp_dim=mlp_dim, num_heads=num_heads
        ),
        transformer_dim=transformer_dim,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
    ).eval()
    prompt_encoder = sa.PromptEncoder(
        embed_dim=transformer_dim,
        image_embedding_size=image_embedding_size,
        input_image_size=input_image_size,
        mask_in_chans=mask_in_chans,
    ).eval()
    randomize_(decoder, seed)
    randomize_(prompt_encoder, seed + 1)
    return decoder, prompt_encoder


@torch.no_grad()
def run_both(official_decoder, official_pe, decoder, pe, prompts, image_embeddings, multimask: bool):
    """``prompts.run_decoder`` on the official modules and on ours, same prompts and embeddings, without
    autograd: ((sparse, ours), (dense, ours), (masks, ours), (iou_pred, ours)), the official first in each pair."""
    m_off, i_off, s_off, d_off = run_decoder(official_pe, official_decoder, image_embeddings, prompts, multimask)
    m_our, i_our, s_our, d_our = run_decoder(pe, decoder, image_embeddings, prompts, multimask)
    return (s_off, s_our), (d_off, d_our), (m_off, m_our), (i_off, i_our)


# --- the whole SAM, side by side (image encoder, Sam, predictor) ---

TINY_SAM = dict(
    encoder_embed_dim=32, encoder_depth=3, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
    image_size=128, patch_size=16, window_size=3,  # an 8 x 8 grid: 3 x 3 windows need padding
    prompt_embed_dim=32, decoder_num_heads=8, decoder_mlp_dim=64, iou_head_hidden_dim=32,
)


def build_official_sam(
    encoder_embed_dim: int = 768,
    encoder_depth: int = 12,
    encoder_num_heads: int = 12,
    encoder_global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11),
    *,
    image_size: int = 1024,
    patch_size: int = 16,
    window_size: int = 14,
    prompt_embed_dim: int = 256,
    decoder_num_heads: int = 8,
    decoder_mlp_dim: int = 2048,
    iou_head_hidden_dim: int = 256,
    mask_in_chans: int = 16,
    seed: int = 0,
) -> nn.Module:
    """The official ``Sam`` in the layout of ``segment_anything.build_sam`` (vit_b by default;
    ``TINY_SAM`` for a small one), every parameter seeded random (``randomize_``)."""
    from functools import partial

    sa = official_modeling()
    grid = image_size // patch_size
    torch.manual_seed(seed)
    sam = sa.Sam(
        image_encoder=sa.ImageEncoderViT(
            depth=encoder_depth, embed_dim=encoder_embed_dim, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=encoder_num_heads,
            patch_size=patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(encoder_global_attn_indexes), window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=sa.PromptEncoder(
            embed_dim=prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size), mask_in_chans=mask_in_chans,
        ),
        mask_decoder=sa.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sa.TwoWayTransformer(
                depth=2, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
            ),
            transformer_dim=prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=iou_head_hidden_dim,
        ),
    ).eval()
    randomize_(sam, seed)
    with torch.no_grad():  # randomize_ scales a 4-d table by 1/sqrt(H W E); give it a visible size
        sam.image_encoder.pos_embed.mul_(sam.image_encoder.pos_embed[0].numel() ** 0.5 * 0.1)
    return sam


def official_predictor_module() -> types.ModuleType:
    """The official ``segment_anything.predictor`` module, imported with a two-function
    stand-in for torchvision (absent here): ``to_pil_image`` = ``PIL.Image.fromarray`` and
    ``resize(img, (h, w))`` = ``img.resize((w, h), BILINEAR)``, which is what torchvision does
    for a PIL image. The stand-in is removed from ``sys.modules`` again after the import."""
    if "segment_anything.predictor" in sys.modules:
        return sys.modules["segment_anything.predictor"]
    official_modeling()
    from PIL import Image

    fake_tv = types.ModuleType("torchvision")
    fake_transforms = types.ModuleType("torchvision.transforms")
    fake_functional = types.ModuleType("torchvision.transforms.functional")
    fake_functional.to_pil_image = lambda pic: Image.fromarray(pic)
    fake_functional.resize = lambda img, size: img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    fake_tv.transforms, fake_transforms.functional = fake_transforms, fake_functional
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(dict(zip(names, (fake_tv, fake_transforms, fake_functional))))
    try:
        return importlib.import_module("segment_anything.predictor")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# --- SAM 2 (the official sam2 package), side by side ---


def official_sam2_modeling() -> types.ModuleType:
    """The official ``sam2.modeling.sam`` package (sam2 1.1.0 from PyPI) with its ``mask_decoder``,
    ``prompt_encoder`` and ``transformer`` modules imported, without running ``sam2/__init__.py``
    (which imports hydra, absent here): the parent packages are made as empty packages on the
    installed paths, so ``sam2.modeling.sam2_base`` imports too. Needs torch, numpy, PIL and tqdm."""
    if "sam2.modeling.sam.mask_decoder" in sys.modules:
        return sys.modules["sam2.modeling.sam"]
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the official SAM 2 package is not installed: "
                          "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0")
    root = list(spec.submodule_search_locations)[0]
    for name, path in (("sam2", root), ("sam2.modeling", f"{root}/modeling")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [path]  # a package whose __init__ is not run
            sys.modules[name] = package
    for sub in ("mask_decoder", "prompt_encoder", "transformer"):
        importlib.import_module(f"sam2.modeling.sam.{sub}")
    return sys.modules["sam2.modeling.sam"]


def build_official_sam2_pair(
    *,
    transformer_dim: int = 256,
    depth: int = 2,
    num_heads: int = 8,
    mlp_dim: int = 2048,
    num_multimask_outputs: int = 3,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
    image_embedding_size: Tuple[int, int] = (64, 64),
    input_image_size: Tuple[int, int] = (1024, 1024),
    mask_in_chans: int = 16,
    seed: int = 0,
    **decoder_flags: object,
) -> Tuple[nn.Module, nn.Module]:
    """Official SAM 2 (MaskDecoder, PromptEncoder), built as ``SAM2Base._build_sam_heads`` builds them
    (``decoder_flags``: use_high_res_features, iou_prediction_use_sigmoid, pred_obj_scores, ... as the
    official MaskDecoder takes them; its defaults otherwise), every parameter seeded random
    (``randomize_``). The positional-encoding matrix is drawn by ``torch.manual_seed(seed)``."""
    sam = official_sam2_modeling()
    torch.manual_seed(seed)
    decoder = sam.mask_decoder.MaskDecoder(
        num_multimask_outputs=num_multimask_outputs,
        transformer=sam.transformer.TwoWayTransformer(
            depth=depth, embedding_dim=transformer_dim, mlp_dim=mlp_dim, num_heads=num_heads
        ),
        transformer_dim=transformer_dim,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
        **decoder_flags,
    ).eval()
    prompt_encoder = sam.prompt_encoder.PromptEncoder(
        embed_dim=transformer_dim,
        image_embedding_size=image_embedding_size,
        input_image_size=input_image_size,
        mask_in_chans=mask_in_chans,
    ).eval()
    randomize_(decoder, seed)
    randomize_(prompt_encoder, seed + 1)
    return decoder, prompt_encoder


# --- the official ONNX export, restated (scripts/export_onnx_model.py is not in the PyPI package) ---


def official_onnx_model(official_decoder: nn.Module, official_pe: nn.Module, return_single_mask: bool = False,
                        **flags) -> nn.Module:
    """The official ``segment_anything.utils.onnx.SamOnnxModel`` over the two official modules (and what it
    reads off a Sam besides them: the image encoder's ``img_size`` and ``mask_threshold``), in eval mode.
    ``flags``: ``use_stability_score``, ``return_extra_metrics``."""
    official_modeling()
    sa_onnx = importlib.import_module("segment_anything.utils.onnx")
    holder = nn.Module()
    holder.prompt_encoder, holder.mask_decoder = official_pe, official_decoder
    holder.image_encoder = types.SimpleNamespace(img_size=official_pe.input_image_size[0])
    holder.mask_threshold = 0.0
    return sa_onnx.SamOnnxModel(holder, return_single_mask=return_single_mask, **flags).eval()


def official_onnx_export(onnx_model: nn.Module, path, gelu_approximate: bool = False, opset: int = 17) -> None:
    """The official script's ``run_export`` of an official ``SamOnnxModel``: its dummy inputs (a 1500 x 2250
    image, 5 points) and its ``torch.onnx.export`` call, with ``dynamo=False`` added (torch 2.13's default,
    the dynamo exporter, fails on the official model)."""
    import warnings

    if gelu_approximate:
        for module in onnx_model.modules():
            if isinstance(module, nn.GELU):
                module.approximate = "tanh"
    pe = onnx_model.model.prompt_encoder
    embed_size = pe.image_embedding_size
    dummy_inputs = {
        "image_embeddings": torch.randn(1, pe.embed_dim, *embed_size, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *[4 * x for x in embed_size], dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    _ = onnx_model(**dummy_inputs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        torch.onnx.export(
            onnx_model, tuple(dummy_inputs.values()), str(path), export_params=True, verbose=False,
            opset_version=opset, do_constant_folding=True, input_names=list(dummy_inputs.keys()),
            output_names=["masks", "iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            dynamo=False,
        )
