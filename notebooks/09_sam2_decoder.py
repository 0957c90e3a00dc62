# %% [markdown]
# # 9. What SAM 2 changed in the decoder
#
# SAM 2 (2024) and SAM 2.1 keep SAM's mask decoder and change a handful of things in it:
#
# 1. an **object-score token**, in front of the IoU token, and a head that turns it into one logit
#    per prompt set ("is the object there?"): T = 1 + 1 + M + N' tokens, 6 learned ones;
# 2. **high-resolution skips**: the image encoder's stride-8 and stride-4 features, projected by
#    two 1x1 convs, are added inside the 4x upscaling;
# 3. the IoU head ends with a **sigmoid**;
# 4. smaller things: the attention calls PyTorch's fused `scaled_dot_product_attention`, the block
#    MLP's weights have other names, the image may be repeated over the prompt sets or given once
#    per prompt set (`repeat_image`);
# 5. a **stability switch**: asked for one mask, the decoder may return a multimask output instead;
# 6. boxes go to the prompt encoder as two labelled points.
#
# **What runs here.** The toy SAM 2 (`se.toy_sam2_model()`): SAM 2.1's prompt encoder and mask
# decoder, every flag on, trained on the toy scenes with SAM 2's recipe, starting from the toy SAM
# ([docs/toy_sam2.md](../docs/toy_sam2.md) has its recipe and figures). Its image encoder is the toy
# SAM's with the two high-resolution levels SAM 2's decoder expects, so everything the decoder
# takes has SAM 2.1's shapes. Beside it, the toy SAM of the earlier chapters.
#
# Everything below is sam-explain's own SAM 2 code (`sam_explain/sam2/`), which the tests compare with
# the official `sam2` 1.1.0 package, same weights, within 1e-5. The last section reads the official
# package's source (installed with `pip install --no-deps sam2==1.1.0`).

# %%
import copy
import importlib.util
import inspect
import json
import pathlib

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F

import sam_explain as se
import sam_explain.sam2 as s2
from sam_explain.prompts import Prompts
from sam_explain.toy import click_inside, make_scene, mask_iou
from sam_explain.toy.sam2_evaluate import roc_auc
from sam_explain.tracing.records import value_text

device = "cuda" if torch.cuda.is_available() else "cpu"
toy2 = se.toy_sam2_model(device=device)  # the toy SAM 2, trained
toy = se.toy_model(device=device)  # the toy SAM, for the side by side
pe1, dec1 = toy.prompt_encoder, toy.mask_decoder  # SAM's
pe2, dec2 = toy2.prompt_encoder, toy2.mask_decoder  # SAM 2.1's
print(f"toy SAM 2: schedule {toy2.metadata['schedule']}, {toy2.metadata['steps_done']} steps from the toy SAM")


embedded = {}  # seed -> (scene, image embedding, [feat_s0, feat_s1]): each scene is embedded once


def scene_features(seed: int) -> tuple:
    """A toy scene and what the toy SAM 2's image side makes of it (1 x C x H x W, and the two maps)."""
    if seed not in embedded:
        sc = make_scene(seed=seed)
        embedded[seed] = (sc, *toy2.embed(sc.image))
    return embedded[seed]


# %%
scene = make_scene(seed=11)  # the scene the sections below come back to
k = int(np.argmax(scene.object_masks.sum(axis=(1, 2))))  # the largest object
click = click_inside(scene.object_masks[k])  # (x, y) in toy-image pixels
prompts = Prompts(points=(torch.tensor([[click]], dtype=torch.float32), torch.tensor([[1]]))).to(device)
emb1 = toy.embed(scene.image)  # 1 x C x H x W = 1 x 256 x 64 x 64
# SAM 2's image encoder gives three levels; the decoder's own 1x1 convs project the two finer ones
# (outside its forward, once per image): embed() returns what the decoder takes
emb2, feats = toy2.embed(scene.image)  # 1 x C x H x W, [feat_s0 1 x C/8 x 4H x 4W, feat_s1 1 x C/4 x 2H x 2W]
embedded[11] = (scene, emb2, feats)
print("embedding", tuple(emb2.shape), " feat_s0", tuple(feats[0].shape), " feat_s1", tuple(feats[1].shape))
assert [tuple(f.shape) for f in feats] == [(1, 32, 256, 256), (1, 64, 128, 128)]

# %% [markdown]
# ## Side by side, on the same input
#
# The same image and the same click through the toy SAM's decoder and through the toy SAM 2's.
# (SAM 2's image predictor also resizes a photo to a 1024 square where SAM keeps its aspect ratio
# and pads, so the two *predictors* do not even see the same pixels; see the end.) For a click, the
# two prompt encoders compute the same thing (SAM 2's class is SAM's with labels 2 and 3 added to the
# point path), with other weights here.

