# %% [markdown]
# # 7. Questions learners ask
#
# The questions SAM users ask most often about the decoder, the prompt encoder and the predictor
# in the official repository's issues (github.com/facebookresearch/segment-anything/issues; the
# numbers are the threads each answer is for). Each answer comes with a cell that shows the
# evidence on the toy model and asserts it, so the cell fails if the answer stops being true.
#
# Two differences from SAM to keep in mind: the toy's input frame is its 256 x 256 image (SAM's is
# the photo resized so that its longer side is 1024, then padded), so a low-res mask pixel is an
# image pixel here; and sam-explain checks its inputs, so a call the official code would fail on
# with a raw `RuntimeError` raises a `ShapeError` naming the shapes. Questions about the exported
# ONNX decoder are in notebook 8.

# %%
import inspect

import numpy as np
import torch
import matplotlib.pyplot as plt

import sam_explain as se
from sam_explain.figures import show_mask
from sam_explain.toy import click_inside, make_scene, mask_iou

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)
decoder, pe_enc = model.mask_decoder, model.prompt_encoder
image_pe = pe_enc.get_dense_pe()
scene = make_scene(seed=11)
image_embeddings = model.embed(scene.image)  # 1 x C x H x W
big = int(np.argmax(scene.object_masks.sum(axis=(1, 2))))  # the largest object
click = click_inside(scene.object_masks[big])  # (x, y)


def embed(points=None, labels=None, boxes=None, masks=None):
    """The prompt encoder on plain lists: points B x N x 2, labels B x N, boxes B x 4."""
    pts = None
    if points is not None:
        pts = (torch.tensor(points, dtype=torch.float32, device=device), torch.tensor(labels, device=device))
    bx = None if boxes is None else torch.tensor(boxes, dtype=torch.float32, device=device)
    with torch.no_grad():
        return pe_enc(points=pts, boxes=bx, masks=masks)


def decode(sparse, dense, multimask=True, emb=image_embeddings):
    with torch.no_grad():
        return decoder(emb, image_pe, sparse, dense, multimask_output=multimask)

# %% [markdown]
# ## 1. How do I segment several objects in one call? What is B?
# Issues #381, #524, #510, #329, #810.
#
# B counts **prompt sets**, not points: each set (its points, its box, its mask) gives its own
# masks. All the points of one set describe *one* object together. `SamPredictor.predict` takes
# one set; `predict_torch` (and the decoder) take B sets at once, B x N x 2 points, B x N labels,
# B x 4 boxes. Two boxes as B = 2 give two masks, each the same as its box alone:

# %%
boxes = [[40.0, 30.0, 150.0, 120.0], [140.0, 130.0, 240.0, 230.0]]
two, _ = decode(*embed(boxes=boxes), multimask=False)
alone = [decode(*embed(boxes=[b]), multimask=False)[0] for b in boxes]
print("two boxes as B = 2 prompt sets -> masks", tuple(two.shape))
assert two.shape == (2, 1, 256, 256)
for b in range(2):
    torch.testing.assert_close(two[b : b + 1], alone[b], atol=1e-4, rtol=0)

# %% [markdown]
# ## 2. Can I give a box and points together? Several boxes for one object?
# Issues #620, #646, #111, #723, #562.
#
# One box per prompt set, with any number of points: the box becomes two corner tokens and the
# padding point is then left out, N' = N + 2. Several boxes for one object are not part of the
# model: a prompt set has at most one box (B x 4). Points and boxes must count the same B.

# %%
s_box, _ = embed(boxes=[boxes[0]])
s_both, _ = embed(points=[[click]], labels=[[1]], boxes=[boxes[0]])
print("a box alone: N' =", s_box.shape[1], "; a box and one point: N' =", s_both.shape[1])
assert s_box.shape == (1, 2, 256) and s_both.shape == (1, 3, 256)
try:
    embed(points=[[click]], labels=[[1]], boxes=boxes)  # 1 prompt set of points, 2 boxes
    raise AssertionError("a B mismatch was accepted")
except se.ShapeError as err:
    print("ShapeError:", err)

