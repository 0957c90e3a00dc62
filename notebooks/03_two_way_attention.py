# %% [markdown]
# # 3. Two-way attention
#
# The heart of the decoder is a small transformer in which information flows **both ways**:
# the T tokens read the image, and the HW = 4096 image positions read the tokens. SAM stacks
# two such blocks and ends with one more read of the image by the tokens (Kirillov et al.,
# *Segment Anything*, 2023, section 3 and appendix A).
#
# One block, on queries = tokens (B x T x C) and keys = image (B x HW x C):
#
# 1. **self-attention** of the tokens (B x h x T x T maps), then `norm1`;
# 2. **token-to-image** cross-attention: each token is a query over the 4096 image positions
#    (B x h x T x HW maps), then `norm2`;
# 3. an **MLP** on each token (256 -> 2048 -> 256, ReLU), then `norm3`;
# 4. **image-to-token** cross-attention: each image position is a query over the T tokens
#    (B x h x HW x T maps), added to the image features, then `norm4`.
#
# Positional encodings are *added to queries and keys* before every attention, never to the values:
# the image gets `image_pe` (the dense positional encoding of the 64 x 64 grid), the tokens get
# **the tokens as they entered the transformer** (the output tokens and the prompt tokens, which
# carry their positions). The paper's words: the original prompt tokens are re-added whenever they
# take part in an attention, so that the geometry of the prompt is never lost.
#
# Layer 0 is the exception (`skip_first_layer_pe=True`). There the queries *are* the entering
# tokens, so adding them again as their positional encoding would only double them; the
# self-attention takes the tokens as they are and its output *replaces* them, with no residual.
# Nothing is lost by that: the raw tokens come back as the positional encoding of every later
# attention.
#
# The self-attention works at 256 channels (h = 8 heads of d = 32); the cross-attentions project
# down to 128 channels (8 heads of d = 16) to save compute over the 4096 positions.

# %%
import numpy as np
import torch
from einops import rearrange

import sam_explain as se
from sam_explain.prompts import Prompts
from sam_explain.toy import click_inside, make_scene

device = "cuda" if torch.cuda.is_available() else "cpu"
model = se.toy_model(device=device)
decoder, pe_enc = model.mask_decoder, model.prompt_encoder


def largest_object_click(seed):
    """Toy scene `seed`, its largest object's index, a click deep inside that object, and the scene's
    image embedding (1 x C x H x W = 1 x 256 x 64 x 64)."""
    scene = make_scene(seed=seed)
    k = int(np.argmax(scene.object_masks.sum(axis=(1, 2))))  # the largest object
    return scene, k, click_inside(scene.object_masks[k]), model.embed(scene.image)  # ..., (x, y), 1 x C x H x W


cases = {seed: largest_object_click(seed) for seed in (3, 11, 20, 23)}  # the scenes the claims are checked on
scene, k, click, image_embeddings = cases[11]
prompts = Prompts(points=(torch.tensor([[click]]), torch.tensor([[1]]))).to(device)
with torch.no_grad():
    sparse, dense = pe_enc(points=prompts.points, boxes=None, masks=None)  # 1 x 2 x 256 (point, pad), 1 x 256 x 64 x 64
    image_pe = pe_enc.get_dense_pe()  # 1 x 256 x 64 x 64

# %% [markdown]
# ## The code of one block
#
# This is the block as it runs in this package (the official code, with shape comments). Note
# `q = queries + query_pe` and `k = keys + key_pe` before each attention, and the values `v`
# without them.

# %%
se.show_source(se.TwoWayAttentionBlock.forward, highlight=["skip_first_layer_pe", "+ query_pe", "+ key_pe"])

# %% [markdown]
# ## Block 0, by hand
#
# We take the decoder's own inputs to the transformer from its hook points, then run the four
# steps of `transformer.layers[0]` ourselves, one module at a time, and compare with the block.

# %%
with torch.no_grad(), se.trace_shapes(decoder, keep_tensors=True) as trace:
    decoder(image_embeddings, image_pe, sparse, dense, multimask_output=True)
