# %% [markdown]
# # 7. Questions learners ask
#
# Each answer comes with a cell that shows the evidence, on the toy model.

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt

import sam_explain as se
from sam_explain.figures import show_mask
from sam_explain.toy import click_inside, make_scene

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)
decoder, pe_enc = model.mask_decoder, model.prompt_encoder
scene = make_scene(seed=11)
image_embeddings = model.embed(scene.image)  # 1 x C x H x W
image_pe = pe_enc.get_dense_pe()


a, b = list(click_inside(scene.object_masks[0])), list(click_inside(scene.object_masks[1]))

# %% [markdown]
# ## Does B count points? No: prompt sets.
#
# B is the number of **prompt sets**; each set gives its own masks. Two points in one set
# (B = 1) describe *one* object together; the same two points as two sets (B = 2) ask two
# separate questions.

# %%
with torch.no_grad():
    together = pe_enc(points=(torch.tensor([[a, b]], device=device), torch.tensor([[1, 1]], device=device)), boxes=None, masks=None)
    apart = pe_enc(points=(torch.tensor([[a], [b]], device=device), torch.tensor([[1], [1]], device=device)), boxes=None, masks=None)
    m1, _ = decoder(image_embeddings, image_pe, *together, multimask_output=False)
    m2, _ = decoder(image_embeddings, image_pe, *apart, multimask_output=False)
print("two points, one set:  sparse", tuple(together[0].shape), "-> masks", tuple(m1.shape))
print("two sets of one point: sparse", tuple(apart[0].shape), "-> masks", tuple(m2.shape))
assert m1.shape == (1, 1, 256, 256) and m2.shape == (2, 1, 256, 256)
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, m, title in zip(axes, [m1[0, 0], m2[0, 0], m2[1, 0]], ["B = 1: both points", "B = 2: set 0", "B = 2: set 1"]):
    ax.imshow(scene.image)
    show_mask(ax, m > 0)
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Why four mask tokens?
#
# Three answer an ambiguous prompt in three ways (`multimask_output=True`); the fourth, token 0,
# is for prompts that say clearly what they mean (`multimask_output=False`). During training
# only the best of tokens 1..3 is penalised for an ambiguous prompt, so they learn to spread
# over the plausible readings, e.g. a nested part and the whole object. Here: a click on a nested
# part, if this scene has one.

# %%
scene2 = make_scene(seed=5)
k = int(np.argmax(scene2.has_part))
emb2 = model.embed(scene2.image)
masks, iou = model.predict(emb2, points=[click_inside(scene2.part_masks[k] if scene2.has_part[k] else scene2.object_masks[k])])
whole, part = torch.from_numpy(scene2.object_masks[k]).to(device), torch.from_numpy(scene2.part_masks[k]).to(device)
for j in range(3):
    pred = masks[0, j] > 0
    iou_whole = ((pred & whole).sum() / (pred | whole).sum()).item()
    iou_part = ((pred & part).sum() / (pred | part).sum().clamp(min=1)).item()
    print(f"mask {j + 1}: IoU with the nested part {iou_part:.2f}, with the whole object {iou_whole:.2f}")

# %% [markdown]
# ## What is the padding point for?
#
# With points and no box, the prompt encoder appends a token that is exactly `not_a_point_embed`
# (notebook 2). SAM was trained with it there, so it is part of what "points only" looks like to
# the decoder. Remove it and the decoder sees an input it never saw in training; the masks change:

# %%
with torch.no_grad():
    sparse, dense = pe_enc(points=(torch.tensor([[a]], device=device), torch.tensor([[1]], device=device)), boxes=None, masks=None)
    with_pad, iou_with = decoder(image_embeddings, image_pe, sparse, dense, multimask_output=True)
    without_pad, iou_without = decoder(image_embeddings, image_pe, sparse[:, :-1], dense, multimask_output=True)
changed = ((with_pad > 0) != (without_pad > 0)).float().mean().item()
print(f"N' = {sparse.shape[1]} with the padding point, {sparse.shape[1] - 1} without")
print(f"pixels whose mask decision changes: {changed:.1%}; predicted IoU {iou_with[0].tolist()} -> {iou_without[0].tolist()}")