# %%
with torch.no_grad():
    sparse1, dense1 = pe1(points=prompts.points, boxes=None, masks=None)  # B x N' x C, B x C x H x W
    sparse2, dense2 = pe2(points=prompts.points, boxes=None, masks=None)
    with se.trace_shapes(dec1, keep_tensors=True) as t1:
        masks1, iou1 = dec1(emb1, pe1.get_dense_pe(), sparse1, dense1, multimask_output=True)
    with se.trace_shapes(dec2, keep_tensors=True) as t2:
        masks2, iou2, tokens2, score2 = dec2(emb2, pe2.get_dense_pe(), sparse2, dense2, multimask_output=True,
                                             repeat_image=True, high_res_features=feats)
assert sparse1.shape == sparse2.shape == (1, 2, 256)  # the click and the padding point, in both
assert not t1.mismatches() and not t2.mismatches()
print(f"SAM:   masks {tuple(masks1.shape)}, iou {tuple(iou1.shape)}")
print(f"SAM 2: masks {tuple(masks2.shape)}, iou {tuple(iou2.shape)}, sam_tokens_out {tuple(tokens2.shape)}, "
      f"object_score_logits {tuple(score2.shape)}")
print(f"T: SAM {t1.find('hook_tokens')[0].output_shape[1]}, SAM 2 {t2.find('hook_tokens')[0].output_shape[1]}")
assert t2.find("hook_tokens")[0].output_shape[1] == t1.find("hook_tokens")[0].output_shape[1] + 1

# %% [markdown]
# SAM's decoder, its own steps (depth 1):

# %%
t1.filter(max_depth=1)

# %% [markdown]
# SAM 2's: one more output token, the skips `hook_feat_s1` / `hook_skip_s1` / `hook_feat_s0` /
# `hook_skip_s0`, the object score, the object-pointer token(s) `hook_sam_tokens_out`, and a
# four-tuple out. Every row is labelled by SAM 2's shape contract (docs/shapes.md). New symbols: O = 1
# object-score token; Ih the number of images given (1 here, repeated over the B prompt sets);
# K_ptr the mask tokens kept as `sam_tokens_out`, the "object pointer" that SAM 2's video path stores
# in its memory to find the object again in the next frames.

# %%
t2.filter(max_depth=1)

# %% [markdown]
# ## 1. The object-score token
#
# The learned tokens are now `obj_score_token ++ iou_token ++ mask_tokens` (6 x C); every row of the
# transformer's output that SAM read at 0 (the IoU token) or 1..4 (the mask tokens) is read one further
# on. (Below, "token 0" keeps meaning *mask* token 0, as in SAM: the single-mask token.) The object-score token goes through
# the transformer like the others and a head (an MLP C -> C -> C -> 1 in SAM 2.1) reads it.

# %%
se.show_source(s2.MaskDecoder.predict_masks, ("# The output tokens", "self.hook_tokens(tokens)"))

# %%
se.show_source(s2.MaskDecoder.predict_masks, ("if self.pred_obj_scores:", "object_score_logits = 10.0"))

# %%
out_tokens = t2.find("hook_output_tokens")[0].tensor  # B x (O+1+M) x C
assert out_tokens.shape == (1, 6, 256)
assert torch.equal(out_tokens[0, 0], dec2.obj_score_token.weight[0])
assert torch.equal(out_tokens[0, 1], dec2.iou_token.weight[0])
hs = t2.find("hook_hs")[0].tensor  # B x T x C
with torch.no_grad():
    torch.testing.assert_close(dec2.pred_obj_score_head(hs[:, 0]), score2)
print(f"object score logit for the click on the object: {score2.item():+.2f}")

# %% [markdown]
# What has the trained head learnt? Click everywhere: an 8 x 8 grid of single clicks over the
# image, 64 prompt sets against one image embedding (`repeat_image=True`), and each click's object
# score drawn where it was clicked. Red: the decoder says an object is there (logit > 0, the video
# path keeps the masks); blue: it says there is none (the video path blanks every mask).

# %%
def object_scores(seed: int, grid: int = 8, batch: int = 32) -> tuple:
    """The object-score logit of a click at each of grid x grid points -> (scores G x G, on-object G x G)."""
    scene, emb, feats = scene_features(seed)
    xs = (np.arange(grid) + 0.5) * scene.image.shape[1] / grid
    points = torch.tensor([[x, y] for y in xs for x in xs], dtype=torch.float32)  # G^2 x 2
    scores = []
    for i in range(0, len(points), batch):
        p = points[i:i + batch, None]  # b x 1 x 2: one click per prompt set
        sets = Prompts(points=(p, torch.ones(len(p), 1, dtype=torch.int64))).to(device)
        scores.append(s2.run_sam2_decoder(pe2, dec2, emb, sets, high_res_features=feats)[3][:, 0].cpu())  # b
    on = scene.object_masks.any(0)[points[:, 1].long().numpy(), points[:, 0].long().numpy()]  # G^2
    return torch.cat(scores).reshape(grid, grid).numpy(), on.reshape(grid, grid)


fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
for col, seed in enumerate((11, 23)):
    grid_scene = scene_features(seed)[0]
    scores, on = object_scores(seed)
    auc = roc_auc(torch.tensor(scores[on]), torch.tensor(scores[~on]))
    print(f"scene {seed}: mean score on objects {scores[on].mean():+.2f}, on the background {scores[~on].mean():+.2f}; "
          f"ROC AUC {auc:.3f}; sign right on {((scores > 0) == on).mean():.0%} of the clicks")
    assert scores[on].mean() > 0 > scores[~on].mean() and auc > 0.95
    axes[2 * col].imshow(grid_scene.image)
    axes[2 * col].set_title(f"scene {seed}")
    lim = np.abs(scores).max()
    shown = axes[2 * col + 1].imshow(scores, cmap="RdBu_r", vmin=-lim, vmax=lim, extent=(0, 256, 256, 0))
    axes[2 * col + 1].contour(grid_scene.object_masks.any(0), levels=[0.5], colors="k", linewidths=0.8)
    axes[2 * col + 1].set_title("object score of a click there")
    fig.colorbar(shown, ax=axes[2 * col + 1], fraction=0.046, label="object-score logit")
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout()

# %% [markdown]
# ## 2. The high-resolution skips
#
# SAM upscales the B x C x H x W image side with a transposed conv (C -> C/4, 2H x 2W), LayerNorm2d,
# GELU, a transposed conv (C/4 -> C/8, 4H x 4W) and GELU. SAM 2 adds the stride-8 features
# **after the first transposed conv, before the LayerNorm**, and the stride-4 features **after the
# second, before the last GELU**:

# %%
se.show_source(s2.MaskDecoder.predict_masks, ("if not self.use_high_res_features:", "upscaled_embedding = act2(upscaled)"))

# %%
for name in ("hook_feat_s1", "hook_skip_s1", "hook_feat_s0", "hook_skip_s0", "hook_upscaled_embedding"):
    row = t2.find(name)[0]
    print(f"{name:24s} {value_text(row.output, row.output_check):38s} {row.step}")
src = t2.find("transformer")[0].tensor[1].transpose(1, 2).reshape(1, 256, 64, 64)  # B x HW x C -> B x C x H x W
dc1, ln1, act1, dc2, act2 = dec2.output_upscaling
with torch.no_grad():
    torch.testing.assert_close(dc1(src) + feats[1], t2.find("hook_skip_s1")[0].tensor)  # B x C/4 x 2H x 2W
    stage2 = dc2(act1(ln1(t2.find("hook_skip_s1")[0].tensor)))  # B x C/8 x 4H x 4W
    torch.testing.assert_close(stage2 + feats[0], t2.find("hook_skip_s0")[0].tensor)
assert t2.find("hook_skip_s1")[0].output_shape == (1, 64, 128, 128)
assert t2.find("hook_skip_s0")[0].output_shape == (1, 32, 256, 256)
assert not t2.find("output_upscaling")  # the Sequential is not called as a whole any more

# %% [markdown]
# `conv_s0` and `conv_s1` belong to the decoder (their keys are `sam_mask_decoder.conv_s0.*`), but
# SAM 2 runs them once per image, in `SAM2Base.forward_image`, not in the decoder's forward; here
# `toy2.embed` does the same, and `s2.project_high_res_features` does it for any backbone's maps:

# %%
se.show_source(s2.project_high_res_features, ("return [decoder.conv_s0", "return [decoder.conv_s0"))

# %%
_, backbone_s0, backbone_s1 = toy2.backbone(scene.image)  # 1 x C x 4H x 4W, 1 x C x 2H x 2W: before the 1x1 convs
with torch.no_grad():
    projected = s2.project_high_res_features(dec2, backbone_s0, backbone_s1)  # [1 x C/8 x 4H x 4W, 1 x C/4 x 2H x 2W]
print("backbone_s0", tuple(backbone_s0.shape), "-> feat_s0", tuple(projected[0].shape))
print("backbone_s1", tuple(backbone_s1.shape), "-> feat_s1", tuple(projected[1].shape))
torch.testing.assert_close(projected[0], feats[0])
torch.testing.assert_close(projected[1], feats[1])

# %% [markdown]
# What do the skips add in the trained toy? `conv_s0` and `conv_s1` started at zero (the skips
# added nothing to the toy SAM's upscaling) and training moved them. An intervention removes them:
# `se.zero("hook_feat_s0")` and `se.zero("hook_feat_s1")` set both maps to zero inside the decoder, so
# that its upscaling is SAM's again and nothing else changes. The same click on every object of five
# scenes, with and without:

# %%
NO_SKIPS = (se.zero("hook_feat_s0"), se.zero("hook_feat_s1"))
SCENES = (3, 11, 20, 23, 31)


def click_masks(emb, feats, click, *interventions) -> torch.Tensor:
    """All M = 4 mask logits (M x 4H x 4W: token 0, then tokens 1..3) of one click, under ``interventions``."""
    points = (torch.tensor([[click]], dtype=torch.float32, device=device), torch.tensor([[1]], device=device))
    with torch.no_grad(), se.intervene(dec2, *interventions):
        sparse, dense = pe2(points=points, boxes=None, masks=None)  # 1 x N' x C, 1 x C x H x W
        masks = dec2.predict_masks(emb, pe2.get_dense_pe(), sparse, dense, repeat_image=True,
                                   high_res_features=feats)[0]  # 1 x M x 4H x 4W
    return masks[0].cpu()


