"""``sam-explain predict``: real SAM on your photo. Runs the whole model (image encoder,
prompt encoder, mask decoder) from an official checkpoint and writes

  masks.png                  the photo with each predicted mask, its predicted IoU, the prompts
  attention_mask<j>.png      where the mask token behind mask j looks in the image: its final
                             token-to-image attention (mean over heads, then each head)

The attention is read with a forward hook on the decoder's hook point
``transformer.final_attn_token_to_image.hook_probs`` (B x h x T x HW) and mapped onto the
photo with SAM's own geometry: the H x W grid covers the padded 1024 x 1024 input, so it is
upsampled to 1024, cropped to the resized image and resized to the original
(``Sam.postprocess_masks``).
"""

from __future__ import annotations

import argparse
import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch


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
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--out", required=True, help="folder for the PNG files (created if missing)")
    p.set_defaults(func=run)


def parse_numbers(text: str, count: int, what: str) -> List[float]:
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(v) for v in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise SystemExit(f"sam-explain predict: {what} must be {count} comma-separated numbers, got {text!r}")
    return values


def mask_token_indices(multimask_output: bool, num_mask_tokens: int = 4) -> List[int]:
    """Positions in the decoder's T tokens (iou token, M mask tokens, prompts) of the mask
    tokens whose masks are returned: tokens 1..M-1 of the M with multimask, token 0 without."""
    tokens = range(1, num_mask_tokens) if multimask_output else range(0, 1)
    return [1 + t for t in tokens]  # + 1 skips the IoU token


def predict_with_attention(predictor, multimask_output: bool = True, **prompts):
    """``predictor.predict(...)`` plus the final token-to-image attention of each returned
    mask's token: returns (masks k x H0 x W0, iou k, low_res k x 4H x 4W, attention k x h x H x W)."""
    decoder = predictor.model.mask_decoder
    hook_point = decoder.transformer.final_attn_token_to_image.hook_probs
    seen: List[torch.Tensor] = []
    handle = hook_point.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
    try:
        masks, iou, low_res = predictor.predict(multimask_output=multimask_output, **prompts)
    finally:
        handle.remove()
    probs = seen[-1][0]  # h x T x HW, the only prompt set
    grid_h, grid_w = predictor.features.shape[-2:]
    tokens = mask_token_indices(multimask_output, decoder.num_mask_tokens)
    attention = probs[:, tokens, :].unflatten(-1, (grid_h, grid_w)).transpose(0, 1)  # k x h x H x W
    return masks, iou, low_res, attention.float().cpu()


def attention_on_image(predictor, grid_maps: torch.Tensor) -> np.ndarray:
    """... x H x W maps on the embedding grid -> ... x H0 x W0 on the photo, with SAM's
    resize-and-pad geometry (the same path as the mask logits)."""
    lead = grid_maps.shape[:-2]
    flat = grid_maps.reshape(-1, 1, *grid_maps.shape[-2:]).to(predictor.device, torch.float32)  # K x 1 x H x W
    with torch.no_grad():
        on_photo = predictor.model.postprocess_masks(flat, predictor.input_size, predictor.original_size)
    return on_photo.reshape(*lead, *on_photo.shape[-2:]).cpu().numpy()  # ... x H0 x W0


