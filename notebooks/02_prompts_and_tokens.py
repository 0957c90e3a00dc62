# %% [markdown]
# # 2. Prompts and tokens
#
# The decoder never sees your clicks as numbers (x, y). It sees **tokens**: 256-channel vectors,
# one per point or box corner, next to five tokens of its own. This notebook builds them by hand,
# checks each against the prompt encoder, and assembles the decoder's T = 5 + N' tokens.

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt

import sam_explain as se
from sam_explain.toy import make_scene

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)
decoder, pe_enc = model.mask_decoder, model.prompt_encoder
scene = make_scene(seed=11)
image_embeddings = model.embed(scene.image)  # 1 x C x H x W = 1 x 256 x 64 x 64
print("input image size (pixels the coordinates live in):", pe_enc.input_image_size)

# %% [markdown]
# ## A point is a position plus a label
#
# A point's token is the sum of two vectors:
#
# * **where**: a *random Fourier feature* encoding of its position. The coordinates are shifted
#   to the pixel centre (+0.5), scaled to [0, 1], mapped to [-1, 1], multiplied by a fixed random
#   2 x 128 Gaussian matrix and turned into 128 sines and 128 cosines: C = 256 numbers;
# * **what**: a learned label embedding, `point_embeddings[1]` for a foreground click and
#   `point_embeddings[0]` for a background click.
#
# This is how the paper describes it (Kirillov et al. 2023, Appendix A, "Prompt encoder"), and
# this is the code that does it, listed from the package:

# %%
se.show_source(se.PromptEncoder._embed_points, highlight=["forward_with_coords", "labels == 1"])

# %% [markdown]
# We rebuild it for two clicks and compare with the prompt encoder.

# %%
coords = torch.tensor([[[120.0, 80.0], [30.0, 200.0]]], device=device)  # B x N x 2 = 1 x 2 x 2
labels = torch.tensor([[1, 0]], device=device)  # B x N = 1 x 2: foreground, background

G = pe_enc.pe_layer.positional_encoding_gaussian_matrix  # 2 x C/2 = 2 x 128
height, width = pe_enc.input_image_size
unit = (coords + 0.5) / torch.tensor([width, height], device=device)  # B x N x 2, in [0, 1]
angles = 2 * np.pi * ((2 * unit - 1) @ G)  # B x N x 128
where = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # B x N x C
what = torch.stack([pe_enc.point_embeddings[1].weight[0], pe_enc.point_embeddings[0].weight[0]])  # N x C
by_hand = where + what  # B x N x C

with torch.no_grad():
    sparse, dense = pe_enc(points=(coords, labels), boxes=None, masks=None)
print("sparse: B x N' x C =", " x ".join(map(str, sparse.shape)))
torch.testing.assert_close(sparse[:, :2], by_hand)
assert sparse.shape == (1, 3, 256)  # N' = N + 1: a padding point was appended

# %% [markdown]
# ## The padding point
#
# Two clicks gave **three** tokens. With points and no box, the prompt encoder appends a
# *padding point* with label -1 (the `if pad:` branch above). Its token has no position at all:
# it is exactly the learned `not_a_point_embed`, whatever coordinates the padding point has. The
# paper does not discuss it; our reading is that it keeps a points-only prompt from being shorter
# than one with a box, the shape the official code was trained with. Notebook 7 measures what the
# masks lose without it.

# %%
assert torch.equal(sparse[0, 2], pe_enc.not_a_point_embed.weight[0])
print("padding token == not_a_point_embed: True")

# %% [markdown]
# ## A box is two corner points
#
# A box (x0, y0, x1, y1) becomes two tokens: the top-left corner's position plus
# `point_embeddings[2]`, the bottom-right's plus `point_embeddings[3]` (paper, Appendix A). With a
# box there is no padding point (`pad=(boxes is None)` in `forward`):

# %%
se.show_source(se.PromptEncoder.forward, lines=("bs = self.check_inputs", "return sparse, dense"),
               highlight=["pad=", "no_mask_embed"])

# %% [markdown]
# The length rule of the sparse tokens, N':
#
# | prompt | N' |
# |---|---|
# | N points | N + 1 |
# | N points and a box | N + 2 |
# | a box | 2 |
# | nothing | 0 |

# %%
box = torch.tensor([[60.0, 40.0, 180.0, 150.0]], device=device)  # B x 4
with torch.no_grad():
    for pts, bx, expected in [((coords, labels), None, 3), ((coords, labels), box, 4), (None, box, 2), (None, None, 0)]:
        s, _ = pe_enc(points=pts, boxes=bx, masks=None)
        print(f"points={'2' if pts else '0'} box={'yes' if bx is not None else 'no '} -> N' = {s.shape[1]}")
        assert s.shape == (1, expected, 256)
    s, _ = pe_enc(points=None, boxes=box, masks=None)
