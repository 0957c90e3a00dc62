# %% [markdown]
# # 8. The deployed decoder: ONNX
#
# Most applications, and SAM's own web demo, do not run the PyTorch modules of notebooks 2 to 6.
# They run one ONNX graph written by the official `scripts/export_onnx_model.py`: the prompt encoder,
# the mask decoder and the mask post-processing together, with an interface of its own. Many of the
# questions in the official repository's issues (github.com/facebookresearch/segment-anything/issues;
# the numbers below are threads) are about that interface:
#
# | question | issues | section |
# | --- | --- | --- |
# | What goes in, what comes out? What are `has_mask_input` and the padding point? | #115, #469, #395, #312 | 1, 3 |
# | Does the ONNX file contain the image encoder? | #16, #613, #14 | 1 |
# | My mask is in the wrong place | #56, #130, #579, #753, #795 | 2 |
# | Why four masks? What does `return_single_mask` pick? | #455, #276, #395, #328 | 4 |
# | Why does it differ from `SamPredictor`? | #714, #633 | 5, 6 |
# | Several boxes at once? "Segment everything"? | #308, #293, #111, #312; #85, #339, #649, #768 | 7 |
# | How does the web demo use it? | #55, #239, #203, #727 | 7 |
#
# sam-explain builds the same graph from its annotated modules (`sam_explain.utils.onnx`,
# [docs/onnx.md](../docs/onnx.md)); the tests check it against the official export of the same
# weights in onnxruntime. Here we export the toy model and put the graph beside the PyTorch path on
# the same prompt. onnxruntime runs on the CPU, so the toy model stays there too.

# %%
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
import matplotlib.pyplot as plt

import sam_explain as se
from sam_explain.figures import show_mask
from sam_explain.toy import click_inside, make_scene, mask_iou
from sam_explain.utils.onnx import OnnxDecoder, SamOnnxModel, export_onnx_model, onnx_prompt
from sam_explain.utils.transforms import image_to_input, postprocess_masks, resized_shape, to_original_frame

model = se.toy_model()  # CPU: S = 256 (its padded square input), C x H x W = 256 x 64 x 64
pe_enc, decoder = model.prompt_encoder, model.mask_decoder
S = pe_enc.input_image_size[0]
folder = Path(tempfile.mkdtemp(prefix="sam_explain_onnx_"))  # the exported files live here, not in the repo

# %% [markdown]
# ## 1. Export, and what is in the file
#
# `export_onnx_model` traces `SamOnnxModel` (the official class's drop-in) with the legacy TorchScript
# exporter, as the official script does, into a file of weights and operators. The command line
# does the same: `sam-explain export-onnx --toy --out toy.onnx` (or `--checkpoint sam_vit_b_01ec64.pth`).
#
# What is in it (#16, #613, #14): the weights of the prompt encoder and the mask decoder, **not** the
# image encoder. The image embedding is an input: compute it once per image (with the PyTorch
# encoder, or an encoder exported separately) and run the small graph for every click.

# %%
path = export_onnx_model(pe_enc, decoder, folder / "toy_decoder.onnx")
graph = onnx.load(str(path)).graph
owners = sorted({w.name.split(".")[0] for w in graph.initializer if "." in w.name})
in_file = sum(int(np.prod(w.dims)) for w in graph.initializer)
params = {name: sum(p.numel() for p in getattr(model, name).parameters())
          for name in ("image_encoder", "prompt_encoder", "mask_decoder")}
print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB, {len(graph.node)} operators, "
      f"{in_file:,} numbers in its weights; named weights belong to {owners}")
print("parameters in PyTorch:", {k: f"{v:,}" for k, v in params.items()})
assert "image_encoder" not in owners
assert in_file < params["prompt_encoder"] + params["mask_decoder"] + 2 * params["image_encoder"] // 100

# %% [markdown]
# The graph's interface, as onnxruntime reads it from the file. B = 1: one prompt set per call. The
# one dynamic axis is `num_points`, N. The outputs' sizes depend on the inputs' values (the masks
# come out at the original image size), so the file names them by the operator that makes them.

