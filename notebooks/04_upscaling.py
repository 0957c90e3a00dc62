# %% [markdown]
# # 4. The 4x upscaling
#
# After the transformer, the image side is still a 64 x 64 grid of 256 channels: one vector per
# 16 x 16 pixels of SAM's 1024 x 1024 input. Masks need finer detail, so the decoder upscales the
# grid 4x, to 256 x 256, while shrinking the channels to C/8 = 32:
#
# | step | module | shape |
# |---|---|---|
# | input | transformer keys, reshaped | B x 256 x 64 x 64 |
# | `output_upscaling.0` | ConvTranspose2d(256, 64, kernel 2, stride 2) | B x 64 x 128 x 128 |
# | `output_upscaling.1` | LayerNorm2d(64) | B x 64 x 128 x 128 |
# | `output_upscaling.2` | GELU | B x 64 x 128 x 128 |
# | `output_upscaling.3` | ConvTranspose2d(64, 32, kernel 2, stride 2) | B x 32 x 256 x 256 |
# | `output_upscaling.4` | GELU | B x 32 x 256 x 256 |
#
# The paper (Kirillov et al. 2023, Appendix A, "Lightweight mask decoder"): "we upsample the
# updated image embedding by 4x with two transposed convolutional layers". In the package:

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt
from torch import nn

import sam_explain as se
from sam_explain.prompts import Prompts
from sam_explain.toy import click_inside, make_scene

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)
decoder, pe_enc = model.mask_decoder, model.prompt_encoder
se.show_source(se.MaskDecoder.__init__, lines=("self.output_upscaling", "        )"))

# %%
se.show_source(se.MaskDecoder.predict_masks, lines=("# Upscale the image side", "upscaled_embedding ="),
               highlight=["output_upscaling"])

# %% [markdown]
# ## What a stride-2, kernel-2 transposed convolution does
#
# With kernel 2 and stride 2, a transposed convolution gives **each input cell its own 2 x 2
# block** of the output: the block is the cell's channel vector multiplied by a learned
# (C_out x 2 x 2) stamp per input channel, summed over input channels. The blocks do not overlap,
# so the output is exactly twice as tall and wide. A one-channel example with a stamp we choose:

# %%
up = nn.ConvTranspose2d(1, 1, kernel_size=2, stride=2, bias=False)
with torch.no_grad():
    up.weight[:] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # the 2 x 2 stamp
    x = torch.tensor([[[[1.0, 10.0], [100.0, 0.0]]]])  # 1 x 1 x 2 x 2
    y = up(x)  # 1 x 1 x 4 x 4
print(x[0, 0])
print(y[0, 0])
assert y.shape == (1, 1, 4, 4)
assert torch.equal(y[0, 0, :2, 2:], 10.0 * up.weight[0, 0])  # cell (0, 1) -> block rows 0-1, cols 2-3

# %% [markdown]
# ## The two stages in the decoder
#
# We capture the output of every stage with forward hooks (the trace shows them too).

# %%
scene = make_scene(seed=11)
image_embeddings = model.embed(scene.image)
k = int(np.argmax(scene.object_masks.sum(axis=(1, 2))))  # the largest object
click = click_inside(scene.object_masks[k])  # (x, y), deep inside it
prompts = Prompts(points=(torch.tensor([[click]]), torch.tensor([[1]]))).to(device)
with torch.no_grad():
    sparse, dense = pe_enc(points=prompts.points, boxes=None, masks=None)
    with se.trace_shapes(decoder, keep_tensors=True) as trace:
        decoder(image_embeddings, pe_enc.get_dense_pe(), sparse, dense, multimask_output=True)
trace.filter("output_upscaling")

# %%
stages = {r.path: r.tensor for r in trace.filter("output_upscaling")}
assert stages["output_upscaling.0"].shape == (1, 64, 128, 128)
assert stages["output_upscaling.3"].shape == (1, 32, 256, 256)
upscaled = trace.find("hook_upscaled_embedding")[0].tensor  # B x C/8 x 4H x 4W
assert upscaled.shape == (1, 32, 256, 256)

# %% [markdown]
# ## LayerNorm2d
#
# Between the two transposed convolutions, `LayerNorm2d` normalises **each pixel's channel vector**
# (over the 64 channels, separately at every one of the 128 x 128 positions), then scales and shifts
# each channel. It is a LayerNorm for B x C x H x W maps. Before its affine part, every position
# has mean 0 and variance 1 over the channels:

# %%
before = stages["output_upscaling.0"]  # B x 64 x 128 x 128
ln = decoder.output_upscaling[1]
normalised = (ln(before) - ln.bias[:, None, None]) / ln.weight[:, None, None]
print("mean over channels, max |.|:", normalised.mean(1).abs().max().item())
print("variance over channels, range:", normalised.var(1, unbiased=False).min().item(),
      normalised.var(1, unbiased=False).max().item())
assert normalised.mean(1).abs().max() < 1e-3

# %% [markdown]
# ## The feature maps
#
# The 32 upscaled channels are the *palette* the masks are painted from (next notebook). Some
# channels light up on objects, some on edges, some on the background. Here are the first 16,
# at 256 x 256, for the toy scene:

# %%
fig, axes = plt.subplots(2, 9, figsize=(14, 3.4))
axes[0, 0].imshow(scene.image)
axes[0, 0].set_title("image")
axes[1, 0].axis("off")
for c, ax in enumerate(axes[:, 1:].flat):
    ax.imshow(upscaled[0, c].cpu(), cmap="magma")
    ax.set_title(f"channel {c}", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("upscaled embedding: B x C/8 x 4H x 4W = 1 x 32 x 256 x 256 (16 of 32 channels)")
plt.show()

# %% [markdown]
# Why upscale only 4x, to 256 x 256, and not to the full 1024? Cost: the masks are made by a
# product over 32 channels at every pixel, and 256 x 256 keeps that cheap for many prompt sets.
# The full-resolution mask is a bilinear resize of the logits (notebook 6).
#
# **Next**: [5. The hypernetwork and the IoU head](05_hypernetwork_and_iou.ipynb).
