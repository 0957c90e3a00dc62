"""``sam-explain export-onnx``: the decoder side (prompt encoder, mask decoder, mask post-processing)
as one ONNX file with the official interface, as Meta's ``scripts/export_onnx_model.py`` writes it.

    sam-explain export-onnx --checkpoint sam_vit_b_01ec64.pth --out sam_decoder.onnx
    sam-explain export-onnx --toy --out toy_decoder.onnx --return-single-mask

Then, when onnxruntime is installed, runs the file once on example inputs and prints its inputs and
outputs with their shapes. docs/onnx.md describes the interface.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Tuple

from torch import nn

from .args import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="export prompt encoder + mask decoder to ONNX (the official interface)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="an official SAM file (sam_vit_b_01ec64.pth, ...) or any file with "
                                             "both the prompt encoder and the mask decoder")
    source.add_argument("--toy", action="store_true", help="the shipped toy model (256 x 256 input)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--return-single-mask", action="store_true",
                   help="return only the best mask (the official selection) instead of all four")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 12..23 (default 17, as the official script)")
    p.set_defaults(func=run)


def load_parts(args: argparse.Namespace) -> Tuple[nn.Module, nn.Module, str]:
    """(prompt encoder, mask decoder, a description of where they came from)."""
    if args.toy:
        from ..toy import toy_model

        model = toy_model().eval()
        return model.prompt_encoder, model.mask_decoder, "the toy model"
    from ..checkpoint import load_sam_checkpoint

    parts = load_sam_checkpoint(args.checkpoint)
    missing = [name for name, part in (("mask decoder", parts.mask_decoder),
                                       ("prompt encoder", parts.prompt_encoder)) if part is None]
    if missing:
        raise CommandError(
            f"{args.checkpoint} holds no {' and no '.join(missing)} ({parts.format} layout); the export needs "
            "both: the graph embeds the points with the prompt encoder's weights and its input image size "
            "(use a full SAM checkpoint)")
    return parts.prompt_encoder, parts.mask_decoder, f"{args.checkpoint} ({parts.format})"


def run(args: argparse.Namespace) -> int:
    from ..utils.onnx import OPSETS, export_onnx_model, require_onnx

    try:
        require_onnx()
    except ImportError as err:
        raise CommandError(str(err)) from None
    if args.opset not in OPSETS:
        raise CommandError(f"--opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {args.opset}")
    out = Path(args.out)
    if out.parent and not out.parent.is_dir():
        raise CommandError(f"no folder {str(out.parent)!r} for --out {args.out}")
    prompt_encoder, mask_decoder, source = load_parts(args)
    export_onnx_model(prompt_encoder, mask_decoder, out, return_single_mask=args.return_single_mask,
                      opset=args.opset)
    side = prompt_encoder.input_image_size[0]
    print(f"exported {source} to {out} ({out.stat().st_size / 2**20:.1f} MiB, opset {args.opset}, "
          f"{'one mask' if args.return_single_mask else 'all masks'}; point coordinates in the "
          f"{side} x {side} resized frame)")
    smoke_run(out, side)
    return 0


def smoke_run(path: Path, side: int) -> None:
    """Run the file once in onnxruntime on example inputs (one click in the ``side`` x ``side`` resized
    frame and its padding point, a 1500 x 2250 image) and print every input and output with its shape;
    a note instead if onnxruntime is absent."""
    import numpy as np

    try:
        from ..utils.onnx import OnnxDecoder, onnx_prompt

        decoder = OnnxDecoder(path)
    except ImportError:
        print("onnxruntime is not installed: the file was not run (pip install 'sam-explain[onnx]')")
        return
    embeddings = np.random.default_rng(0).standard_normal((1, decoder.C, decoder.H, decoder.W)).astype(np.float32)
    coords, labels = onnx_prompt(np.array([[side / 2, side / 3]]), np.array([1]))
    inputs = {"image_embeddings": embeddings, "point_coords": coords, "point_labels": labels,
              "mask_input": np.zeros((1, 1, 4 * decoder.H, 4 * decoder.W), np.float32),
              "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array([1500, 2250], np.float32)}
    outputs = decoder.run(inputs)
    print("ran in onnxruntime:")
    for name, array in list(inputs.items()) + list(outputs.items()):
        print(f"  {name:<17} {' x '.join(map(str, array.shape))}")
