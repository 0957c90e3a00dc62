# %% [markdown]
# # 5. The hypernetwork and the IoU head
#
# After the transformer, each of the M = 4 mask tokens has read the prompt and the image. Now
# each one becomes a mask, and the IoU token becomes four quality scores.
#
# * **Hypernetwork**: mask token m goes through its *own* 3-layer MLP (256 -> 256 -> 256 -> 32),
#   giving 32 numbers: `hyper_in`, B x M x 32. They are not features, they are **weights**: the
#   mask is the weighted sum of the 32 upscaled feature maps (notebook 4),
#   `masks[b, m] = sum_c hyper_in[b, m, c] * upscaled[b, c]`, B x M x 256 x 256.
#   A network (the MLP) producing the weights of another computation is what "hypernetwork" means.
# * **IoU head**: the IoU token goes through a 3-layer MLP (256 -> 256 -> 256 -> 4): one predicted
#   IoU per mask token, B x M.
# * **Multimask slice**: `forward` returns tokens 1..3 with `multimask_output=True` and token 0
#   otherwise.
#
# The paper (Kirillov et al. 2023, Appendix A): "we pass the updated output token embedding to a
# small 3-layer MLP that outputs a vector matching the channel dimension of the upscaled image
# embedding. Finally, we predict a mask with a spatially point-wise product between the upscaled
# image embedding and the MLP's output." The code:

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt
from einops import einsum

import sam_explain as se
from sam_explain.figures import show_mask
from sam_explain.prompts import Prompts
from sam_explain.toy import click_inside, make_scene, mask_iou

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)
decoder, pe_enc = model.mask_decoder, model.prompt_encoder

scene = make_scene(seed=11)
image_embeddings = model.embed(scene.image)
k = int(np.argmax(scene.object_masks.sum(axis=(1, 2))))  # the largest object
click = click_inside(scene.object_masks[k])  # (x, y), deep inside it
prompts = Prompts(points=(torch.tensor([[click]]), torch.tensor([[1]]))).to(device)
with torch.no_grad():
    sparse, dense = pe_enc(points=prompts.points, boxes=None, masks=None)
    with se.trace_shapes(decoder, keep_tensors=True) as trace:
        masks_out, iou_out = decoder(image_embeddings, pe_enc.get_dense_pe(), sparse, dense, multimask_output=True)
se.show_source(se.MaskDecoder.predict_masks, lines=("# Each mask token becomes", "iou_pred = self.hook_iou_pred"),
               highlight=["mlp(", "einsum", "iou_prediction_head"])

# %% [markdown]
# Each of the four MLPs, as traced (the three after the first have the same shapes, folded):

# %%
trace.filter("output_hypernetworks_mlps", max_depth=2).collapse()

# %% [markdown]
# ## Tokens to weights, weights times features

# %%
mask_tokens_out = trace.find("hook_mask_tokens_out")[0].tensor  # B x M x C
upscaled = trace.find("hook_upscaled_embedding")[0].tensor  # B x C/8 x 4H x 4W
hyper_in = trace.find("hook_hyper_in")[0].tensor  # B x M x C/8
all_masks = trace.find("hook_masks")[0].tensor  # B x M x 4H x 4W
print("mask_tokens_out", tuple(mask_tokens_out.shape), " hyper_in", tuple(hyper_in.shape),
      " upscaled", tuple(upscaled.shape), " masks", tuple(all_masks.shape))
assert hyper_in.shape == (1, 4, 32) and all_masks.shape == (1, 4, 256, 256)

with torch.no_grad():
    for m in range(4):  # each mask token through its own MLP
        torch.testing.assert_close(decoder.output_hypernetworks_mlps[m](mask_tokens_out[:, m]), hyper_in[:, m])
    by_hand = einsum(hyper_in, upscaled, "b m c, b c h w -> b m h w")  # B x M x 4H x 4W
torch.testing.assert_close(by_hand, all_masks)
print("masks == einsum(hyper_in, upscaled): True")

# %% [markdown]
# ## A mask, drawn as weights times feature maps
#
# For mask token 1, the six feature maps with the largest |weight|, each multiplied by its
# weight, and their sum over all 32 channels (the mask's logits; the object is where they are
# above 0).

