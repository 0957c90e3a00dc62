# %% [markdown]
# # 6. End to end: from a click to a mask on the image
#
# The decoder's masks are 256 x 256 logits. How do they land on the pixels of the image you
# clicked? It depends on the geometry of the input:
#
# * **The toy model** sees its 256 x 256 image directly: the prompt encoder's input frame is the
#   image, and the 4H x 4W = 256 x 256 low-resolution mask lines up pixel for pixel.
# * **Real SAM** resizes a photo of h0 x w0 pixels so that its longest side is 1024, places it at
#   the top left of a 1024 x 1024 canvas and pads the rest. The 64 x 64 grid covers the whole
#   canvas, so the 256 x 256 logits do too. To get a mask on the photo: upsample the logits to
#   1024 x 1024, crop the resized photo's part, resize it to h0 x w0, threshold at 0.

# %%
import os

import numpy as np
import torch
import torch.nn.functional as F
import matplotlib.pyplot as plt

import sam_explain as se
from sam_explain.figures import show_mask
from sam_explain.utils.transforms import resized_shape
from sam_explain.toy import click_inside, make_scene

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)

# %% [markdown]
# ## The toy model, one click
#
# Scene 23 has an object with a nested part; we click on the part. One click cannot say whether
# the part or the whole object is meant, and the three masks give both readings with their
# predicted IoU (the ambiguity the multimask output exists for, notebook 5).

# %%
scene = make_scene(seed=23)
image_embeddings = model.embed(scene.image)  # 1 x 256 x 64 x 64
k = int(np.argmax(scene.has_part))  # the object with a nested part
assert scene.has_part[k]
click = click_inside(scene.part_masks[k])  # (x, y), deep inside the part
masks, iou_pred = model.predict(image_embeddings, points=[click])  # 1 x 3 x 256 x 256, 1 x 3
assert masks.shape == (1, 3, 256, 256) and iou_pred.shape == (1, 3)
pred = (masks[0] > 0).cpu().numpy()  # 3 x 256 x 256
iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
with_object = [iou(m, scene.object_masks[k]) for m in pred]
with_part = [iou(m, scene.part_masks[k]) for m in pred]
print("IoU with the whole object:", np.round(with_object, 2), "  with the part:", np.round(with_part, 2))
assert max(with_object) > 0.9 and any(p > o for p, o in zip(with_part, with_object))  # both readings

fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
axes[0].imshow(scene.image)
axes[0].plot(*click, marker="*", color="lime", markersize=14, markeredgecolor="white")
axes[0].set_title("click")
for j, ax in enumerate(axes[1:]):
    ax.imshow(scene.image)
    show_mask(ax, masks[0, j] > 0)
    ax.set_title(f"mask {j + 1}, predicted IoU {iou_pred[0, j]:.2f}", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Now you: click and watch
#
# The live explorer runs the same call for every click on its image: a click adds a foreground
# point, shift-click a background point, a drag a box; the three masks and their predicted IoU
# appear beside the attention map of the best mask's token (change it with the controls). Try a
# click on the part, then one on the object around it, then undo. `explorer.click(x, y, label=0)`
# does from Python what a shift-click does. Refining with the previous mask as `mask_input` is
# question 6 of [7. Questions learners ask](07_questions.ipynb).

# %%
explorer = se.live_explorer(model, scene.image)
explorer.click(*click)  # the click above; returns the picture as shown, H x W x 3 uint8
explorer

# %% [markdown]
# ## SAM's geometry, step by step
#
# Take a photo of h0 x w0 = 480 x 640. SAM resizes it to 768 x 1024 (longest side 1024, the
# other `int(480 * 1024 / 640 + 0.5)`), pads to 1024 x 1024, encodes a 64 x 64 grid and decodes
# 256 x 256 logits. The photo covers the top 768 / 4 = 192 rows of those logits; the rest is
# padding. We follow the official post-processing on a stand-in logit map.

# %%
h0, w0 = 480, 640
h, w = resized_shape((h0, w0))  # the photo inside the 1024 x 1024 input
print(f"photo {h0} x {w0} -> resized {h} x {w} -> padded 1024 x 1024 -> low-res logits 256 x 256")
low_res = masks[:, :1].cpu()  # 1 x 1 x 256 x 256, any logits will do to follow the shapes
up = F.interpolate(low_res, (1024, 1024), mode="bilinear", align_corners=False)  # 1 x 1 x 1024 x 1024
cropped = up[..., :h, :w]  # 1 x 1 x 768 x 1024: drop the padding
on_photo = F.interpolate(cropped, (h0, w0), mode="bilinear", align_corners=False)  # 1 x 1 x 480 x 640
mask = on_photo > 0
assert (h, w) == (768, 1024) and mask.shape == (1, 1, 480, 640)
for name, t in [("low-res logits", low_res), ("upsampled", up), ("cropped", cropped), ("on the photo", on_photo)]:
    print(f"{name:<15} {' x '.join(map(str, t.shape))}")

# %% [markdown]
# Prompts go the other way: a click at (x0, y0) on the photo is given to the prompt encoder at
# (x0 * w / w0, y0 * h / h0) in the 1024 frame (`sam_explain.utils.transforms.to_input_frame`).
# Passing photo coordinates unchanged is a classic bug: the click lands somewhere else.
#
# ## Real SAM weights
#
# If you have downloaded an official checkpoint, point `SAM_CHECKPOINT` at it (and optionally
# `SAM_IMAGE` at a photo) before starting JupyterLab; the cells below then run the whole of SAM
# (image encoder, prompt encoder, mask decoder, pre- and post-processing) on it. Nothing is
# downloaded. Without it, they say so and do nothing.

# %%
checkpoint = os.environ.get("SAM_CHECKPOINT")
if not checkpoint:
    print("SAM_CHECKPOINT is not set: skipping the real-SAM cells. To run them, download e.g. "
          "sam_vit_b_01ec64.pth from the segment-anything README and start JupyterLab with "
          "SAM_CHECKPOINT=/path/to/sam_vit_b_01ec64.pth")
    predictor = None
else:
    sam = se.build_sam(checkpoint=checkpoint).to(device)
    predictor = se.SamPredictor(sam)
    if os.environ.get("SAM_IMAGE"):
        from PIL import Image

        photo = np.array(Image.open(os.environ["SAM_IMAGE"]).convert("RGB"))
    else:
        photo = np.repeat(np.repeat(scene.image, 3, axis=0), 4, axis=1)  # a 768 x 1024 stand-in
    predictor.set_image(photo)  # the image encoder: seconds on a GPU, tens of seconds on a CPU
    print("image", photo.shape, "-> embedding", tuple(predictor.get_image_embedding().shape))

# %%
if predictor is not None:
    point = np.array([[photo.shape[1] // 2, photo.shape[0] // 2]])
    with se.record_attention(predictor.model.mask_decoder, device="cpu") as attn:
        sam_masks, sam_iou, sam_low_res = predictor.predict(point_coords=point, point_labels=np.array([1]))
    print("masks", sam_masks.shape, "IoU", sam_iou, "low-res", sam_low_res.shape)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for j, ax in enumerate(axes):
        ax.imshow(photo)
        show_mask(ax, sam_masks[j])
        ax.plot(*point[0], marker="*", color="lime", markersize=14)
        ax.set_title(f"mask {j + 1}, predicted IoU {sam_iou[j]:.2f}")
        ax.axis("off")
    plt.show()

# %% [markdown]
# The live explorer on the photo: the image embedding the predictor already holds is used as it is
# (`reuse_embedding=True`), so each click runs only the prompt encoder and the decoder, a fraction
# of a second even on a CPU.

# %%
if predictor is not None:
    sam_explorer = se.live_explorer(predictor, image=photo, reuse_embedding=True)
    sam_explorer.click(*point[0])
    from IPython.display import display

    display(sam_explorer)

# %% [markdown]
# **Next**: [7. Questions learners ask](07_questions.ipynb).