# %% [markdown]
# ## 3. What does `mask_input` expect?
# Issues #242, #169, #447, #792.
#
# **Logits**, B x 1 x 4H x 4W = B x 1 x 256 x 256: the low-resolution output of an earlier
# prediction, in the decoder's own frame. The model was trained on its own logits as this prompt
# (paper, Appendix A, "Training algorithm": "we found it advantageous to provide the unthresholded
# mask logits instead of binarized masks"). Nothing stops a 0/1 mask of the right shape (it is
# accepted silently, here and in the official code), but to the model 0 and 1 are both "unsure":
# as the only prompt, the model's own logits bring the mask back, a 0/1 mask barely does.

# %%
truth = scene.object_masks[big]
s1, d1 = embed(points=[[click]], labels=[[1]])
with torch.no_grad():
    low_res, _ = decoder(image_embeddings, image_pe, s1, d1, multimask_output=False)  # 1 x 1 x 256 x 256 logits
results = {}
for name, prompt in [("its own logits", low_res), ("the same mask as 0/1", (low_res > 0).float())]:
    sparse_m, dense_m = embed(masks=prompt)  # a mask alone: N' = 0
    out, _ = decode(sparse_m, dense_m, multimask=False)
    results[name] = mask_iou(out[0, 0] > 0, truth)
    print(f"mask prompt = {name:<22} -> IoU with the object {results[name]:.2f}")
assert results["its own logits"] > results["the same mask as 0/1"] + 0.2

# %% [markdown]
# ## 4. Why three masks for one click, and which one do I take?
# Issues #679, #765, #659, #299.
#
# A click is often ambiguous (notebook 5): tokens 1, 2 and 3 offer readings, and the IoU head
# ranks them; take the argmax of the predicted IoU, or show all three. `multimask_output=False`
# is not "the best of the three": it returns token 0, the fourth mask, meant for prompts that say
# clearly what they mean (paper, Appendix A). There are exactly four mask tokens in the released
# weights: asking for more outputs needs new tokens and new MLPs, trained. A click on the diamond
# inside the yellow disc:

# %%
nested = make_scene(seed=20)
nested_emb = model.embed(nested.image)
nested_click = click_inside(nested.part_masks[0])
s2, d2 = embed(points=[[nested_click]], labels=[[1]])
with torch.no_grad():
    four, four_iou = decoder.predict_masks(nested_emb, image_pe, s2, d2)  # all M = 4
three, three_iou = decode(s2, d2, multimask=True, emb=nested_emb)
one, one_iou = decode(s2, d2, multimask=False, emb=nested_emb)
assert torch.equal(three, four[:, 1:]) and torch.equal(one, four[:, :1])
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for j, ax in enumerate(axes):
    ax.imshow(nested.image)
    show_mask(ax, three[0, j] > 0)
    ax.plot(*nested_click, "*", color="lime", markersize=12, markeredgecolor="black")
    ax.set_title(f"mask {j + 1}: predicted IoU {three_iou[0, j]:.2f}\n"
                 f"part {mask_iou(three[0, j] > 0, nested.part_masks[0]):.2f}, "
                 f"whole {mask_iou(three[0, j] > 0, nested.object_masks[0]):.2f}", fontsize=8)
    ax.axis("off")
plt.show()
best = int(three_iou[0].argmax())
print(f"the IoU head ranks mask {best + 1} first")
assert max(mask_iou(three[0, j] > 0, nested.object_masks[0]) for j in range(3)) > 0.85

# %% [markdown]
# ## 5. Why can the predicted IoU exceed 1?
# Issues #40, #495.
#
# The IoU head is a 3-layer MLP whose last layer is a plain `Linear`: no sigmoid, no clamp
# (`sigmoid_output=False`). It was trained as a regression of the true IoU, with a squared error
# (paper, Appendix A, "Losses"), which pulls its outputs towards [0, 1] but does not bound them. On ordinary scenes it happens: of 254 clicks deep inside the objects and parts of toy
# scenes 0 to 59, 20 predicted an IoU above 1. One of them:

# %%
print("sigmoid on the IoU head:", decoder.iou_prediction_head.sigmoid_output, "; last layer:",
      decoder.iou_prediction_head.layers[-1])
odd = make_scene(seed=52)
s5, d5 = embed(points=[[[114.0, 87.0]]], labels=[[1]])
with torch.no_grad():
    _, iou5 = decoder.predict_masks(model.embed(odd.image), image_pe, s5, d5)
