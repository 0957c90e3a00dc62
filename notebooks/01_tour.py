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
# The source for the design is the SAM paper, Kirillov et al. 2023, *Segment Anything*
# (arXiv:2304.02643): §3 describes the three networks, Appendix A the decoder in detail. Where
# these notebooks say *why* something is built the way it is, they cite it; where the reason is
# our own reading of the code or of an experiment, they say so.
#
# **Symbols** used everywhere (in the code, the errors and the docs):
#
# | symbol | meaning | SAM |
# |---|---|---|
# | B | prompt sets (each gives its own masks) | any |
# | I | images given to the decoder: 1, shared by the B prompt sets, or B, one each | 1 |
# | N | points in a prompt set | any |
# | N' | sparse prompt tokens (points, padding point, box corners) | N + 1, N + 2, 2 or 0 |
# | T | tokens in the decoder: 1 IoU token + M mask tokens + N' | 5 + N' |
# | C | channels | 256 |
# | H x W | the image-embedding grid | 64 x 64 |
# | h, d | attention heads, channels per head | 8, 32 or 16 |
# | M | mask tokens | 4 |
# | K | masks returned: M - 1 = 3 with `multimask_output=True`, 1 without | 3 or 1 |
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
# module where a tensor passes) during a forward, with shapes in symbols and numbers. The whole
# trace has more than a hundred rows; here are the decoder's own steps, in the order they run:
# the output tokens and the prompt tokens concatenated (`hook_tokens`, B x T x C), the image side
# (`hook_src`, B x C x H x W), the transformer, the IoU and mask tokens read off its output,
# the upscaling, the hypernetworks and the masks.

# %%
with se.trace_shapes(decoder) as trace:
    with torch.no_grad():
        decoder(image_embeddings=image_embeddings, image_pe=image_pe, sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, multimask_output=True)
trace.filter(max_depth=1)

# %% [markdown]
# One level down, the transformer: two blocks, then a final token-to-image attention. Layer 1
# has the same shapes as layer 0, so `collapse()` folds its rows into one.

# %%
trace.collapse().filter("transformer", max_depth=2)

# %% [markdown]
# And one block's four steps (notebook 3 opens them): the tokens' self-attention, the tokens
# reading the image (T queries over HW = 4096 keys), an MLP on each token, the image reading the
# tokens (4096 queries over T keys), each followed by a LayerNorm. The hook points inside each
# attention (q, k, v, logits, probabilities) are one level further down: `trace.filter(path)`
# shows any part whole.

# %%
trace.filter("transformer.layers.0", max_depth=3)

# %% [markdown]
# ## Where the parameters are
#
# `torchinfo` summarises the decoder: 4,058,340 parameters. Grouped by what they do (the next
# cell counts them): about half in the two transformer layers' MLPs (256 -> 2048 -> 256, 2.10 M),
# then the attention projections (q, k, v and out of the seven attentions, 1.19 M), the four
# hypernetwork MLPs (0.56 M), the IoU head (0.13 M), the upscaling (74 k), and a few thousand in the
# LayerNorms and the five output tokens.

# %%
import torchinfo

summary = torchinfo.summary(
    decoder, input_data=[image_embeddings, image_pe, sparse, dense], multimask_output=True,
    depth=2, col_names=("output_size", "num_params"), verbose=0, device=device,
)
print(summary)
assert summary.total_params == 4_058_340
assert sum(p.numel() for p in prompt_encoder.parameters()) == 6_220

def group(name):
    if ".mlp." in name:
        return "transformer MLPs"
    if "attn" in name:
        return "attention projections"
    if "output_hypernetworks_mlps" in name:
        return "hypernetwork MLPs"
    if "iou_prediction_head" in name:
        return "IoU head"
    if "output_upscaling" in name:
        return "upscaling"
    return "LayerNorms and tokens"

counts = {}
for name, p in decoder.named_parameters():
    counts[group(name)] = counts.get(group(name), 0) + p.numel()
for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
    print(f"{name:<24} {n:>10,}")
assert counts["transformer MLPs"] == 2_101_760 and counts["attention projections"] == 1_185_408
assert counts["hypernetwork MLPs"] == 559_232 and counts["IoU head"] == 132_612 and counts["upscaling"] == 73_952

# %% [markdown]
# **Next**: [2. Prompts and tokens](02_prompts_and_tokens.ipynb): how the click became those two
# sparse vectors, and how the decoder's T = 5 + N' tokens are assembled.