# %%
onnx_decoder = OnnxDecoder(path)  # an onnxruntime session, with input checks in front of it
for kind, values in (("input", onnx_decoder.session.get_inputs()), ("output", onnx_decoder.session.get_outputs())):
    for v in values:
        print(f"{kind:<7} {v.name:<17} {str(v.shape):<52} {v.type}")

# %% [markdown]
# ## 2. A photo, and where the clicks go
#
# The toy's image encoder takes S x S = 256 x 256 pixels. For a photo of another size SAM's rule
# applies (notebook 6): resize it so that its longest side is S, put it at the top left of the
# square, pad the rest. Our photo is H0 x W0 = 240 x 320 (a toy scene, cut and enlarged); it fills
# Hr x Wr = 192 x 256 of the square, at 0.8 of its size, as a 1280 x 960 photo fills SAM's 1024.
#
# The graph takes `point_coords` in that **resized frame**, not in photo pixels. Passing photo
# pixels is the most reported ONNX bug (#56, #130, #579, #753, #795): the click lands somewhere
# else. `onnx_prompt(..., original_size=(H0, W0))` moves them (`ResizeLongestSide.apply_coords`).

# %%
H0, W0 = 240, 320
scene = make_scene(seed=21)
cut = torch.from_numpy(scene.image[32:224]).permute(2, 0, 1)[None].float()  # 1 x 3 x 192 x 256
photo = F.interpolate(cut, size=(H0, W0), mode="bilinear", align_corners=False)  # 1 x 3 x H0 x W0
photo = photo[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()  # H0 x W0 x 3 uint8
objects = torch.from_numpy(scene.object_masks[:, 32:224]).float()[:, None]  # K x 1 x 192 x 256
truth = F.interpolate(objects, size=(H0, W0), mode="nearest")[:, 0].numpy() > 0.5  # K x H0 x W0
k = 0  # the blue disc
click = np.array([click_inside(truth[k])], dtype=np.float64)  # 1 x 2: (x, y) in photo pixels

square = (image_to_input(photo, S) * 255).round().astype(np.uint8)  # S x S x 3: resized and padded
embedding = model.embed(square)  # 1 x C x H x W = 1 x 256 x 64 x 64
Hr, Wr = resized_shape((H0, W0), S)
print(f"photo {H0} x {W0} -> resized {Hr} x {Wr} -> padded {S} x {S} -> embedding {tuple(embedding.shape)}")

coords, labels = onnx_prompt(points=click, labels=np.array([1]), original_size=(H0, W0), img_size=S)
print("click on the photo", click[0], "-> point_coords", coords[0].tolist(), " point_labels", labels[0].tolist())
wrong_coords, _ = onnx_prompt(points=click, labels=np.array([1]), img_size=S)  # photo pixels, not moved


right = onnx_decoder(embedding.numpy(), coords, labels, orig_im_size=(H0, W0))
wrong = onnx_decoder(embedding.numpy(), wrong_coords, labels, orig_im_size=(H0, W0))
best = int(right["iou_predictions"][0].argmax())
right_mask, wrong_mask = right["masks"][0, best] > 0, wrong["masks"][0, best] > 0  # H0 x W0
print(f"IoU with the object: resized-frame click {mask_iou(right_mask, truth[k]):.2f}, "
      f"photo-pixel click {mask_iou(wrong_mask, truth[k]):.2f}")
assert mask_iou(right_mask, truth[k]) > 0.7 and mask_iou(wrong_mask, truth[k]) < 0.2

fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
seen = to_original_frame(wrong_coords[0, 0], (H0, W0), S)  # 2: where the graph's frame puts it, in photo pixels
for ax, mask, title in ((axes[0], right_mask, "point_coords in the resized frame"),
                        (axes[1], wrong_mask, "photo pixels passed unchanged")):
    ax.imshow(photo)
    show_mask(ax, mask, color="yellow", alpha=0.7)
    ax.plot(*click[0], marker="*", color="lime", markersize=15, markeredgecolor="black")
    ax.set_title(title)
    ax.axis("off")
axes[1].plot(*seen, marker="x", color="red", markersize=12, markeredgewidth=3)
axes[1].annotate("where the graph\nsees the click", seen, (seen[0] + 25, seen[1] + 5), color="red", fontsize=9,
                 va="center")
plt.show()

# %% [markdown]
# `orig_im_size` is **(H0, W0), height first**, float32. Swap it and the masks come out W0 x H0:
# the post-processing inside the graph resizes to whatever it is told.

# %%
swapped = onnx_decoder(embedding.numpy(), coords, labels, orig_im_size=(W0, H0))
print("orig_im_size (H0, W0) ->", right["masks"].shape, "   (W0, H0) ->", swapped["masks"].shape)
assert right["masks"].shape == (1, 4, H0, W0) and swapped["masks"].shape == (1, 4, W0, H0)

# %% [markdown]
# ## 3. The padding point
#
# Without a box, the PyTorch `PromptEncoder` appends one point at (0, 0) with label -1 to the
# clicks (notebook 2): SAM was trained with it. The graph appends nothing: the caller must
# (#115, #469, #312). `onnx_prompt` does; leave it out and the decoder sees one token fewer
# (T = 5 + N instead of 5 + N + 1), a prompt unlike those it was trained on, and its logits change.

# %%
no_pad = onnx_decoder(embedding.numpy(), coords[:, :1], labels[:, :1], orig_im_size=(H0, W0))
print("with the padding point:    N =", coords.shape[1], " IoU predictions", np.round(right["iou_predictions"][0], 3))
print("without the padding point: N =", 1, " IoU predictions", np.round(no_pad["iou_predictions"][0], 3))
change = np.abs(no_pad["low_res_masks"] - right["low_res_masks"]).max()
print(f"largest change of a low-res logit: {change:.2f}")
assert change > 0.1

# %% [markdown]
# ## 4. Four masks, and how one is picked
#
# The PyTorch decoder computes all M = 4 masks and returns mask tokens 1..3 (`multimask_output=True`)
# or token 0 (`False`). The graph returns all four, token 0 first (#455, #276). Same prompt, same
# weights: the graph's masks 1..3 are PyTorch's three, its mask 0 is PyTorch's single mask.

# %%
torch_coords = torch.from_numpy(coords)  # 1 x N x 2, the same resized-frame points, padding included
torch_labels = torch.from_numpy(labels).long()  # 1 x N
with torch.no_grad():
    sparse = pe_enc._embed_points(torch_coords, torch_labels, pad=False)  # 1 x N x C, as the graph embeds them
    dense = pe_enc.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *pe_enc.image_embedding_size)
    three, iou3 = decoder(embedding, pe_enc.get_dense_pe(), sparse, dense, multimask_output=True)  # 1 x 3 x 4H x 4W
    one, iou1 = decoder(embedding, pe_enc.get_dense_pe(), sparse, dense, multimask_output=False)  # 1 x 1 x 4H x 4W
