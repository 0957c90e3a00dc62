# %% [markdown]
# # 3. Two-way attention
#
# The heart of the decoder is a small transformer in which information flows **both ways**:
# the T tokens read the image, and the HW = 4096 image positions read the tokens. SAM stacks
# two such blocks and ends with one more read of the image by the tokens.
#
# One block, on queries = tokens (B x T x C) and keys = image (B x HW x C):
#
# 1. **self-attention** of the tokens (B x T x T maps), then `norm1`;
# 2. **token-to-image** cross-attention: each token is a query over the 4096 image positions
#    (B x T x HW maps), then `norm2`;
# 3. an **MLP** on each token (256 -> 2048 -> 256, ReLU), then `norm3`;
# 4. **image-to-token** cross-attention: each image position is a query over the T tokens
#    (B x HW x T maps), added to the image features, then `norm4`.
#
# Positional encodings are *added to queries and keys* before every attention, never to the values:
# the image gets `image_pe`, the tokens get their own starting values (the prompt tokens carry
# their position already). In layer 0 the self-attention gets no positional encoding and its output
# *replaces* the tokens (there is nothing useful to keep from the raw tokens yet).
#
# The self-attention works at 256 channels (h = 8 heads of d = 32); the cross-attentions project
# down to 128 channels (8 heads of d = 16) to save compute over the 4096 positions.

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt
from einops import rearrange

import sam_explain as se
from sam_explain.prompts import Prompts
from sam_explain.toy import click_inside, make_scene

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)
decoder, pe_enc = model.mask_decoder, model.prompt_encoder
scene = make_scene(seed=11)
image_embeddings = model.embed(scene.image)  # 1 x C x H x W

k = int(np.argmax(scene.object_masks.sum(axis=(1, 2))))  # the largest object
click = click_inside(scene.object_masks[k])  # (x, y), deep inside it
prompts = Prompts(points=(torch.tensor([[click]]), torch.tensor([[1]]))).to(device)
with torch.no_grad():
    sparse, dense = pe_enc(points=prompts.points, boxes=None, masks=None)
    image_pe = pe_enc.get_dense_pe()

# %% [markdown]
# ## Block 0, by hand
#
# We take the decoder's own inputs to the transformer from its hook points, then run the four
# steps of `transformer.layers[0]` ourselves, one module at a time, and compare with the block.

# %%
with torch.no_grad(), se.trace_shapes(decoder, keep_tensors=True) as trace:
    decoder(image_embeddings, image_pe, sparse, dense, multimask_output=True)
tokens = trace.find("hook_tokens")[0].tensor  # B x T x C
src = trace.find("hook_src")[0].tensor  # B x C x H x W
pos_src = trace.find("hook_pos_src")[0].tensor  # B x C x H x W

block = decoder.transformer.layers[0]
with torch.no_grad():
    keys = rearrange(src, "b c h w -> b (h w) c")  # B x HW x C
    key_pe = rearrange(pos_src, "b c h w -> b (h w) c")  # B x HW x C
    query_pe = tokens  # the tokens as they entered are the queries' positional encoding

    # 1. self-attention, no positional encoding and no residual in layer 0
    queries = block.norm1(block.self_attn(q=tokens, k=tokens, v=tokens))  # B x T x C
    # 2. tokens read the image
    queries = block.norm2(queries + block.cross_attn_token_to_image(q=queries + query_pe, k=keys + key_pe, v=keys))
    # 3. MLP on each token
    queries = block.norm3(queries + block.mlp(queries))
    # 4. the image reads the tokens
    keys = block.norm4(keys + block.cross_attn_image_to_token(q=keys + key_pe, k=queries + query_pe, v=queries))

    q_ref, k_ref = block(queries=tokens, keys=rearrange(src, "b c h w -> b (h w) c"), query_pe=tokens, key_pe=key_pe)
torch.testing.assert_close(queries, q_ref)
torch.testing.assert_close(keys, k_ref)
print("queries:", tuple(queries.shape), " keys:", tuple(keys.shape))
assert queries.shape == (1, 5 + sparse.shape[1], 256) and keys.shape == (1, 64 * 64, 256)

# %% [markdown]
# The block's trace: every attention's q, k, v after the head split (B x h x n x d), its logits
# and its probabilities.

# %%
trace.filter("transformer.layers.0", kind="hook")

# %% [markdown]
# ## Inside one attention
#
# `Attention` projects q, k and v, splits the channels into h heads
# (`rearrange(q, "b n (h d) -> b h n d")`), computes `softmax(q k^T / sqrt(d))` over the keys and
# mixes the values with it. We recompute the token-to-image map of layer 0 from the captured
# q and k and check it against the captured probabilities.

# %%
site = "transformer.layers.0.cross_attn_token_to_image"
q = trace.find(site + ".hook_q")[0].tensor  # B x h x T x d
k = trace.find(site + ".hook_k")[0].tensor  # B x h x HW x d
probs = trace.find(site + ".hook_probs")[0].tensor  # B x h x T x HW
print(f"q {tuple(q.shape)}  k {tuple(k.shape)}  probs {tuple(probs.shape)}")
recomputed = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
torch.testing.assert_close(recomputed, probs)
torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]))
assert probs.shape == (1, 8, 5 + sparse.shape[1], 64 * 64)

# %% [markdown]
# ## The attention maps, over the image
#
# `se.capture_attention` runs prompt encoder and decoder and keeps all seven maps (three per
# layer and the final token-to-image). A row of a token-to-image map, reshaped to 64 x 64, says
# *where in the image that token reads*. Attention is peaked (a few cells take most of it), so the
# colours follow a power scale (`gamma=0.5`) that lets the fainter attention show too; the title
# says so. The star is the click.

# %%
rec = se.capture_attention(pe_enc, decoder, image_embeddings, prompts)
print(rec)
assert rec["transformer.final_attn_token_to_image"].shape == (1, 8, 7, 4096)
assert rec["transformer.layers.1.cross_attn_image_to_token"].shape == (1, 8, 4096, 7)
se.plot_token_to_image(rec, "mask0", gamma=0.5)  # the bare 64 x 64 grids; pass image= to overlay

# %% [markdown]
# Averaged over heads, for every output token and the click: the IoU token and the four mask
# tokens each read the image in their own way.

# %%
se.plot_token_to_image(rec, "mask1", heads="mean", image=scene.image, gamma=0.5)

# %% [markdown]
# The **image-to-token** attention goes the other way: for each token, how much each image
# position takes from it. Positions on the clicked object take from the point token and the mask
# tokens; the background takes from elsewhere.

# %%
se.plot_image_to_token(rec, image=scene.image, gamma=0.5)

# %% [markdown]
# The **token self-attention**, T x T, tokens named on the axes (rows are queries):

# %%
se.plot_token_self(rec, heads="mean")

# %% [markdown]
# ## Explore
#
# The explorer below lets you pick the attention kind, the layer, the head (or the mean) and the
# token; the picture redraws in place. (It needs a live kernel: in a static HTML export it shows
# its first picture only.)

# %%
se.explore_attention(rec, scene.image)

# %% [markdown]
# **Next**: [4. The 4x upscaling](04_upscaling.ipynb).
