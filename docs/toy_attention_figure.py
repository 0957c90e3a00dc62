"""Draw docs/toy_attention.png: a click on one object of a toy scene, the token-to-image attention
of the first mask token in the decoder's final attention layer, and the masks that come out.

    PYTHONPATH=. python docs/toy_attention_figure.py [--seed 7] [--object 0] [--weights PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange

from sam_explain.toy import make_scene, toy_model


def interior_point(mask: np.ndarray) -> tuple:
    """A pixel well inside ``mask`` (H0 x W0 bool): the mask pixel nearest its centroid after two erosions."""
    inner = mask.copy()
    for _ in range(6):
        shrunk = inner[1:-1, 1:-1] & inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
        if not shrunk.any():
            break
        inner = np.zeros_like(inner)
        inner[1:-1, 1:-1] = shrunk
    ys, xs = np.nonzero(inner)
    cy, cx = ys.mean(), xs.mean()
    i = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
    return float(xs[i]), float(ys[i])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--object", type=int, default=0)
    parser.add_argument("--weights")
    parser.add_argument("--layer", default="transformer.final_attn_token_to_image",
                        help="an Attention module of the decoder whose hook_probs to draw")
    parser.add_argument("--out", default=str(Path(__file__).with_name("toy_attention.png")))
    args = parser.parse_args()

    torch.set_num_threads(2)
    model = toy_model(args.weights)
    scene = make_scene(args.seed)
    target = scene.object_masks[args.object]
    x, y = interior_point(target)

    captured = {}
    hook_point = model.mask_decoder.get_submodule(args.layer).hook_probs
    handle = hook_point.register_forward_hook(lambda m, i, o: captured.setdefault("probs", o.detach()))
    try:
        emb = model.embed(scene.image)  # 1 x C x H x W
        masks, iou = model.predict(emb, points=[(x, y)])  # 1 x 3 x 4H x 4W, 1 x 3
    finally:
        handle.remove()
    probs = captured["probs"]  # B x h x N_q x N_k = 1 x 8 x T x HW
    H, W = model.prompt_encoder.image_embedding_size
    first_mask_token = 1  # token 0 is the IoU token
    attn = rearrange(probs[0, :, first_mask_token], "h (gh gw) -> h gh gw", gh=H, gw=W).mean(0)  # H x W

    single, single_iou = model.predict(emb, points=[(x, y)], multimask_output=False)  # 1 x 1 x 4H x 4W: token 0

    size = scene.image.shape[0]
    extent = (0, size, size, 0)

    def overlay(ax, logits: torch.Tensor, title: str) -> None:
        pred = (logits > 0).numpy()
        rgba = np.zeros((size, size, 4))
        rgba[pred] = (1.0, 0.1, 0.1, 0.6)
        ax.imshow(scene.image)
        ax.imshow(rgba)
        iou_true = (pred & target).sum() / max(1, (pred | target).sum())
        ax.set_title(f"{title}\npredicted IoU {float(title_iou[title]):.2f}, true IoU {iou_true:.2f}", fontsize=9)

    title_iou = {"mask token 0 (single output)": single_iou[0, 0]}
    title_iou.update({f"multimask output {k + 1}": iou[0, k] for k in range(3)})
    fig, axes = plt.subplots(1, 6, figsize=(20, 3.8))
    axes[0].imshow(scene.image)
    axes[0].set_title("toy scene and the click")
    axes[1].imshow(scene.image, alpha=0.35, extent=extent)
    im = axes[1].imshow(attn.numpy(), cmap="magma", alpha=0.8, extent=extent,
                        norm=matplotlib.colors.PowerNorm(0.5))  # square-root scale: faint weights stay visible
    axes[1].set_title(f"where mask token 0 looks ({H} x {W} grid)\n{args.layer}\nhook_probs, mean of {probs.shape[1]} heads",
                      fontsize=8)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    overlay(axes[2], single[0, 0], "mask token 0 (single output)")
    for k in range(3):
        overlay(axes[3 + k], masks[0, k], f"multimask output {k + 1}")
    for ax in axes:
        ax.plot([x], [y], marker="*", color="yellow", markeredgecolor="black", markersize=14)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