def edge_band(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels within ``width`` of the mask's edge (dilation minus erosion)."""
    m = torch.from_numpy(mask).float()[None, None]  # 1 x 1 x H0 x W0
    grown = F.max_pool2d(m, 2 * width + 1, 1, width)
    shrunk = -F.max_pool2d(-m, 2 * width + 1, 1, width)
    return (grown - shrunk)[0, 0].bool().numpy()


rows = []  # (best of 3 with, without, mean |change| of the logits on the edge band, elsewhere)
for seed in SCENES:
    sc, e, f = scene_features(seed)
    for target in sc.object_masks:
        c = click_inside(target)
        with_skips, without = click_masks(e, f, c), click_masks(e, f, c, *NO_SKIPS)  # M x 4H x 4W
        change = (with_skips - without).abs().mean(0).numpy()  # 4H x 4W
        band = edge_band(target)
        rows.append((max(mask_iou(m > 0, target) for m in with_skips[1:].numpy()),
                     max(mask_iou(m > 0, target) for m in without[1:].numpy()), change[band].mean(), change[~band].mean()))
rows = np.array(rows)
print("weight norms: conv_s0", f"{dec2.conv_s0.weight.norm():.3f}, conv_s1 {dec2.conv_s1.weight.norm():.3f} (0 at the start)")
print(f"{len(rows)} clicks: best of 3 mIoU with the skips {rows[:, 0].mean():.3f}, without {rows[:, 1].mean():.3f}")
print(f"mean |change of the mask logits| within 2 px of the object's edge {rows[:, 2].mean():.2f}, "
      f"elsewhere {rows[:, 3].mean():.2f}")
figures = json.loads(toy2.metadata["figures"])  # eval-toy --model sam2, 453 held-out clicks
print(f"held out ({figures['prompts']} clicks): best of 3 {figures['click_best_of_3_miou']:.3f} with the skips, "
      f"{figures['click_best_of_3_miou_no_skips']:.3f} without")
assert rows[:, 2:].mean() > 0.05  # the skips change the logits ...
assert abs(rows[:, 0].mean() - rows[:, 1].mean()) < 0.02  # ... and hardly the masks

# %% [markdown]
# So in this toy the skips learnt little: they move the logits a little, somewhat more near the
# edges, and the masks hardly change. The toy's scenes have smooth shapes that the 4x upscaling of a
# 64 x 64 grid already draws well, and the 180 CPU steps of its training started the skips at zero.
# Real SAM 2 uses them for fine detail (thin structures, hair, edges) that its 1024-pixel images have
# and these do not. Where they act, on one click: the mask with the skips, without them, and the
# change of the logits (red: the skips raise it, blue: they lower it), the clicked object's outline in
# black. The change has the shapes of the *image*: feat_s0 and feat_s1 come from the image alone, at
# full and half resolution, and the mask token's hypernetwork weights decide how much of them reaches
# its mask. On this click it falls mostly on the *other* objects (the disc, the small square), whose
# logits stay below 0 either way, and hardly on the clicked square itself.

# %%
def draw_mask(ax, image: np.ndarray, mask: np.ndarray, target: np.ndarray = None) -> None:
    """The image in gray, the mask in orange over it, the target's outline in cyan."""
    ax.imshow(image.mean(-1), cmap="gray", vmin=0, vmax=255)
    overlay = np.zeros((*mask.shape, 4))  # H0 x W0 x RGBA, transparent
    overlay[mask] = (1.0, 0.55, 0.0, 0.6)  # orange where the mask is
    ax.imshow(overlay)
    if target is not None:
        ax.contour(target, levels=[0.5], colors="cyan", linewidths=1.2)

# %%
with_skips, without = click_masks(emb2, feats, click), click_masks(emb2, feats, click, *NO_SKIPS)  # M x 4H x 4W
best = 1 + int(np.argmax([mask_iou(m > 0, scene.object_masks[k]) for m in with_skips[1:].numpy()]))  # of tokens 1..3
change = (with_skips[best] - without[best]).numpy()
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, data, title in ((axes[0], with_skips[best] > 0, f"mask {best}, with the skips"),
                        (axes[1], without[best] > 0, f"mask {best}, skips removed")):
    draw_mask(ax, scene.image, data.numpy(), scene.object_masks[k])
    ax.set_title(title)
lim = np.abs(change).max()
shown = axes[2].imshow(change, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[2].contour(scene.object_masks[k], levels=[0.5], colors="k", linewidths=0.8)
axes[2].set_title("change of the logits (with - without)")
fig.colorbar(shown, ax=axes[2], fraction=0.046)
fig.suptitle("orange: the mask; cyan / black line: the clicked object; star: the click", fontsize=9)
for ax in axes:
    ax.plot(*click, "w*", markersize=12, markeredgecolor="k")
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout()

# %% [markdown]
# ## 3. The IoU head's sigmoid
#
# SAM 2's `MLP` ends with a sigmoid when `sigmoid_output` is set, as it is for the IoU head
# (`iou_prediction_use_sigmoid`): the predicted IoUs lie in 0..1. The toy SAM 2's head was trained
# through the sigmoid, against the actual IoU of each of the M = 4 masks by an L1 loss, as SAM 2.1's.

# %%
print(inspect.getsource(s2.MLP.forward))
head = copy.deepcopy(dec2.iou_prediction_head)
head.sigmoid_output = False
iou_token_out = t2.find("hook_iou_token_out")[0].tensor  # B x C
with torch.no_grad():
    torch.testing.assert_close(torch.sigmoid(head(iou_token_out)), t2.find("hook_iou_pred")[0].tensor)
assert bool(((iou2 > 0) & (iou2 < 1)).all())
actual = [mask_iou(m > 0, scene.object_masks[k]) for m in masks2[0].cpu().numpy()]
print("predicted IoU (multimask outputs):", [round(v, 3) for v in iou2[0].tolist()])
print("actual IoU with the clicked object: ", [round(v, 3) for v in actual])

# %% [markdown]
# ## 4. The attention: fused in SAM 2, written out here
#
# The official SAM 2 `Attention` calls `F.scaled_dot_product_attention(q, k, v)`: one fused kernel
# that returns the values read and never the probabilities. sam-explain keeps SAM's `Attention`,
# which writes the softmax out, so that its hook points show the seven attention maps. Same result:

# %%
se.show_source(s2.Attention.forward, ("d = q.shape[-1]", "out = probs @ v"))

# %%
site = "transformer.layers.0.cross_attn_token_to_image"
q, k_, v = (t2.find(f"{site}.hook_{n}")[0].tensor for n in "qkv")  # B x h x n x d
fused = F.scaled_dot_product_attention(q, k_, v)  # what the official code computes
torch.testing.assert_close(fused, t2.find(f"{site}.hook_out")[0].tensor)
print(f"{site}: probabilities {tuple(t2.find(site + '.hook_probs')[0].output_shape)} (B x h x T x HW), "
      f"the fused call agrees")

# %% [markdown]
# And the block MLP: the same C -> 2048 -> C with a ReLU, but SAM 2's `MLP` class, so its keys are
# `mlp.layers.0` / `mlp.layers.1` where SAM's are `mlp.lin1` / `mlp.lin2` (the toy SAM 2 started
# from the toy SAM's weights, moved over under the new names):

# %%
print("SAM:  ", [key for key in dec1.state_dict() if key.startswith("transformer.layers.0.mlp.")])
print("SAM 2:", [key for key in dec2.state_dict() if key.startswith("transformer.layers.0.mlp.")])
assert dec2.transformer.layers[0].mlp.layers[0].weight.shape == dec1.transformer.layers[0].mlp.lin1.weight.shape

# %% [markdown]
# `repeat_image` says how images and prompt sets pair: `True` repeats one image over the B prompt
# sets (SAM 2's image predictor with several prompt sets), `False` takes image b for prompt set b
# (the video path). A mismatch is refused before anything runs:

# %%
three = Prompts(points=(torch.tensor([[click]] * 3, dtype=torch.float32), torch.tensor([[1]] * 3))).to(device)
with torch.no_grad():
    sparse3, dense3 = pe2(points=three.points, boxes=None, masks=None)  # B = 3
    m3 = dec2(emb2, pe2.get_dense_pe(), sparse3, dense3, multimask_output=True, repeat_image=True,
              high_res_features=feats)[0]
    torch.testing.assert_close(m3[0], m3[2])  # the same image and prompt, three times
    try:
        dec2(emb2, pe2.get_dense_pe(), sparse3, dense3, multimask_output=True, repeat_image=False,
             high_res_features=feats)
        raise AssertionError("not refused")
    except se.ShapeError as err:
        print("ShapeError:", err)

# %% [markdown]
# ## 5. The stability switch
#
# Asked for one mask (`multimask_output=False`), SAM returns mask token 0's mask. SAM 2, outside training
# and with `dynamic_multimask_via_stability`, first asks whether token 0's mask is *stable*: does
# it change when the threshold moves from 0 to +-delta? Its stability score is
#
#     area(logits > delta) / area(logits > -delta),     delta = 0.05
#
# (1 when no pixel is above -delta). Below 0.98, the decoder returns instead the multimask output
# (tokens 1..3) with the highest predicted IoU. The rule, on constructed logits:

# %%
se.show_source(s2.MaskDecoder._get_stability_scores, ("mask_logits = rearrange", "return torch.where"))

# %%
yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
disc = 0.5 - (xx ** 2 + yy ** 2).sqrt()  # > 0 inside a disc of radius 0.5
constructed = {
    "crisp (steep edge)": 40.0 * disc,
    "soft (wide edge)": 0.5 * disc,
    "nearly flat": 0.01 * disc,
}
logits = torch.stack(list(constructed.values()))[:, None]  # 3 x 1 x 64 x 64
scores = dec2._get_stability_scores(logits)[:, 0]  # 3
for (name, l), s in zip(constructed.items(), scores.tolist()):
    by_hand = (l > 0.05).sum().item() / (l > -0.05).sum().item()
    assert abs(by_hand - s) < 1e-6
    print(f"{name:20s} stability {s:.3f}  -> {'token 0 kept' if s >= 0.98 else 'best multimask output'}")
assert scores[0] >= 0.98 > scores[1] > scores[2]

# %% [markdown]
# The switch itself, on three constructed prompt sets whose token 0 is crisp, soft and flat, with
# multimask IoUs that make token 2 the best:

# %%
se.show_source(s2.MaskDecoder._dynamic_multimask_via_stability, ("# token 0's mask", "iou_scores_out = torch.where"))

# %%
all_logits = torch.cat([logits, torch.randn(3, 3, 64, 64)], dim=1)  # B x M x 4H x 4W: token 0 + 3 multimask
all_iou = torch.tensor([[0.9, 0.2, 0.8, 0.5]] * 3)  # B x M
chosen, chosen_iou = dec2._dynamic_multimask_via_stability(all_logits, all_iou)
assert torch.equal(chosen[0, 0], all_logits[0, 0])  # crisp: token 0
assert torch.equal(chosen[1, 0], all_logits[1, 2]) and torch.equal(chosen[2, 0], all_logits[2, 2])  # else token 2
print("returned IoU:", [round(v, 3) for v in chosen_iou[:, 0].tolist()])

# %% [markdown]
# On the click above, which branch does the decoder take? The hook point `hook_stability_scores`
# shows token 0's score:

# %%
with torch.no_grad(), se.trace_shapes(dec2, keep_tensors=True) as t_single:
    single, single_iou, single_token, _ = dec2(emb2, pe2.get_dense_pe(), sparse2, dense2, multimask_output=False,
                                               repeat_image=True, high_res_features=feats)
score = t_single.find("hook_stability_scores")[0].tensor.item()
all_masks = t_single.find("hook_masks")[0].tensor  # B x M x 4H x 4W
all_ious = t_single.find("hook_iou_pred")[0].tensor  # B x M
kept = score >= dec2.dynamic_multimask_stability_thresh
want = 0 if kept else 1 + int(all_ious[0, 1:].argmax())
assert torch.equal(single[0, 0], all_masks[0, want])
assert torch.equal(single_token, t_single.find("hook_mask_tokens_out")[0].tensor[:, :1])  # token 0 all the same
print(f"stability of token 0: {score:.4f} -> returned token {want}; sam_tokens_out is token 0 either way")

# %% [markdown]
# And on real clicks? The same clicks as above, plus one on every nested part of the five scenes,
# asked for one mask: how often does the switch replace token 0, and is its answer better?

# %%
switched = []  # (seed, target, click, token 0's IoU, the returned mask's IoU, returned token)
count = 0
for seed in SCENES:
    sc, e, f = scene_features(seed)
    for target in [*sc.object_masks, *sc.part_masks[sc.has_part]]:
        c = click_inside(target)
        p = Prompts(points=(torch.tensor([[c]], dtype=torch.float32), torch.tensor([[1]]))).to(device)
        with torch.no_grad(), se.trace_shapes(dec2, keep_tensors=True) as t_click:
            single = s2.run_sam2_decoder(pe2, dec2, e, p, multimask_output=False, high_res_features=f)[0][0, 0].cpu()
        all_masks = t_click.find("hook_masks")[0].tensor[0].cpu()  # M x 4H x 4W
        count += 1
        if not torch.equal(single, all_masks[0]):
            token = next(j for j in range(1, 4) if torch.equal(single, all_masks[j]))
            switched.append((seed, target, c, mask_iou(all_masks[0].numpy() > 0, target), mask_iou(single.numpy() > 0, target), token))
print(f"the switch replaced token 0 on {len(switched)} of {count} clicks")
for seed, _, c, before, after, token in switched:
    print(f"  scene {seed}, click {tuple(round(v) for v in c)}: token 0 IoU {before:.2f} -> token {token} IoU {after:.2f}")
gains = np.array([after - before for *_, before, after, _ in switched])
print(f"better on {(gains > 0).sum()}, worse on {(gains < 0).sum()}; held out: the switch replaced token 0 on "
      f"{figures['switch_fraction']:.0%} of {figures['prompts']} clicks, mean IoU there {figures['switched_token0_miou']:.2f} "
      f"(token 0) -> {figures['switched_output_miou']:.2f} (the switch's answer)")
assert switched and (gains > 0).any() and (gains < 0).any()

# %% [markdown]
# In this toy the switch is a mixed blessing: where token 0 is unstable, the multimask output with the
# best *predicted* IoU is sometimes the better mask and often not, since the toy's IoU head ranks its
# masks only roughly. The switch where it helped most:

# %%
seed, target, c, before, after, token = max(switched, key=lambda row: row[4] - row[3])
sc, e, f = scene_features(seed)
m = click_masks(e, f, c)  # M x 4H x 4W
stability = dec2._get_stability_scores(m[None, :1])[0, 0].item()  # token 0's, as the switch computed it
fig, axes = plt.subplots(1, 2, figsize=(7.5, 4))
for ax, j, title in ((axes[0], 0, f"token 0, stability {stability:.2f} < 0.98: IoU {before:.2f}"),
                     (axes[1], token, f"returned instead: token {token}, IoU {after:.2f}")):
    draw_mask(ax, sc.image, (m[j] > 0).numpy(), target)
    ax.plot(*c, "w*", markersize=12, markeredgecolor="k")
    ax.set_title(title, fontsize=9), ax.set_xticks([]), ax.set_yticks([])
fig.suptitle("orange: the mask; cyan line: the clicked target; star: the click", fontsize=9)
plt.tight_layout()


# %% [markdown]
# ## 6. A box goes in as two points
#
# SAM's prompt encoder embeds a box (`boxes=`) as two corner tokens. SAM 2's still can, but SAM 2's
# image predictor never uses that path: it passes the corners as two *points* labelled 2 and 3,
# before the clicks, with `boxes=None`, and so the prompt encoder appends its padding token as for
# any points. One box: N' = 3 (two corners and the padding point) where SAM has 2.

# %%
box = torch.tensor([[60.0, 50.0, 200.0, 190.0]], device=device)
as_points = s2.boxes_as_points(Prompts(boxes=box))
print("labels:", as_points.points[1].tolist(), " names:", s2.sam2_token_names(Prompts(boxes=box), dec2)[0])
with torch.no_grad():
    via_points, _ = pe2(points=as_points.points, boxes=None, masks=None)  # B x 3 x C
    via_boxes, _ = pe2(points=None, boxes=box, masks=None)  # B x 2 x C
print("as points:", tuple(via_points.shape), " as a box:", tuple(via_boxes.shape))
torch.testing.assert_close(via_points[:, :2], via_boxes)  # the same two corner tokens
torch.testing.assert_close(via_points[0, 2], pe2.not_a_point_embed.weight[0])  # + the padding token
with torch.no_grad():
    m_points = s2.run_sam2_decoder(pe2, dec2, emb2, Prompts(boxes=box), high_res_features=feats)[0]
    m_box = s2.run_sam2_decoder(pe2, dec2, emb2, Prompts(boxes=box), high_res_features=feats, box_as_points=False)[0]
print(f"the padding token changes the masks: max |difference| = {(m_points - m_box).abs().max().item():.3f}")
assert (m_points - m_box).abs().max() > 0

# %% [markdown]
# ## The seven attention maps, with the object-score token
#
# `capture_sam2_attention` records SAM 2's maps with the token names; the object-score token is
# token 0. Two prompt sets: the click on the object from above, and a click on the background.

# %%
background_click = click_inside(~scene.object_masks.any(0))  # (x, y) where no object is
two = Prompts(points=(torch.tensor([[click], [background_click]], dtype=torch.float32),
                      torch.tensor([[1], [1]]))).to(device)  # B = 2 prompt sets
rec = s2.capture_sam2_attention(pe2, dec2, emb2, two, high_res_features=feats)
print(rec)
print(rec.token_names[0])
assert rec.token_names[0][:2] == ["obj_score", "iou"] and rec.num_tokens == 8
assert rec["transformer.final_attn_token_to_image"].shape == (2, 8, 8, 4096)
two_scores = s2.run_sam2_decoder(pe2, dec2, emb2, two, high_res_features=feats)[3][:, 0]  # B
print(f"object score: click on the object {two_scores[0]:+.2f}, on the background {two_scores[1]:+.2f}")
assert two_scores[0] > 0 > two_scores[1]

# %% [markdown]
# Where does the object-score token look, for the click on the object (first figure) and for the
# one on the background (second, a click in the top right corner)? Mean of the heads, the three
# token-to-image attentions; the green dot is the click. Each figure has its own colour limit
# (printed on it): the background click's maps are weaker and more spread.

# %%
se.plot_token_to_image(rec, "obj_score", prompt_set=0, heads="mean", image=scene.image, outline=0.5)

# %%
se.plot_token_to_image(rec, "obj_score", prompt_set=1, heads="mean", image=scene.image, outline=0.5)

# %% [markdown]
# On the object, from layer 1 on, the token reads a patch around the click; on the background it
# reads more widely. Counted: the fewest cells of the 64 x 64 grid that hold
# half of its final attention (mean of the heads), here and for the largest object and the deepest
# background point of the five scenes above:

# %%
def half_mass_cells(record) -> list:
    """Per prompt set: the fewest cells holding half of obj_score's final token-to-image attention (mean of heads)."""
    final = record["transformer.final_attn_token_to_image"][:, :, 0].mean(1)  # B x HW
    return [int((p.sort(descending=True).values.cumsum(0) < 0.5).sum()) + 1 for p in final]


cells = {11: half_mass_cells(rec)}
for seed in SCENES:
    sc, e, f = scene_features(seed)
    largest = sc.object_masks[int(np.argmax(sc.object_masks.sum(axis=(1, 2))))]
    pair = Prompts(points=(torch.tensor([[click_inside(largest)], [click_inside(~sc.object_masks.any(0))]],
                                        dtype=torch.float32), torch.tensor([[1], [1]]))).to(device)
    cells[seed] = half_mass_cells(s2.capture_sam2_attention(pe2, dec2, e, pair, high_res_features=f))
for seed, (on_object, on_background) in cells.items():
    print(f"scene {seed:2d}: cells holding half of the attention: click on the object {on_object:3d}, "
          f"on the background {on_background:3d} (of 4096)")
assert all(on_object < on_background for on_object, on_background in cells.values())

# %% [markdown]
# ## What surprises users
#
# Read in the official package's source (sam2 1.1.0):
#
# **The image predictor throws the object score away.** `SAM2ImagePredictor` unpacks the decoder's
# four outputs as `low_res_masks, iou_predictions, _, _`: a photo's masks never depend on the object
# score. Only the video path, `SAM2Base._forward_sam_heads`, uses it: where the logit is not
# positive, every mask logit is set to `NO_OBJ_SCORE` = -1024.

# %%
spec = importlib.util.find_spec("sam2")
if spec is None:
    raise ModuleNotFoundError("this section reads the official code: pip install --no-deps sam2==1.1.0")
root = pathlib.Path(list(spec.submodule_search_locations)[0])
predictor_src = (root / "sam2_image_predictor.py").read_text()
base_src = (root / "modeling" / "sam2_base.py").read_text()
for needle, text in (("low_res_masks, iou_predictions, _, _ = self.model.sam_mask_decoder(", predictor_src),
                     ("NO_OBJ_SCORE = -1024.0", base_src),
                     ("is_obj_appearing = object_score_logits > 0", base_src)):
    assert needle in text, needle
    print("found:", needle)
start = base_src.index("if self.pred_obj_scores:\n            is_obj_appearing")
end = base_src.index("NO_OBJ_SCORE,", start)
print(base_src[start:end] + "NO_OBJ_SCORE,\n            )")
# the same rule on the toy SAM 2's two clicks from the attention section
with torch.no_grad():
    two_masks, _, _, two_scores = s2.run_sam2_decoder(pe2, dec2, emb2, two, high_res_features=feats)[:4]
video_masks = torch.where(two_scores[:, :, None, None] > 0, two_masks, torch.full_like(two_masks, -1024.0))
assert torch.equal(video_masks[0], two_masks[0])  # on the object: kept
assert bool((video_masks[1] == -1024.0).all())  # on the background: every logit -1024, no mask
for name, sc, vm in zip(("object", "background"), two_scores[:, 0].tolist(), video_masks):
    print(f"click on the {name}: object score {sc:+.2f} -> video path: "
          + ("masks kept" if sc > 0 else "masks set to -1024") + f", {int((vm[0] > 0).sum())} pixels in mask 1")

# %% [markdown]
# **The stability switch is not in the config files.** `build_sam2` turns it on through
# `hydra_overrides_extra` when `apply_postprocessing=True`, its default; the YAML configs never
# mention it. So a model built from a config by hand (or with `apply_postprocessing=False`) returns
# token 0's mask, and one from `build_sam2` may not. sam-explain's builders follow `build_sam2`.

# %%
build_src = (root / "build_sam.py").read_text()
post = build_src[build_src.index("if apply_postprocessing:"):build_src.index("# Read config and init model")]
print(post)
assert "dynamic_multimask_via_stability=true" in post
configs = sorted((root / "configs").rglob("*.yaml"))
assert configs and not any("dynamic_multimask" in c.read_text() for c in configs)
print(f"{len(configs)} config files, none mentions dynamic_multimask")
assert dec2.dynamic_multimask_via_stability and s2.build_sam2_mask_decoder().dynamic_multimask_via_stability

# %% [markdown]
# **The image predictor resizes to a square.** SAM resizes a photo's longest side to 1024 and pads
# the rest; SAM 2's transforms resize it to 1024 x 1024, whatever its aspect ratio. The two
# predictors therefore see different pixels and different image embeddings for the same photo: the
# side-by-side above is at the decoder's level, on one embedding.

# %%
transforms_src = (root / "utils" / "transforms.py").read_text()
assert "Resize((self.resolution, self.resolution))" in transforms_src
print([line.strip() for line in transforms_src.splitlines() if "Resize((" in line])

# %% [markdown]
# **Next**: [docs/sam2.md](../docs/sam2.md): loading SAM 2 / SAM 2.1 checkpoints, the Hugging Face
# names, what sam-explain's SAM 2 covers and what it does not.