# %%
m = 1
w = hyper_in[0, m].cpu()  # 32 weights
top = torch.argsort(w.abs(), descending=True)[:6]
fig, axes = plt.subplots(1, 8, figsize=(16, 2.6))
for ax, c in zip(axes, top.tolist()):
    term = (w[c] * upscaled[0, c].cpu()).numpy()
    lim = np.abs(term).max()
    ax.imshow(term, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(f"{w[c]:+.2f} x channel {c}", fontsize=8)
logits = all_masks[0, m].cpu().numpy()
lim = np.abs(logits).max()
axes[6].imshow(logits, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[6].set_title("sum of all 32 = logits", fontsize=8)
axes[7].imshow(scene.image)
show_mask(axes[7], logits > 0)
axes[7].set_title("logits > 0", fontsize=8)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## The IoU head
#
# The IoU token's final state goes through its MLP to four numbers, one per mask token. It was
# trained to predict the IoU between each mask and the object the user meant. Compare with the
# true IoU against the ground truth of the toy scene:

# %%
iou_token_out = trace.find("hook_iou_token_out")[0].tensor  # B x C
iou_all = trace.find("hook_iou_pred")[0].tensor  # B x M
assert iou_token_out.shape == (1, 256) and iou_all.shape == (1, 4)
truth = torch.from_numpy(scene.object_masks[k]).to(device)
for m in range(4):
    pred = all_masks[0, m] > 0
    iou = ((pred & truth).sum() / (pred | truth).sum()).item()
    print(f"mask token {m}: predicted IoU {iou_all[0, m]:.3f}   IoU with the clicked object {iou:.3f}")

# %% [markdown]
# ## Why four mask tokens, and what the slice keeps
#
# The click above was unambiguous: all four tokens draw the same shape. A single click is often
# **ambiguous**, though: on a small shape lying inside a larger one, did you mean the small one
# or the whole object? The paper (§3, "Resolving ambiguity"): "we modify the model to predict
# multiple output masks for a single prompt ... During training, we backprop only the minimum
# loss over masks." So tokens 1, 2 and 3 are free to spread over the plausible readings, and
# the IoU head ranks them. Token 0 is the fourth: "we only predict a single mask when more than
# one prompt is given. This is accomplished by adding a fourth output token ... This fourth mask
# is never returned for a single prompt and is the only mask returned for multiple prompts"
# (Appendix A, "Making the model ambiguity-aware"). The official code leaves the choice to the
# caller: `multimask_output=False` returns token 0 for any prompt, and the exported ONNX model
# picks token 0 only from three sparse points on (a click and the padding point, or a box alone,
# go to the best of tokens 1 to 3). The toy model was also trained to answer a single click with
# token 0, with the shape clicked (docs/toy_model.md).
#
# A click on the small diamond inside the yellow disc of scene 20:

# %%
nested = make_scene(seed=20)
part, whole = nested.part_masks[0], nested.object_masks[0]
nested_click = click_inside(part)
nested_emb = model.embed(nested.image)
with torch.no_grad():
    s_, d_ = pe_enc(points=(torch.tensor([[nested_click]], device=device), torch.tensor([[1]], device=device)),
                    boxes=None, masks=None)
    four, four_iou = decoder.predict_masks(nested_emb, pe_enc.get_dense_pe(), s_, d_)  # B x M x 4H x 4W, B x M


readings = [(mask_iou(four[0, m] > 0, part), mask_iou(four[0, m] > 0, whole)) for m in range(4)]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for m, ax in enumerate(axes):
    ax.imshow(nested.image)
    show_mask(ax, four[0, m] > 0)
    ax.plot(*nested_click, marker="*", color="lime", markersize=12, markeredgecolor="black")
    kept = "multimask_output=False" if m == 0 else "multimask_output=True"
    ax.set_title(f"token {m}: IoU with part {readings[m][0]:.2f}, whole {readings[m][1]:.2f}\n"
                 f"predicted {four_iou[0, m]:.2f}; returned with {kept}", fontsize=8)
    ax.axis("off")
plt.show()
best_part = max(r[0] for r in readings[1:])
best_whole = max(r[1] for r in readings[1:])
print(f"among tokens 1-3: best IoU with the part {best_part:.2f}, with the whole object {best_whole:.2f}")
assert best_part > 0.85 and best_whole > 0.85  # both readings are offered by the three
assert readings[0][0] > 0.85  # token 0 answers with the shape clicked

# %% [markdown]
# ## Token or MLP: which one picks the reading?
#
# Mask m comes from mask token m *and* its own MLP m. Which of the two decides that mask 3 draws the
# whole object? An intervention answers it: swap the *tokens* of masks 1 and 3 before the
# transformer (`se.swap_tokens`; position 0 is the IoU token, 1 + m is mask token m), so that
# MLP 3 now receives what token 1 became, and MLP 1 what token 3 became.

# %%
with torch.no_grad(), se.intervene(decoder, se.swap_tokens(1 + 1, 1 + 3)):
    swapped, swapped_iou = decoder.predict_masks(nested_emb, pe_enc.get_dense_pe(), s_, d_)
swapped_readings = [(mask_iou(swapped[0, m] > 0, part), mask_iou(swapped[0, m] > 0, whole)) for m in range(4)]
for m in (1, 3):
    print(f"mask {m}: IoU with part / whole {readings[m][0]:.2f} / {readings[m][1]:.2f} -> "
          f"{swapped_readings[m][0]:.2f} / {swapped_readings[m][1]:.2f} with the tokens swapped")
assert swapped_readings[3][1] > 0.85 and swapped_readings[3][0] < 0.5  # mask 3 still draws the whole object

# %% [markdown]
# Mask 3 still draws the whole object, and mask 1 still the part: in this model the reading is
# decided by each mask's hypernetwork MLP far more than by the starting vector of its token (our
# reading of the experiment; the transformer makes the four tokens' states, and each MLP turns
# whatever it receives into the weights of its kind of mask).

# %% [markdown]
# The slice itself, checked on the first click: `forward` with `multimask_output=True` returned
# exactly tokens 1 to 3 of the four.

# %%
assert torch.equal(masks_out, all_masks[:, 1:]) and torch.equal(iou_out, iou_all[:, 1:])
se.show_source(se.MaskDecoder.forward, lines=("masks, iou_pred = self.predict_masks", "return masks"),
               highlight=["mask_slice"])

# %% [markdown]
# **Next**: [6. End to end](06_end_to_end.ipynb).