low = torch.from_numpy(right["low_res_masks"])  # 1 x 4 x 4H x 4W
print("graph's IoU predictions  ", np.round(right["iou_predictions"][0], 4))
print("PyTorch, single | three  ", np.round(iou1[0].numpy(), 4), np.round(iou3[0].numpy(), 4))
torch.testing.assert_close(low[:, 1:], three, atol=1e-4, rtol=0)
torch.testing.assert_close(low[:, :1], one, atol=1e-4, rtol=0)

# %% [markdown]
# Exported with `return_single_mask=True` (the official script's `--return-single-mask`) the graph
# returns one mask, chosen by `argmax(iou_predictions + (N - 2.5) * [1000, 0, 0, 0])` (#395, #328).
# N counts every row of `point_coords`, the padding point and the box corners included. So one click
# (N = 2) gets the best of tokens 1..3 by predicted IoU, what `SamPredictor` gives with
# `multimask_output=True` and the best score; two clicks (N = 3) get token 0, the single-mask output
# that SAM uses for unambiguous prompts.

# %%
se.show_source(SamOnnxModel.select_masks, lines=("m = self.mask_decoder", "best = torch.argmax"))

# %%
single = OnnxDecoder(export_onnx_model(pe_enc, decoder, folder / "toy_single.onnx", return_single_mask=True))
one_click = single(embedding.numpy(), coords, labels, orig_im_size=(H0, W0))
yy, xx = np.mgrid[:H0, :W0]
away = truth[k] & ((xx - click[0, 0]) ** 2 + (yy - click[0, 1]) ** 2 > 12**2)  # the object, 12 px from the click
second = np.array([click_inside(away)], dtype=np.float64)  # 1 x 2: a second click on the object
c2, l2 = onnx_prompt(points=np.concatenate([click, second]), labels=np.array([1, 1]), original_size=(H0, W0),
                     img_size=S)