# %% [markdown]
# ## Why can the predicted IoU exceed 1 (or go below 0)?
#
# The IoU head is an MLP whose last layer is a plain `Linear`: no sigmoid, no clamp
# (`sigmoid_output=False`). It was trained with a squared error against IoUs in [0, 1], which pulls
# its outputs towards that range but does not bound them. On an input unlike its training data it
# can say anything:

# %%
print("sigmoid on the IoU head's output:", decoder.iou_prediction_head.sigmoid_output)
print("last layer:", decoder.iou_prediction_head.layers[-1])
with torch.no_grad():
    strange = torch.randn(1, 256, 64, 64, device=device) * 5  # an embedding no image would give
    _, iou_strange = decoder(strange, image_pe, sparse, dense, multimask_output=True)
print("predicted IoU on a noise embedding:", [round(v, 3) for v in iou_strange[0].tolist()])

# %% [markdown]
# ## What does `mask_input` expect?
#
# **Logits**, B x 1 x 4H x 4W = B x 1 x 256 x 256: the low-resolution output of a previous
# prediction (not a 0/1 mask, not probabilities, not the full-resolution mask), in the same frame
# as the decoder's output. Anything else is refused with the expected shape:

# %%
try:
    pe_enc(points=None, boxes=None, masks=torch.zeros(1, 1, 1024, 1024, device=device))
except se.ShapeError as err:
    print("ShapeError:", err)

# %% [markdown]
# ## Why is the image embedding repeated per prompt set? And several images?
#
# The image side is not read-only: the image-to-token attention *adds* what the tokens say to
# the image features, and the masks are read from those updated features. Each prompt set updates
# them differently, so each needs its own copy: B x C x H x W. The official decoder takes one
# image and B prompt sets. With several images, sam-explain pairs image b with prompt set b
# (I = B); other counts are refused, where the official code raises an unclear error or broadcasts.

# %%
with torch.no_grad():
    sparse2, dense2 = pe_enc(points=(torch.tensor([[a], [b]], device=device), torch.ones(2, 1, dtype=torch.long, device=device)), boxes=None, masks=None)
    two_images = torch.cat([image_embeddings, emb2])  # I = 2 images, B = 2 prompt sets: paired
    paired, _ = decoder(two_images, image_pe, sparse2, dense2, multimask_output=False)
    alone, _ = decoder(emb2, image_pe, sparse2[1:], dense2[1:], multimask_output=False)
torch.testing.assert_close(paired[1:], alone)
print("image 1 with prompt set 1 == running them alone")
try:
    decoder(torch.cat([image_embeddings] * 3), image_pe, sparse2, dense2, multimask_output=False)
except se.ShapeError as err:
    print("ShapeError:", err)

# %% [markdown]
# ## My clicks land in the wrong place on a real photo. Why?
#
# The prompt encoder wants coordinates in **its input frame** (SAM: the photo resized to longest
# side 1024), not in the photo's pixels. `SamPredictor.predict` converts for you;
# `predict_torch` and the decoder do not. See notebook 6 and
# `sam_explain.utils.transforms.to_input_frame`.
#
# ## Why are the masks 256 x 256?
#
# The decoder upscales the 64 x 64 grid only 4x (notebook 4): cheap enough to answer many prompts
# at once. The full-resolution mask is a bilinear resize of the logits, thresholded at 0.
#
# ## Does the order of the points matter?
#
# The prompt tokens carry their position in their own vector, and attention treats its keys as a
# set, so reordering the points permutes tokens without changing the masks (up to rounding):

# %%
with torch.no_grad():
    m_ab, _ = model.predict(image_embeddings, points=[a, b], labels=[1, 0], multimask_output=False)
    m_ba, _ = model.predict(image_embeddings, points=[b, a], labels=[0, 1], multimask_output=False)
print("max |difference| of the logits:", (m_ab - m_ba).abs().max().item())
torch.testing.assert_close(m_ab, m_ba, atol=1e-3, rtol=1e-3)