print("predicted IoUs of the four masks:", [round(v, 3) for v in iou5[0].tolist()])
assert not decoder.iou_prediction_head.sigmoid_output and iou5.max() > 1

# %% [markdown]
# ## 6. Several clicks give worse masks than the demo. How do I refine?
# Issues #95, #289, #347, #432, #435.
#
# SAM was trained interactively (paper, Appendix A, "Training algorithm"): after a first
# prediction, a new click is drawn in the error region, and the previous prediction's **logits**
# go in as `mask_input`. Do the same: pass every click so far, the previous step's chosen
# low-res logits, and `multimask_output=False` once there are several clicks. On the green object
# of scene 8, a first click gives a poor mask; a second click, in what it missed, with and
# without the first mask's logits:

# %%
refine = make_scene(seed=8)
refine_emb = model.embed(refine.image)
truth6 = refine.object_masks[0]
first = click_inside(truth6)
step1, _ = decode(*embed(points=[[first]], labels=[[1]]), multimask=False, emb=refine_emb)
missed = (step1[0, 0] > 0).cpu().numpy() ^ truth6  # the error region
second = click_inside(missed)
label = int(truth6[int(second[1]), int(second[0])])  # 1: the mask missed it; 0: it spilled there
two_clicks, _ = decode(*embed(points=[[first, second]], labels=[[1, label]]), multimask=False, emb=refine_emb)
with_logits, _ = decode(*embed(points=[[first, second]], labels=[[1, label]], masks=step1), multimask=False,
                        emb=refine_emb)
scores = [mask_iou(m[0, 0] > 0, truth6) for m in (step1, two_clicks, with_logits)]
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, m, title, pts in [(axes[0], step1, "1 click", [first]), (axes[1], two_clicks, "2 clicks", [first, second]),
                          (axes[2], with_logits, "2 clicks + step 1's logits", [first, second])]:
    ax.imshow(refine.image)
    show_mask(ax, m[0, 0] > 0)
    for p in pts:
        ax.plot(*p, "*", color="lime", markersize=12, markeredgecolor="black")
    ax.set_title(f"{title}: IoU {mask_iou(m[0, 0] > 0, truth6):.2f}", fontsize=9)
    ax.axis("off")
plt.show()
assert scores[2] > scores[1] + 0.3 and scores[2] > scores[0] + 0.3  # the logits carry what step 1 knew

# %% [markdown]
# ## 7. Why does a batch of images fail in the decoder?
# Issues #277, #365, #418, #840.
#
# The official `MaskDecoder` takes **one** image embedding, 1 x C x H x W, and repeats it for the
# B prompt sets (`repeat_interleave`); B images with B prompt sets become B x B rows, and the
# shapes stop matching. `Sam.forward` loops over images for that reason. sam-explain also pairs B
# images with B prompt sets (image b with set b), and refuses any other count by name:

# %%
s7, d7 = embed(points=[[click], [nested_click]], labels=[[1], [1]])
paired, _ = decode(s7, d7, multimask=False, emb=torch.cat([image_embeddings, nested_emb]))
alone7, _ = decode(s7[1:], d7[1:], multimask=False, emb=nested_emb)
torch.testing.assert_close(paired[1:], alone7)
try:
    decode(s7, d7, emb=torch.cat([image_embeddings] * 3))
    raise AssertionError("3 images for 2 prompt sets were accepted")
except se.ShapeError as err:
    print("ShapeError:", err)

# %% [markdown]
# ## 8. How do I fine-tune only the decoder?
# Issues #505, #664, #5, #358.
#
# Compute the image embeddings once (the encoder stays frozen), then call the prompt encoder and
# the decoder yourself, not through the predictor: `SamPredictor.predict_torch` and `Sam.forward`
# run under `torch.no_grad()`. The loss compares the B x K x 256 x 256 low-res logits with the
# target in the same frame (the paper's loss: focal and dice, 20 : 1; §3 and Appendix A).