tokens = trace.find("hook_tokens")[0].tensor  # B x T x C = 1 x 7 x 256: iou, 4 masks, point, pad
src = trace.find("hook_src")[0].tensor  # B x C x H x W: image embedding + dense prompt embedding
pos_src = trace.find("hook_pos_src")[0].tensor  # B x C x H x W: image_pe, one copy per prompt set

block = decoder.transformer.layers[0]
with torch.no_grad():
    keys = rearrange(src, "b c h w -> b (h w) c")  # B x HW x C
    key_pe = rearrange(pos_src, "b c h w -> b (h w) c")  # B x HW x C
    query_pe = tokens  # the tokens as they entered are the queries' positional encoding

    # 1. self-attention: in layer 0 no positional encoding, and the output replaces the tokens
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
q = trace.find(site + ".hook_q")[0].tensor  # B x h x T x d = 1 x 8 x 7 x 16
k_heads = trace.find(site + ".hook_k")[0].tensor  # B x h x HW x d = 1 x 8 x 4096 x 16
probs = trace.find(site + ".hook_probs")[0].tensor  # B x h x T x HW = 1 x 8 x 7 x 4096
print(f"q {tuple(q.shape)}  k {tuple(k_heads.shape)}  probs {tuple(probs.shape)}")
recomputed = torch.softmax(q @ k_heads.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # B x h x T x HW
torch.testing.assert_close(recomputed, probs)
torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]))  # each row sums to 1
assert probs.shape == (1, 8, 5 + sparse.shape[1], 64 * 64)

# %% [markdown]
# ## The attention maps, over the image
#
# `se.capture_attention` runs prompt encoder and decoder and keeps all seven maps (three per
# layer and the final token-to-image). A row of a token-to-image map, reshaped to 64 x 64, says
# *where in the image that token reads*. The image is dimmed to gray and the heat is drawn over
# it, more opaque where the attention is higher. Attention is peaked, so the colour limit is the
# 99th percentile of the cells (stated on the figure), not the single largest cell. The green
# dot is the click.
#
# Here is mask token 0, every head of every token-to-image attention (rows: layer 0, layer 1,
# final). Heads differ: some read the clicked object, some its edges, some other objects.

# %%
rec = se.capture_attention(pe_enc, decoder, image_embeddings, prompts)
print(rec)
assert rec["transformer.final_attn_token_to_image"].shape == (1, 8, 7, 4096)  # B x h x T x HW
assert rec["transformer.layers.1.cross_attn_image_to_token"].shape == (1, 8, 4096, 7)  # B x h x HW x T
se.plot_token_to_image(rec, "mask0", image=scene.image)

# %% [markdown]
# The mean of the heads, with a cyan outline around the fewest cells holding half of the token's
# attention. Layer by layer, mask token 0's reading gathers on the clicked object.

# %%
se.plot_token_to_image(rec, "mask0", heads="mean", image=scene.image, outline=0.5)

# %% [markdown]
# ## The other way: the image reads the tokens
#
# In the **image-to-token** attention each of the 4096 positions spreads one unit of attention over
# the T = 7 tokens. One panel per token: how much each position takes from it (mean of heads).
# In layer 0 the positions on the clicked object take most from the point token; in layer 1 the
# object takes from mask token 3 and the background from mask token 2.

# %%
se.plot_image_to_token(rec, image=scene.image)

# %% [markdown]
# Are those readings of one scene, or a rule? We measure them on four scenes: the mean share a
# position gives each token, on the clicked object and on the background (positions whose 4 x 4
# pixels are all inside, or all outside, the object).