corner_pos = pe_enc.pe_layer.forward_with_coords(box.reshape(1, 2, 2) + 0.5, pe_enc.input_image_size)  # 1 x 2 x C
torch.testing.assert_close(s[0, 0], corner_pos[0, 0] + pe_enc.point_embeddings[2].weight[0])
torch.testing.assert_close(s[0, 1], corner_pos[0, 1] + pe_enc.point_embeddings[3].weight[0])

# %% [markdown]
# ## The dense prompt: a mask, or "no mask"
#
# A mask prompt is a B x 1 x 4H x 4W = B x 1 x 256 x 256 map of *logits* (typically the
# low-resolution output of a previous prediction). Two stride-2 convolutions and a 1 x 1 convolution
# bring it down to the embedding's grid:
# B x 1 x 256 x 256 -> B x 4 x 128 x 128 -> B x 16 x 64 x 64 -> B x 256 x 64 x 64.
# Without a mask, the dense embedding is `no_mask_embed` copied to every grid cell.

# %%
mask_input = torch.zeros(1, 1, 256, 256, device=device)
mask_input[..., 60:160, 80:200] = 5.0  # a rectangle of positive logits
with se.trace_shapes(pe_enc) as trace, torch.no_grad():
    _, dense_from_mask = pe_enc(points=None, boxes=None, masks=mask_input)
trace.filter("mask_downscaling*")

# %%
assert dense_from_mask.shape == (1, 256, 64, 64)
assert torch.equal(dense[0, :, 10, 20], pe_enc.no_mask_embed.weight[0])  # the same vector ...
assert torch.equal(dense[0, :, 63, 0], pe_enc.no_mask_embed.weight[0])  # ... at every cell

# %% [markdown]
# ## The positional encoding of the image
#
# The image grid gets the same Fourier features as the points, evaluated at each cell centre:
# `get_dense_pe()`, 1 x C x H x W. Because points and grid cells share one encoding, the decoder
# can match a click to the cells around it. Here are four of its 256 channels: low and
# high spatial frequencies, depending on the random matrix.

# %%
image_pe = pe_enc.get_dense_pe()  # 1 x C x H x W
fig, axes = plt.subplots(1, 4, figsize=(10, 2.6))
for ax, c in zip(axes, [0, 1, 128, 200]):
    ax.imshow(image_pe[0, c].cpu(), cmap="RdBu")
    ax.set_title(f"channel {c}")
    ax.axis("off")
plt.show()
assert image_pe.shape == (1, 256, 64, 64)

# %% [markdown]
# ## The decoder's own tokens, and T = 5 + N'
#
# The decoder owns five learned tokens: an **IoU token** (it will carry the quality estimate) and
# **M = 4 mask tokens** (each will become one mask). They are the same for every prompt set;
# the decoder copies them B times and puts the N' prompt tokens after them:
#
# `tokens = [iou, mask0, mask1, mask2, mask3, prompt tokens...]`, B x T x C.
#
# The decoder's code for it:

# %%
se.show_source(se.MaskDecoder.predict_masks, lines=("# The output tokens", "pos_src = self.hook_pos_src"),
               highlight=["torch.cat", "repeat("])

# %% [markdown]
# We read the tokens off the decoder's hook points with `trace_shapes(..., keep_tensors=True)`.

# %%
B = 3  # three prompt sets on one image: different clicks
clicks = torch.tensor([[[120.0, 80.0]], [[30.0, 200.0]], [[200.0, 200.0]]], device=device)  # B x N x 2
with torch.no_grad():
    sparse, dense = pe_enc(points=(clicks, torch.ones(B, 1, dtype=torch.long, device=device)), boxes=None, masks=None)
    with se.trace_shapes(decoder, keep_tensors=True) as trace:
        decoder(image_embeddings, pe_enc.get_dense_pe(), sparse, dense, multimask_output=True)
trace.filter("hook_*")  # the decoder's own hook points

# %%
tokens = trace.find("hook_tokens")[0].tensor  # B x T x C
T = 5 + sparse.shape[1]
assert tokens.shape == (B, T, 256) == (3, 7, 256)
assert torch.equal(tokens[:, 0], decoder.iou_token.weight.expand(B, -1))
assert torch.equal(tokens[:, 1:5], decoder.mask_tokens.weight.expand(B, -1, -1))
assert torch.equal(tokens[:, 5:], sparse)
print(se.token_names(se.Prompts(points=(clicks, torch.ones(B, 1, dtype=torch.long))))[0])

# %% [markdown]
# ## One image, B prompt sets
#
# The image embedding is computed once, but each prompt set needs its own copy of the image side,
# because the decoder will *write into it* (the image-to-token attention updates the image
# features with what the tokens know). So the decoder repeats it B times and adds each set's
# dense prompt: `src = repeat(image, "1 c h w -> b c h w") + dense`, B x C x H x W.

# %%
src = trace.find("hook_src")[0].tensor  # B x C x H x W
assert src.shape == (B, 256, 64, 64)
for b in range(B):
    torch.testing.assert_close(src[b], image_embeddings[0] + dense[b])
print("src[b] = image embedding + dense[b] for every prompt set b")

# %% [markdown]
# **Next**: [3. Two-way attention](03_two_way_attention.ipynb).