# %%
target = torch.from_numpy(scene.object_masks[big]).float().to(device)[None, None]  # 1 x 1 x 256 x 256
s8, d8 = embed(points=[[click]], labels=[[1]])
decoder.zero_grad()
logits, _ = decoder(image_embeddings, image_pe, s8, d8, multimask_output=False)  # with gradients
loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
loss.backward()
grads = [p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters()]
print(f"loss {loss.item():.3f}; decoder parameters with a gradient: {sum(grads)} of {len(grads)}")
assert all(p.grad is None for p in pe_enc.parameters())  # the prompts were embedded without gradients
assert sum(grads) > len(grads) // 2
decoder.zero_grad(set_to_none=True)
print("predict_torch runs without gradients:", "no_grad" in inspect.getsource(se.SamPredictor.predict_torch))

# %% [markdown]
# ## 9. What is the padding point, and can I pad point lists with label -1?
# Issues #644, #509, #394, #786.
#
# With points and no box, the prompt encoder appends a point with label -1, whose token is the
# learned `not_a_point_embed` alone: its coordinates are ignored. You can pad prompt sets of
# different lengths with -1 points to stack them as B x N, but each one is a token the decoder
# reads, so padding changes the masks a little. What the trained decoder reads from the automatic
# one is small here: over 254 clicks on toy scenes 0 to 59, dropping it (`se.drop_tokens(-1)`)
# changed 0.15% of the mask pixels on average, 4% at most.

# %%
s9a, d9 = embed(points=[[click, [0.0, 0.0]]], labels=[[1, -1]])
s9b, _ = embed(points=[[click, [200.0, 13.0]]], labels=[[1, -1]])
assert torch.equal(s9a, s9b)  # a padding point's position is ignored
plain9, _ = decode(*embed(points=[[click]], labels=[[1]]))
padded9, _ = decode(s9a, d9)  # one more -1 point: N' = 3
with se.intervene(decoder, se.drop_tokens(-1)):
    dropped9, _ = decode(*embed(points=[[click]], labels=[[1]]))
changed = lambda a, b: ((a > 0) != (b > 0)).float().mean().item()  # noqa: E731
print(f"pixels changed: one extra padding point {changed(plain9, padded9):.2%}, "
      f"no padding point {changed(plain9, dropped9):.2%}")
assert not torch.equal(plain9, padded9)

# %% [markdown]
# ## 10. In which frame are point and box coordinates?
# Issues #597, #531, #586, #296.
#
# The prompt encoder takes (x, y) in **its input frame**: SAM's is the photo resized so that its
# longer side is 1024 (then padded to 1024 x 1024 at the right and bottom); the toy's is its
# 256 x 256 image. `SamPredictor.predict` takes original pixels and converts them
# (`transform.apply_coords`); `predict_torch` and the decoder do not. x scales by new_w / old_w and
# y by new_h / old_h, and coordinates are not shifted by the padding, which is only at the right
# and bottom. For a 512 x 384 photo shown to the toy's 256 frame:

# %%
resize = se.ResizeLongestSide(256)
original = np.array([[300.0, 200.0]])  # (x, y) in the 512 x 384 photo (H0 = 384, W0 = 512)
converted = resize.apply_coords(original, (384, 512))
print("original", original[0], "-> input frame", converted[0], "; resized image", resize.get_preprocess_shape(384, 512, 256))
assert np.allclose(converted, [[150.0, 100.0]])
right, _ = decode(*embed(points=[converted.tolist()], labels=[[1]]))
wrong, _ = decode(*embed(points=[original.tolist()], labels=[[1]]))
print(f"the same click unconverted: {changed(right, wrong):.1%} of the pixels differ")
assert changed(right, wrong) > 0.01

# %% [markdown]
# ## 11. What do the point labels mean?
# Issues #676, #111, #394.
#
# 1 is a foreground click, 0 a background click, -1 padding. A box's corners carry the learned
# embeddings 2 and 3, but only through `boxes`: on the point path the PyTorch prompt encoder takes
# 1, 0 and -1 (the official one gives labels 2 and 3 there a bare positional encoding; sam-explain
# refuses them; the exported ONNX model reads them as box corners, notebook 8). A label of 0.9 is
# refused, not rounded down to 0. The difference between a foreground and a background click at the
# same place is exactly the difference of the two label embeddings:

