# %% [markdown]
# # 1. A tour of SAM's mask decoder
#
# Segment Anything (SAM) is three networks in a row:
#
# 1. an **image encoder** turns the picture into an *image embedding*, a 64 x 64 grid of
#    256-number vectors (run once per image, the expensive part);
# 2. a **prompt encoder** turns your clicks, boxes and rough masks into vectors of the same
#    256 channels;
# 3. the **mask decoder**, the subject of these notebooks, reads both and answers with masks
#    and a guess of how good each mask is.
#
# The decoder is small (about 4 million parameters) and fast, which is why SAM can answer a
# click in real time once the image is encoded. This notebook runs it once, end to end, and
# lists every tensor it touches. The later notebooks open each step.
#
# **Symbols** used everywhere (in the code, the errors and the docs):
#
# | symbol | meaning | SAM |
# |---|---|---|
# | B | prompt sets (each gives its own masks) | any |
# | N | points in a prompt set | any |
# | N' | sparse prompt tokens (points, padding point, box corners) | N + 1, N + 2, 2 or 0 |
# | T | tokens in the decoder: 1 IoU token + M mask tokens + N' | 5 + N' |
# | C | channels | 256 |
# | H x W | the image-embedding grid | 64 x 64 |
# | h, d | attention heads, channels per head | 8, 32 or 16 |
# | M | mask tokens | 4 |
#
# We use sam-explain's **toy model**: SAM's real prompt encoder and mask decoder, at SAM's sizes,
# trained on synthetic scenes of coloured shapes with a small image encoder of its own (see
# `docs/toy_model.md`). Nothing is downloaded. The toy image is 256 x 256 pixels and point
# coordinates are in its pixels.

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt

import sam_explain as se
from sam_explain.figures import show_mask
from sam_explain.toy import click_inside, make_scene

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)
decoder, prompt_encoder = model.mask_decoder, model.prompt_encoder
print("running on", device)

# %% [markdown]
# ## What goes in
#
# A scene, and its embedding. The image encoder (the toy one here) maps the 256 x 256 x 3
# image to **1 x C x H x W = 1 x 256 x 64 x 64**: one 256-vector for each 4 x 4 patch.

# %%
scene = make_scene(seed=11)
image_embeddings = model.embed(scene.image)  # 1 x C x H x W
assert image_embeddings.shape == (1, 256, 64, 64)

k = int(np.argmax(scene.object_masks.sum(axis=(1, 2))))  # the largest object
click = click_inside(scene.object_masks[k])  # (x, y), deep inside it

fig, ax = plt.subplots(figsize=(3.5, 3.5))
ax.imshow(scene.image)
ax.plot(*click, marker="*", color="lime", markersize=16, markeredgecolor="white")
ax.set_title(f"toy scene, click at {click}")
ax.axis("off")
plt.show()

# %% [markdown]
# The prompt encoder turns the click into **sparse** embeddings (one vector per point, plus a
# padding point: B x N' x C = 1 x 2 x 256) and, since we gave no mask, a **dense** embedding that
# is the same learned vector at every grid cell (B x C x H x W). It also gives the positional
# encoding of every grid cell, `image_pe`, 1 x C x H x W.

# %%
coords = torch.tensor([[click]], device=device)  # B x N x 2 = 1 x 1 x 2
labels = torch.tensor([[1]], device=device)  # B x N = 1 x 1, 1 = foreground
with torch.no_grad():
    sparse, dense = prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    image_pe = prompt_encoder.get_dense_pe()
for name, t, sym in [("image_embeddings", image_embeddings, "1 x C x H x W"),
                     ("image_pe", image_pe, "1 x C x H x W"),
                     ("sparse", sparse, "B x N' x C"), ("dense", dense, "B x C x H x W")]:
    print(f"{name:<17} {sym:<15} = {' x '.join(map(str, t.shape))}")
assert sparse.shape == (1, 2, 256) and dense.shape == (1, 256, 64, 64) and image_pe.shape == (1, 256, 64, 64)

# %% [markdown]
# ## What comes out
#
# With `multimask_output=True` the decoder returns three masks, **B x 3 x 4H x 4W = 1 x 3 x 256 x 256**
# logits (a pixel is in the mask where the logit is above 0), and three predicted IoUs, B x 3: the
# decoder's own estimate of how well each mask overlaps the object you meant.

# %%
with torch.no_grad():
    masks, iou_pred = decoder(image_embeddings=image_embeddings, image_pe=image_pe,
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                              multimask_output=True)
assert masks.shape == (1, 3, 256, 256) and iou_pred.shape == (1, 3)

fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
for k, ax in enumerate(axes):
    ax.imshow(scene.image)
    show_mask(ax, masks[0, k] > 0)
    ax.plot(*click, marker="*", color="lime", markersize=12, markeredgecolor="white")
    ax.set_title(f"mask {k + 1}: predicted IoU {iou_pred[0, k]:.2f}")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Every step, with its shape
#
# `se.trace_shapes` records each module call and each *hook point* (a named place inside a
# module where a tensor passes) during a forward, with shapes in symbols and numbers. Here are
# the decoder's own top-level steps; the full trace follows, with the second transformer layer
# folded into the first (they have the same shapes).

# %%
with se.trace_shapes(decoder) as trace:
    with torch.no_grad():
        decoder(image_embeddings=image_embeddings, image_pe=image_pe, sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, multimask_output=True)
trace.filter(max_depth=1)

# %%
trace.collapse()

# %% [markdown]
# ## Where the parameters are
#
# `torchinfo` summarises the decoder, 4,058,340 parameters: most of them in the two
# transformer layers' MLPs (256 -> 2048 -> 256), then the four hypernetwork MLPs and the IoU head.

# %%
import torchinfo

summary = torchinfo.summary(
    decoder, input_data=[image_embeddings, image_pe, sparse, dense], multimask_output=True,
    depth=2, col_names=("output_size", "num_params"), verbose=0, device=device,
)
print(summary)
assert summary.total_params == 4_058_340
assert sum(p.numel() for p in prompt_encoder.parameters()) == 6_220

# %% [markdown]
# **Next**: [2. Prompts and tokens](02_prompts_and_tokens.ipynb): how the click became those two
# sparse vectors, and how the decoder's T = 5 + N' tokens are assembled.
