"""``sam-explain predict``: real SAM on your photo. Runs the whole model (image encoder,
prompt encoder, mask decoder) from an official checkpoint and writes

  masks.png                  the photo with each predicted mask, its predicted IoU, the prompts
  attention_mask<j>.png      where the mask token behind mask j looks in the image: its final
                             token-to-image attention (mean over heads, then each head)

The attention is recorded by ``record_attention`` on the decoder while ``SamPredictor.predict``
runs, and drawn over the photo by SAM's own geometry (``sam_explain.utils.transforms``).
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Tuple

import numpy as np

from .args import CommandError, device_arg, load_image, parse_numbers, writable_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment a photo with a SAM checkpoint; write mask and attention overlays")
    p.add_argument("--checkpoint", required=True, help="an official SAM file (sam_vit_b_01ec64.pth, ...)")
    p.add_argument("--image", required=True, help="a photo (PNG, JPEG, ...)")
    p.add_argument("--point", action="append", default=[], metavar="X,Y",
                   help="a foreground click in image pixels (repeatable)")
    p.add_argument("--bg-point", action="append", default=[], metavar="X,Y",
                   help="a background click in image pixels (repeatable)")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box prompt in image pixels")
    p.add_argument("--single-mask", action="store_true", help="multimask_output=False: one mask")
    p.add_argument("--model-type", choices=["vit_b", "vit_l", "vit_h"], help="default: read from the checkpoint")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--out", required=True, help="folder for the PNG files (created if missing)")
    p.set_defaults(func=run)


def collect_prompts(args: argparse.Namespace, height: int, width: int
                    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """(points N x 2, labels N, box 4) in image pixels, from --point, --bg-point and --box."""
    clicks = [(parse_numbers(p, 2, "--point"), 1) for p in args.point]
    clicks += [(parse_numbers(p, 2, "--bg-point"), 0) for p in args.bg_point]
    box = None if args.box is None else np.array(parse_numbers(args.box, 4, "--box"))
    if not clicks and box is None:
        raise CommandError("give at least one --point X,Y or a --box X0,Y0,X1,Y1")
    for (x, y), _ in clicks:
        if not (0 <= x < width and 0 <= y < height):
            raise CommandError(f"point ({x:g}, {y:g}) lies outside the {width} x {height} image")
    if box is not None and not (box[0] < box[2] and box[1] < box[3]):
        raise CommandError(f"--box needs X0 < X1 and Y0 < Y1, got {args.box}")
    points = np.array([c for c, _ in clicks]) if clicks else None  # N x 2
    labels = np.array([label for _, label in clicks]) if clicks else None  # N
    return points, labels, box


def run(args: argparse.Namespace) -> int:
    from ..attention import predict_and_record, returned_mask_tokens
    from ..build_sam import build_sam
    from ..figures import plot_masks, plot_token_to_image
    from ..predictor import SamPredictor

    out = writable_path(args.out)
    image = load_image(args.image)
    points, labels, box = collect_prompts(args, image.shape[0], image.shape[1])
    sam = build_sam(checkpoint=args.checkpoint, model_type=args.model_type).to(args.device)
    print(f"loaded {args.checkpoint} ({sum(p.numel() for p in sam.parameters()):,} parameters) on {args.device}")

    predictor = SamPredictor(sam)
    predictor.set_image(image)
    multimask = not args.single_mask
    masks, iou, _, record = predict_and_record(predictor, multimask, point_coords=points, point_labels=labels,
                                               box=box, layers="final", kinds="token_to_image")
    tokens = returned_mask_tokens(multimask, sam.mask_decoder.num_mask_tokens)

    out.mkdir(parents=True, exist_ok=True)
    mask_path = os.path.join(out, "masks.png")
    plot_masks(image, masks, iou, points=points, labels=labels, box=box,
               titles=[f"mask {j} ({token})" for j, token in enumerate(tokens)]).savefig(mask_path, dpi=110)
    print(f"image {image.shape[1]} x {image.shape[0]}, resized to {predictor.input_size[1]} x {predictor.input_size[0]}")
    print(f"wrote {mask_path}")
    heads = ["mean", *range(sam.mask_decoder.transformer.num_heads)]
    for j, token in enumerate(tokens):
        path = os.path.join(out, f"attention_mask{j}.png")
        plot_token_to_image(record, token, heads=heads, image=image, scale="per-panel").savefig(path, dpi=110)
        print(f"wrote {path}")
    for j in range(len(masks)):
        print(f"  mask {j}: predicted IoU {float(iou[j]):.4f}, area {masks[j].mean():.1%} of the image")
    return 0