# %%
names = rec.names(0)  # ['iou', 'mask0', 'mask1', 'mask2', 'mask3', 'point0 (+)', 'pad']
point, mask2, mask3 = names.index("point0 (+)"), names.index("mask2"), names.index("mask3")
print(f"{'scene':>5} {'layer':>5}  " + "  ".join(f"{n.split()[0]:>13}" for n in names) + "   (on object / background)")
for seed, (s, obj, c, emb) in cases.items():
    r = se.capture_attention(pe_enc, decoder, emb, Prompts(points=(torch.tensor([[c]]), torch.tensor([[1]]))).to(device))
    cells = rearrange(torch.from_numpy(s.object_masks[obj]).float(), "(h a) (w b) -> (h w) (a b)", a=4, b=4).mean(1)
    on, off = cells == 1, cells == 0  # HW positions entirely on the object / entirely off it
    share = {}
    for layer in (0, 1):
        m = r[f"transformer.layers.{layer}.cross_attn_image_to_token"][0].mean(0).cpu()  # HW x T, mean of heads
        share[layer] = m[on].mean(0), m[off].mean(0)  # T, T
        print(f"{seed:>5} {layer:>5}  " + "  ".join(f"{a:>6.2f} / {b:<4.2f}" for a, b in zip(*share[layer])))
    assert share[0][0][point] > share[0][1][point]  # layer 0: the object reads the click more than the background does
    assert share[1][0][mask3] > share[1][1][mask3]  # layer 1: the object reads mask token 3 more,
    assert share[1][1][mask2] > share[1][0][mask2]  # and the background reads mask token 2 more

# %% [markdown]
# The **token self-attention**, T x T, tokens named on the axes (rows are queries):

# %%
se.plot_token_self(rec, heads="mean")

# %% [markdown]
# ## Why both ways? Take one away
#
# An intervention (`se.intervene`, [docs/tracing.md](../docs/tracing.md)) changes one module's
# output for one run. We compare the masks with the clicked object (IoU of the best of the three
# masks, on the same four scenes) when:
#
# * **no image-to-token**: the outputs of `transformer.layers.{0,1}.cross_attn_image_to_token` are
#   zero, so the image features never hear of the prompt; the upscaled features that the mask
#   tokens multiply are the image's alone;
# * **no positional encoding on the image**: `hook_pos_src` is zero, so the keys no longer say where
#   they are and the point token (which carries its position) cannot find its place.

# %%
def best_iou(embeddings, click, truth, *interventions):
    """IoU of the best of the three masks with the object; the run changed by `interventions`."""
    with torch.no_grad(), se.intervene(decoder, *interventions):
        masks, _ = model.predict(embeddings, points=[click])  # 1 x 3 x 256 x 256 logits
    pred = (masks[0] > 0).cpu().numpy()  # 3 x 256 x 256
    return max((m & truth).sum() / (m | truth).sum() for m in pred)


no_image_to_token = [se.zero(f"transformer.layers.{i}.cross_attn_image_to_token") for i in (0, 1)]
no_pos = [se.zero("hook_pos_src")]
print(f"{'scene':>5} {'as trained':>11} {'no image-to-token':>18} {'no image PE':>12}")
for seed, (s, obj, c, emb) in cases.items():
    truth = s.object_masks[obj]
    row = [best_iou(emb, c, truth), best_iou(emb, c, truth, *no_image_to_token), best_iou(emb, c, truth, *no_pos)]
    print(f"{seed:>5} {row[0]:>11.2f} {row[1]:>18.2f} {row[2]:>12.2f}")
    assert row[0] > 0.9 and row[1] < 0.5 and row[2] < 0.5

# %% [markdown]
# Both take the masks from above 0.9 to below 0.5: the image must read the tokens (that is how the
# prompt reaches the features the masks are made from), and the image must carry its positions.
#
# ## Now you: the live explorer
#
# Click on the image to add a foreground point (shift-click for background), drag for a box; the
# decoder runs at once and shows its three masks with their predicted IoU, and the attention map
# you choose with the controls (kind, layer, head or mean, token). The shape trace of the last run
# is in the collapsed panel below it. (In a static HTML export it shows its last picture and says
# that it needs a kernel.)
#
# From Python, `explorer.click(x, y)`, `explorer.select(kind=..., layer=..., head=..., token=...)`,
# `explorer.undo()` and `explorer.reset()` do what the controls do and return the picture.

# %%
explorer = se.live_explorer(model, scene.image)
picture = explorer.click(*click)  # H x W x 3 uint8, the picture as shown
explorer.select(kind="image_to_token", layer=0, head="mean", token="point0")
explorer

# %% [markdown]
# **Next**: [4. The 4x upscaling](04_upscaling.ipynb).