def save_attention_overlay(path: str, image: np.ndarray, maps: np.ndarray, title: str) -> None:
    """One figure: the mean over heads, then each head, each drawn over the photo.
    maps: h x H0 x W0 attention on the photo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("mean over heads", maps.mean(0))] + [(f"head {i}", m) for i, m in enumerate(maps)]
    cols = math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / cols)
    aspect = image.shape[0] / image.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows * aspect + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, heat) in zip(axes.flat, panels):
        ax.imshow(image)
        ax.imshow(heat, cmap="inferno", alpha=0.6, vmin=0, vmax=max(float(heat.max()), 1e-12))
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_mask_overlay(
    path: str, image: np.ndarray, masks: np.ndarray, iou: np.ndarray,
    points: Optional[np.ndarray], labels: Optional[np.ndarray], box: Optional[Sequence[float]],
) -> None:
    """The photo once per mask, the mask tinted, the prompts drawn, the predicted IoU in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(masks)
    aspect = image.shape[0] / image.shape[1]
    fig, axes = plt.subplots(1, k, figsize=(4.5 * k, 4.5 * aspect + 0.5), squeeze=False)
    tint = np.array([0.12, 0.56, 1.0, 0.55])
    for j, ax in enumerate(axes[0]):
        ax.imshow(image)
        overlay = np.zeros(masks[j].shape + (4,))
        overlay[masks[j]] = tint
        ax.imshow(overlay)
        if points is not None:
            for (x, y), label in zip(points, labels):
                ax.scatter([x], [y], s=120, marker="*", c="lime" if label == 1 else "red", edgecolors="white")
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=2))
        ax.set_title(f"mask {j}: predicted IoU {float(iou[j]):.3f}", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_image(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))  # H0 x W0 x 3 uint8
    except (OSError, ValueError) as err:
        raise SystemExit(f"sam-explain predict: cannot read the image {path!r}: {err}") from err


def collect_prompts(args: argparse.Namespace, height: int, width: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    clicks = [(parse_numbers(p, 2, "--point"), 1) for p in args.point]
    clicks += [(parse_numbers(p, 2, "--bg-point"), 0) for p in args.bg_point]
    box = None if args.box is None else np.array(parse_numbers(args.box, 4, "--box"))
    if not clicks and box is None:
        raise SystemExit("sam-explain predict: give at least one --point X,Y or a --box X0,Y0,X1,Y1")
    for (x, y), _ in clicks:
        if not (0 <= x < width and 0 <= y < height):
            raise SystemExit(f"sam-explain predict: point ({x:g}, {y:g}) lies outside the {width} x {height} image")
    if box is not None and not (box[0] < box[2] and box[1] < box[3]):
        raise SystemExit(f"sam-explain predict: --box needs X0 < X1 and Y0 < Y1, got {args.box}")
    points = np.array([c for c, _ in clicks]) if clicks else None  # N x 2
    labels = np.array([label for _, label in clicks]) if clicks else None  # N
    return points, labels, box


def run(args: argparse.Namespace) -> int:
    from ..build_sam import build_sam
    from ..checkpoint import CheckpointError
    from ..predictor import SamPredictor

    image = load_image(args.image)
    points, labels, box = collect_prompts(args, image.shape[0], image.shape[1])
    try:
        sam = build_sam(checkpoint=args.checkpoint, model_type=args.model_type).to(args.device)
    except CheckpointError as err:
        raise SystemExit(f"sam-explain predict: {err}") from err
    print(f"loaded {args.checkpoint} ({sum(p.numel() for p in sam.parameters()):,} parameters) on {args.device}")

    predictor = SamPredictor(sam)
    predictor.set_image(image)
    multimask = not args.single_mask
    masks, iou, _, attention = predict_with_attention(
        predictor, multimask_output=multimask, point_coords=points, point_labels=labels, box=box
    )

    os.makedirs(args.out, exist_ok=True)
    mask_path = os.path.join(args.out, "masks.png")
    save_mask_overlay(mask_path, image, masks, iou, points, labels, box)
    print(f"image {image.shape[1]} x {image.shape[0]}, resized to {predictor.input_size[1]} x {predictor.input_size[0]}")
    print(f"wrote {mask_path}")
    on_photo = attention_on_image(predictor, attention)  # k x h x H0 x W0
    tokens = mask_token_indices(multimask, sam.mask_decoder.num_mask_tokens)
    for j in range(len(masks)):
        path = os.path.join(args.out, f"attention_mask{j}.png")
        title = (f"mask {j} (mask token {tokens[j] - 1}, predicted IoU {float(iou[j]):.3f}): "
                 f"final token-to-image attention")
        save_attention_overlay(path, image, on_photo[j], title)
        print(f"wrote {path}")
    for j in range(len(masks)):
        print(f"  mask {j}: predicted IoU {float(iou[j]):.4f}, area {masks[j].mean():.1%} of the image")
    return 0