# %%
s_fg, _ = embed(points=[[click]], labels=[[1]])
s_bg, _ = embed(points=[[click]], labels=[[0]])
torch.testing.assert_close(s_fg[0, 0] - s_bg[0, 0],
                           pe_enc.point_embeddings[1].weight[0] - pe_enc.point_embeddings[0].weight[0])
for bad in ([[2]], [[0.9]]):
    try:
        embed(points=[[click]], labels=bad)
        raise AssertionError(f"label {bad} was accepted")
    except se.ShapeError as err:
        print("ShapeError:", err)

# %% [markdown]
# ## 12. Can a mask alone be the prompt?
# Issues #471, #46, #694.
#
# Yes: no points and no box leave N' = 0 sparse tokens (the decoder reads its five own tokens and
# the image, to which the mask's dense embedding was added). It works with the model's own logits
# (question 3); a hand-drawn 0/1 mask is read as "unsure" everywhere.

# %%
s12, d12 = embed(masks=low_res)
print("sparse tokens for a mask alone:", tuple(s12.shape))
assert s12.shape == (1, 0, 256) and d12.shape == (1, 256, 64, 64)

# %% [markdown]
# ## 13. Can I prompt with text?
# Issues #4, #93, #76, #19, #827.
#
# No: the paper explores text prompts (§7.5, a CLIP text embedding in place of a point), but the
# released model has no text input. The prompt encoder takes points, boxes and masks, nothing else:

# %%
params = list(inspect.signature(se.PromptEncoder.forward).parameters)
print("PromptEncoder.forward takes:", params[1:])
assert params[1:] == ["points", "boxes", "masks"]

# %% [markdown]
# ## 14. Why are the masks 256 x 256, and how do they become my image's size?
# Issues #736, #415, #740, #435.
#
# The image embedding is one 256-vector per 16 x 16 pixels of the 1024 input: 64 x 64. The
# decoder upscales it only 4x (notebook 4), to 256 x 256 low-res logits. `Sam.postprocess_masks`
# then resizes them bilinearly to 1024 x 1024, crops the part that was the resized photo (the rest
# was padding) and resizes that to the original size; the mask is where the logits are above 0.
# Here with the toy's numbers (a 256 input; an original of 300 x 200, resized to 256 x 171):

# %%
from sam_explain.utils.transforms import postprocess_masks

resized = se.ResizeLongestSide(256).get_preprocess_shape(300, 200, 256)
full = postprocess_masks(low_res, resized, (300, 200), img_size=256)  # 1 x 1 x H0 x W0
print("low-res", tuple(low_res.shape), "-> resized frame", resized, "-> original", tuple(full.shape))
assert resized == (256, 171) and full.shape == (1, 1, 300, 200)

# %% [markdown]
# ## 15. How do I get logits or probabilities instead of a 0/1 mask?
# Issues #226, #169.
#
# The decoder returns logits; the predictor thresholds them at `Sam.mask_threshold = 0.0` unless
# `return_logits=True`. A sigmoid turns logits into probabilities, and logit > 0 is the same as
# probability > 0.5:

# %%
print("mask threshold:", se.Sam.mask_threshold)
assert torch.equal(low_res > se.Sam.mask_threshold, torch.sigmoid(low_res) > 0.5)

# %% [markdown]
# ## 16. How do I see the decoder's attention maps?
# Issues #677, #433.
#
# The official `Attention` computes its softmax inside `forward` and returns only the values it
# read, so the maps are lost. sam-explain writes the softmax out behind a hook point
# (`hook_probs`), and `se.capture_attention` / `se.record_attention` keep all seven maps (notebook
# 3): B x h x T x HW for a token-to-image map, each row summing to 1.

# %%
rec = se.capture_attention(pe_enc, decoder, image_embeddings,
                           se.Prompts(points=(torch.tensor([[click]], device=device), torch.tensor([[1]], device=device))))
final = rec["transformer.final_attn_token_to_image"]
print(f"{len(rec)} maps; the final token-to-image: {tuple(final.shape)}")
assert len(rec) == 7 and final.shape == (1, 8, 7, 4096)
torch.testing.assert_close(final.sum(-1), torch.ones(1, 8, 7, device=final.device))

# %% [markdown]
# **Next**: [8. The deployed decoder (ONNX)](08_onnx_decoder.ipynb).