two_clicks_all = onnx_decoder(embedding.numpy(), c2, l2, orig_im_size=(H0, W0))
two_clicks = single(embedding.numpy(), c2, l2, orig_im_size=(H0, W0))
def pick(single_out, all_out):
    """Which of the four tokens the single-mask file returned: the one whose low-res mask it is."""
    return int(np.abs(all_out["low_res_masks"][0] - single_out["low_res_masks"][0]).max(axis=(1, 2)).argmin())


print(f"one click,  N = {coords.shape[1]}: picked token {pick(one_click, right)} of IoU predictions "
      f"{np.round(right['iou_predictions'][0], 3)}")
print(f"two clicks, N = {c2.shape[1]}: picked token {pick(two_clicks, two_clicks_all)} of IoU predictions "
      f"{np.round(two_clicks_all['iou_predictions'][0], 3)}")
assert pick(one_click, right) == 1 + int(right["iou_predictions"][0, 1:].argmax())
assert pick(two_clicks, two_clicks_all) == 0

# %% [markdown]
# ## 5. Upscaling and cropping, inside the graph
#
# `SamPredictor` calls `postprocess_masks` after the decoder: bilinear from 4H x 4W to S x S, crop
# the resized photo's Hr x Wr (the rest covered padding), bilinear to H0 x W0. The graph does the
# same inside, reading the sizes from `orig_im_size`. `low_res_masks` is what came before: over the
# whole padded square, so its bottom quarter here lies over padding. Pass it back as `mask_input`
# as it is, never the upscaled masks.

# %%
on_photo = postprocess_masks(low, (Hr, Wr), (H0, W0), S)  # 1 x 4 x H0 x W0, the PyTorch post-processing
diff = (on_photo - torch.from_numpy(right["masks"])).abs().max().item()
print(f"low_res_masks {tuple(low.shape)} -> masks {right['masks'].shape}; graph vs postprocess_masks: {diff:.1e}")
assert diff < 2e-3

fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 1.33]})
axes[0].imshow(low[0, best], cmap="RdBu_r", vmin=-10, vmax=10)
axes[0].axhline(Hr * low.shape[-2] / S - 0.5, color="black", linestyle="--")
axes[0].text(4, Hr * low.shape[-2] / S + 14, "below: padding, cropped away", fontsize=9, color="white")
axes[0].set_title(f"low_res_masks[0, {best}]: {low.shape[-2]} x {low.shape[-1]} logits over the square")
axes[1].imshow(photo)
show_mask(axes[1], right["masks"][0, best] > 0, color="yellow", alpha=0.7)
axes[1].set_title(f"masks[0, {best}] > 0: {H0} x {W0}, on the photo")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 6. Graph and predictor, side by side
#
# "The ONNX model gives a different mask than `SamPredictor`" (#714, #633) comes down to the
# differences above. Matched, they agree: the same clicks in the resized frame, the padding point,
# the masks compared by token (1..3 against `multimask_output=True`), the same post-processing.
#
# | | PyTorch path (`SamPredictor`) | ONNX graph |
# | --- | --- | --- |
# | a box | `boxes=` B x 4 | two points labelled 2 and 3 |
# | the padding point | appended by `PromptEncoder` | appended by the caller |
# | masks returned | tokens 1..3, or token 0 | all four, or one by `select_masks` |
# | coordinates | resized frame (`predictor.transform.apply_coords`) | resized frame (`onnx_prompt`) |
# | `original_size` / `orig_im_size` | (H0, W0) | (H0, W0), float32 |
# | upscaling and crop | `postprocess_masks`, after the decoder | inside the graph |
# | batch | B prompt sets on one image | one prompt set |
#
# The shapes of one PyTorch run of the module that gets exported, as the tracer sees them (the
# hook points are skipped in the export: the file holds none):

