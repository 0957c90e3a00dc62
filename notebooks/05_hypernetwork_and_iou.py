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

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt
from einops import einsum

import sam_explain as se
from sam_explain.figures import show_mask
from sam_explain.prompts import Prompts
from sam_explain.toy import click_inside, make_scene

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
# A single click is often **ambiguous**: on a ring inside a disc, did you mean the ring or the
# whole object? SAM answers with three masks from tokens 1, 2, 3 (`multimask_output=True`), and was
# trained so that at least one is right (only the best of the three is penalised). Token 0 is
# trained for the unambiguous case, when the prompt says clearly what is meant (several points, or
# a box); it is what `multimask_output=False` returns.

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for m, ax in enumerate(axes):
    ax.imshow(scene.image)
    show_mask(ax, all_masks[0, m] > 0)
    ax.plot(*click, marker="*", color="lime", markersize=12, markeredgecolor="white")
    kept = "multimask_output=False" if m == 0 else "multimask_output=True"
    ax.set_title(f"token {m} (IoU {iou_all[0, m]:.2f})\nreturned with {kept}", fontsize=9)
    ax.axis("off")
plt.show()
assert torch.equal(masks_out, all_masks[:, 1:]) and torch.equal(iou_out, iou_all[:, 1:])

# %% [markdown]
# **Next**: [6. End to end](06_end_to_end.ipynb).
