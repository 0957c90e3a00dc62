"""``sam-explain attention``: run the decoder on a described prompt and write its attention figures.

    sam-explain attention --out figures/ --point 192,192,1 --point 450,170,0 --token mask0

The trained toy model on one of its scenes unless --checkpoint or --random. Points and boxes are in
the pixels of the image, and are mapped to the prompt encoder's input frame with SAM's
resize-and-pad geometry. Prints what ran, then one path per figure.
"""

from __future__ import annotations

import argparse
import re
from typing import Optional, Tuple

import numpy as np
import torch

from .args import (
    CommandError, add_model_options, load_embedding, load_image, load_models, parse_numbers, positive_int,
    writable_path,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention", help="write the decoder's attention maps as PNG figures")
    p.add_argument("--out", default="attention_figures", help="folder for the PNGs (created)")
    p.add_argument("--point", action="append", default=None, metavar="X,Y,LABEL",
                   help="a click in image pixels, LABEL 1 foreground / 0 background (repeatable; "
                        "default: one foreground click on the placeholder's red disc)")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box in image pixels")
    p.add_argument("--token", default="mask0",
                   help="token for the token-to-image figures: iou, mask0..mask3, point0, pad, 'box corner 0', ... "
                        "or an index (default mask0)")
    p.add_argument("--heads", default="all", help="'all', 'mean' or a head index for the token-to-image grid")
    p.add_argument("--scale", choices=("shared", "per-panel"), default="shared", help="colour scale")
    p.add_argument("--percentile", type=float, default=99.0,
                   help="colour limit: this percentile of the cells (default 99; 100 = the maximum)")
    p.add_argument("--outline", type=float, default=None, metavar="SHARE",
                   help="in the token-to-image overlay, outline the fewest cells holding this share of the token's "
                        "attention, e.g. 0.5 (default: none)")
    add_model_options(p)
    p.add_argument("--image", help="an RGB image file (default: a toy scene for the toy model, --seed picks it; "
                                   "a synthetic placeholder image otherwise)")
    p.add_argument("--embedding", help="with --checkpoint or --random: the image's embedding, 1 x 256 x 64 x 64 "
                                       "(.pt/.pth tensor, .npy or .safetensors); default: a colour-based "
                                       "placeholder embedding")
    p.add_argument("--dpi", type=positive_int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def build_inputs(args: argparse.Namespace):
    """(models, image, image_embeddings, high_res_features or None, default click or None): the one place
    where the models and the image come from. The toy model (the default) embeds a toy scene, or --image,
    with its own encoder; a checkpoint or random weights take --embedding, or a colour-based placeholder
    embedding of --image (or of a placeholder image). SAM 2's high-resolution features come with the toy
    SAM 2's embedding, and are stand-ins (the embedding repeated) otherwise."""
    from ..attention.inputs import placeholder_embedding, placeholder_image

    models = load_models(args, seed=args.seed)
    decoder, prompt_encoder = models.decoder, models.prompt_encoder
    if models.toy is not None:
        if args.embedding:
            raise CommandError("the toy model embeds its images itself: drop --embedding (or give --checkpoint)")
        if not args.image:
            return models, models.image, models.image_embeddings, models.high_res_features, default_click(args.seed)
        image = load_image(args.image)
        side = prompt_encoder.input_image_size[0]
        if image.shape[:2] != (side, side):
            raise CommandError(f"the toy model takes {side} x {side} images (H0 x W0), got {image.shape[0]} x "
                               f"{image.shape[1]} in {args.image}")
        return (models, image, *models.embed(image), None)
    image = load_image(args.image) if args.image else placeholder_image()
    if args.embedding:
        embeddings = load_embedding(args.embedding)
        want = (1, decoder.transformer_dim, *prompt_encoder.image_embedding_size)
        if tuple(embeddings.shape) != want:
            raise CommandError(f"the embedding in {args.embedding} must be 1 x C x H x W = "
                               f"{' x '.join(map(str, want))}, got {' x '.join(map(str, embeddings.shape))}")
    else:
        embeddings = placeholder_embedding(image, seed=args.seed, grid=prompt_encoder.image_embedding_size[0],
                                           input_size=max(prompt_encoder.input_image_size))
    from ..sam2 import stand_in_high_res_features

    return models, image, embeddings, stand_in_high_res_features(decoder, embeddings) if models.sam2 else None, None


def default_click(seed: int) -> Optional[str]:
    """A foreground click deep inside the largest object of toy scene ``seed``."""
    from ..toy import click_inside, make_scene

    scene = make_scene(seed=seed)
    if not len(scene.object_masks):
        return None
    largest = int(np.argmax(scene.object_masks.reshape(len(scene.object_masks), -1).sum(1)))
    x, y = click_inside(scene.object_masks[largest])
    return f"{x:g},{y:g},1"


def describe_prompts(
    args: argparse.Namespace, image_size: Tuple[int, int], input_size: int, default_click: Optional[str] = None
):
    """The --point / --box prompt, from image pixels to the prompt encoder's input frame
    (``input_size`` is the side of its square input, 1024 in SAM)."""
    from ..prompts import Prompts
    from ..utils.transforms import to_input_frame

    h0, w0 = image_size
    points: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    texts = args.point
    if texts is None and not args.box:
        texts = [default_click or f"{0.3 * w0:.0f},{0.4 * h0:.0f},1"]  # the placeholder's red disc
    if texts:
        xyl = [parse_numbers(t, 3, "--point X,Y,LABEL") for t in texts]
        for t, (_, _, label) in zip(texts, xyl):
            if label not in (0.0, 1.0):
                raise CommandError(f"--point X,Y,LABEL: LABEL must be 1 (foreground) or 0 (background), got {t!r}")
        coords = torch.tensor([[[x, y] for x, y, _ in xyl]], dtype=torch.float32)  # 1 x N x 2
        labels = torch.tensor([[int(lab) for _, _, lab in xyl]])  # 1 x N
        points = (to_input_frame(coords, image_size, input_size).float(), labels)
    boxes = None
    if args.box:
        x0, y0, x1, y1 = parse_numbers(args.box, 4, "--box X0,Y0,X1,Y1")
        corners = to_input_frame(torch.tensor([[x0, y0], [x1, y1]]), image_size, input_size).float()  # 2 x 2
        boxes = corners.reshape(1, 4)  # 1 x 4
    return Prompts(points=points, boxes=boxes)


def run(args: argparse.Namespace) -> int:
    from ..attention import capture_attention, token_names
    from ..figures.attention import plot_image_to_token, plot_token_self, plot_token_to_image, token_index

    out = writable_path(args.out)
    if not 0.0 < args.percentile <= 100.0:
        raise CommandError(f"--percentile must be in (0, 100], got {args.percentile:g}")
    if args.outline is not None and not 0.0 < args.outline <= 1.0:
        raise CommandError(f"--outline SHARE must be in (0, 1], got {args.outline:g}")
    torch.manual_seed(args.seed)
    models, image, embeddings, features, click = build_inputs(args)
    prompt_encoder, decoder = models.prompt_encoder, models.decoder
    prompts = describe_prompts(args, image.shape[:2], max(prompt_encoder.input_image_size), click)
    token = int(args.token) if args.token.isdigit() else args.token
    heads = int(args.heads) if args.heads.isdigit() else args.heads
    h = decoder.transformer.num_heads
    if heads not in ("all", "mean") and not (isinstance(heads, int) and heads < h):
        raise CommandError(f"--heads must be 'all', 'mean' or an index in 0..h-1 = "
                         f"0..{h - 1}, got {args.heads!r}")
    if models.sam2:
        from ..sam2 import capture_sam2_attention, sam2_token_names

        names = sam2_token_names(prompts, decoder)[0]
    else:
        names = token_names(prompts, decoder.num_mask_tokens)[0]
    if not (isinstance(token, int) and token < len(names)) and token not in names \
            and [n.split(" (")[0] for n in names].count(token) != 1:
        raise CommandError(f"no token named {args.token!r}; tokens are {names}")
    if models.sam2:
        record = capture_sam2_attention(prompt_encoder, decoder, embeddings, prompts, high_res_features=features,
                                        device="cpu")
    else:
        record = capture_attention(prompt_encoder, decoder, embeddings, prompts, device="cpu")
    colour = {"scale": args.scale, "percentile": args.percentile}  # the overlays: sam_explain.render
    try:
        t = token_index(record, token)
        name = slug(record.names(0)[t])
        figures = {
            f"token_to_image_{name}.png": plot_token_to_image(record, t, heads=heads, **colour),
            f"token_to_image_{name}_overlay.png": plot_token_to_image(record, t, heads=heads, image=image,
                                                                      outline=args.outline, **colour),
            "image_to_token_overlay.png": plot_image_to_token(record, image=image, **colour),
            "token_self.png": plot_token_self(record, scale=args.scale),
        }
    except ValueError as err:
        raise CommandError(f"{err}") from None
    out.mkdir(parents=True, exist_ok=True)
    print(models.label)
    print(f"tokens: {', '.join(record.names(0))}")
    for filename, fig in figures.items():
        path = out / filename
        # what drew it, on the picture itself (RANDOM weights say so here too)
        fig.text(0.5, -0.005, models.label, ha="center", va="top", fontsize=8, color="dimgray", wrap=True)
        fig.savefig(path, dpi=args.dpi, bbox_inches="tight")
        print(path)
    return 0