# %%
onnx_module = SamOnnxModel.from_parts(pe_enc, decoder, return_single_mask=False).eval()
feeds = {"image_embeddings": embedding, "point_coords": torch_coords, "point_labels": torch.from_numpy(labels),
         "mask_input": torch.zeros(1, 1, 256, 256), "has_mask_input": torch.zeros(1),
         "orig_im_size": torch.tensor([H0, W0], dtype=torch.float32)}
with torch.no_grad(), se.trace_shapes(onnx_module) as trace:
    onnx_module(**feeds)
trace.filter(max_depth=2)

# %% [markdown]
# ## 7. Several boxes, "segment everything", the web demo
#
# **Several boxes** (#308, #293, #111, #312): the graph takes one prompt set per call, and a box is
# two of its points. Several boxes in one call would be one prompt set of several boxes, which SAM
# was not trained for. Call it once per box (each call is the decoder alone, milliseconds), or use the
# PyTorch path, whose `boxes` are B x 4, B prompt sets at once. For a box we take token 0, the
# single-mask output, as SAM's authors advise for unambiguous prompts.

# %%
fig, axes = plt.subplots(1, len(truth), figsize=(4 * len(truth), 3.3))
for obj, ax in enumerate(axes):
    ys, xs = np.nonzero(truth[obj])
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)  # x0, y0, x1, y1 on the photo
    c, lab = onnx_prompt(box=box, original_size=(H0, W0), img_size=S)  # 1 x 2 x 2: the corners, labels 2 and 3
    mask = onnx_decoder(embedding.numpy(), c, lab, orig_im_size=(H0, W0))["masks"][0, 0] > 0  # H0 x W0, token 0
    overlaps = [mask_iou(mask, t) for t in truth]
    print(f"box {obj} {box.astype(int).tolist()}: IoU of its mask with each object {np.round(overlaps, 2).tolist()}")
    assert int(np.argmax(overlaps)) == obj  # each call answers for its own box
    ax.imshow(photo)
    show_mask(ax, mask, color="yellow", alpha=0.7)
    ax.add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, color="red", linewidth=2))
    ax.set_title(f"call {obj + 1}: IoU with the object {overlaps[obj]:.2f}", fontsize=10)
    ax.axis("off")
plt.show()

# %% [markdown]
# The second box holds a rectangle of the same colour as the larger one that covers part of it: the toy,
# which sees colours and edges, cannot tell where one ends, and its mask covers only part of it.

# %% [markdown]
# **Segment everything** (#85, #339, #649, #768): `SamAutomaticMaskGenerator` is PyTorch code around
# the decoder (a grid of points, batches of prompt sets, filtering by predicted IoU and stability,
# non-maximum suppression); it is not in the graph. With the graph alone, run one call per grid point
# and filter as it does.
#
# **The web demo** (#55, #239, #203, #727) runs this graph in the browser with onnxruntime-web; the
# image embedding is computed beforehand with the PyTorch image encoder and loaded as a file, which is
# why a click answers at once and a new image does not.
#
# ## 8. Running it from Python
#
# `OnnxDecoder(path)` opens a session; `decoder(image_embeddings, point_coords, point_labels,
# orig_im_size, mask_input=None)` runs it (with `mask_input` it sets `has_mask_input` to 1), and
# `decoder.run(feeds)` takes the six inputs by name. The graph checks nothing; `OnnxDecoder` checks
# every input first and names what it expected:

# %%
try:
    onnx_decoder(embedding.numpy(), coords[0], labels, orig_im_size=(H0, W0))  # point_coords without its batch axis
except se.ShapeError as err:
    print("ShapeError:", err)
refined = onnx_decoder(embedding.numpy(), c2, l2, orig_im_size=(H0, W0),
                       mask_input=right["low_res_masks"][:, best : best + 1])  # the previous low-res mask
print("with a mask input:", {name: value.shape for name, value in refined.items()})

# %% [markdown]
# **Next**: [9. SAM 2.1's decoder](09_sam2_decoder.ipynb).
