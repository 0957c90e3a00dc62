"""The toy SAM 2: its encoder's levels, SAM 2's recipe (the object score, background clicks), the weights'
loader, and train-toy / eval-toy --model sam2."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sam_explain.toy import generate_scenes, make_scene, toy_model
from sam_explain.toy.model import default_weights_path
from sam_explain.toy.sam2_encoder import ToySam2ImageEncoder
from sam_explain.toy.sam2_evaluate import roc_auc
from sam_explain.toy.sam2_model import ToySam2Model, toy_sam2_from_toy_sam, toy_sam2_model
from sam_explain.toy.sam2_train import TOY_SAM2, sample_sam2_prompts, sam2_step_loss, train_sam2
from sam_explain.toy.losses import object_score_loss
from sam_explain.toy.sampling import sample_background, sample_in_masks
from sam_explain.toy.schedules import SAM2_SCHEDULES, Sam2TrainConfig
from sam_explain.toy.train import StepOps

needs_toy_weights = pytest.mark.skipif(not default_weights_path().is_file(), reason="no shipped toy SAM weights")


@pytest.fixture(autouse=True)
def heap_calls(monkeypatch):
    """train() asks glibc's malloc to keep freed memory (process-wide, irreversible): only recorded here."""
    calls = []
    monkeypatch.setattr("sam_explain.toy.train.retain_freed_memory", lambda: calls.append(True) or True)
    return calls


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The `tiny` schedule (32 px, 40 steps, from scratch), once: (weights file, loss history)."""
    import sam_explain.toy.train as train_module

    keep = train_module.retain_freed_memory
    train_module.retain_freed_memory = lambda: True
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("tiny_sam2") / "tiny.safetensors"
        _, history = train_sam2(SAM2_SCHEDULES["tiny"], out=out, progress=False, checkpoint_every=0,
                                schedule_name="tiny")
    finally:
        train_module.retain_freed_memory = keep
        torch.set_num_threads(before)
    return out, history


def test_encoder_gives_sam2s_three_levels_and_keeps_the_toy_sams_trunk(one_thread):
    torch.manual_seed(0)
    encoder = ToySam2ImageEncoder(dim=16, hr_dims=(8, 12)).eval()
    images = generate_scenes(2, seed=1, image_size=64).images  # S x 3 x 64 x 64
    with torch.no_grad():
        emb, s0, s1 = encoder(images)
        trunk = super(ToySam2ImageEncoder, encoder).forward(images)  # the toy SAM's encoder, same weights
    assert emb.shape == (2, 256, 16, 16) and s0.shape == (2, 256, 64, 64) and s1.shape == (2, 256, 32, 32)
    assert torch.equal(emb, trunk)
    assert s0.std() > 0 and s1.std() > 0

    # At the toy's size, through the model: the decoder's high_res_features have SAM 2.1's shapes.
    model = ToySam2Model().eval()
    emb, (feat_s0, feat_s1) = model.embed(make_scene(3).image)
    assert emb.shape == (1, 256, 64, 64) and feat_s0.shape == (1, 32, 256, 256) and feat_s1.shape == (1, 64, 128, 128)
    assert [t.shape for t in model.backbone(make_scene(3).image)] == [(1, 256, 64, 64), (1, 256, 256, 256),
                                                                      (1, 256, 128, 128)]
    masks, iou, score = model.predict(emb, [feat_s0, feat_s1], points=[(120.0, 80.0)])
    assert masks.shape == (1, 3, 256, 256) and iou.shape == (1, 3) and score.shape == (1, 1)
    assert ((iou >= 0) & (iou <= 1)).all()  # SAM 2's IoU head ends with a sigmoid
    masks, iou, score = model.predict(emb, [feat_s0, feat_s1], box=(40, 30, 150, 120), multimask_output=False)
    assert masks.shape == (1, 1, 256, 256) and iou.shape == (1, 1)

    with pytest.raises(ValueError, match=r"patch_size: expected 4 .* got 8"):
        ToySam2ImageEncoder(patch_size=8)
    with pytest.raises(ValueError, match=r"hr_dims: expected \(D0, D1\), two channel counts >= 1, got \(32, 0\)"):
        ToySam2ImageEncoder(hr_dims=(32, 0))


@needs_toy_weights
def test_starting_from_the_toy_sam_copies_its_weights_and_the_skips_start_at_zero(one_thread, tmp_path):
    toy = toy_model()
    model = toy_sam2_from_toy_sam(toy)
    ours = model.state_dict()
    for key, value in toy.image_encoder.state_dict().items():
        assert torch.equal(ours[f"image_encoder.{key}"], value), key
    for key, value in toy.prompt_encoder.state_dict().items():
        assert torch.equal(ours[f"prompt_encoder.{key}"], value), key
    for key, value in toy.mask_decoder.state_dict().items():  # SAM 2 renamed the block MLP's keys
        key2 = key.replace(".mlp.lin1.", ".mlp.layers.0.").replace(".mlp.lin2.", ".mlp.layers.1.")
        assert torch.equal(ours[f"mask_decoder.{key2}"], value), key
    for name in ("conv_s0", "conv_s1"):
        assert not ours[f"mask_decoder.{name}.weight"].any() and not ours[f"mask_decoder.{name}.bias"].any()
    assert ours["mask_decoder.obj_score_token.weight"].std() > 0
    # so the skips add nothing yet: the masks are those of zero high-resolution features
    model.eval()
    emb, feats = model.embed(make_scene(5).image)
    with_skips = model.predict(emb, feats, points=[(100.0, 120.0)])[0]
    without = model.predict(emb, [torch.zeros_like(f) for f in feats], points=[(100.0, 120.0)])[0]
    assert torch.equal(with_skips, without)

    # train() starts the gpu and cpu recipes from the shipped toy SAM, and records it
    assert TOY_SAM2.default_init(SAM2_SCHEDULES["gpu"]) == default_weights_path()
    assert TOY_SAM2.default_init(SAM2_SCHEDULES["tiny"]) is None
    out = tmp_path / "from_toy.safetensors"
    cfg = replace(SAM2_SCHEDULES["cpu"], stages=((32, 1),))
    train_sam2(cfg, out=out, progress=False, checkpoint_every=0)
    loaded = toy_sam2_model(out)
    assert loaded.metadata["init"] == str(default_weights_path()) and loaded.metadata["init_model"] == "toy SAM"
    assert loaded.metadata["model"] == "toy SAM 2"


def test_prompt_sets_click_the_background_and_give_boxes_as_the_recipe_says():
    scenes = generate_scenes(3, seed=4, image_size=64)
    cfg = Sam2TrainConfig(prompts_per_scene=6, background_per_scene=2, boxes_per_scene=1, whole_fraction=0.5)
    batch = sample_sam2_prompts(scenes, cfg, torch.Generator().manual_seed(0))
    p = batch.prompts
    assert (batch.object_clicks, batch.clicks, p.target.shape[0]) == (9, 15, 18)
    background = torch.arange(18) >= 9
    background &= torch.arange(18) < 15
    assert torch.equal(batch.has_object, ~background)
    assert torch.equal(p.is_point, torch.arange(18) < 15)
    assert torch.equal(torch.bincount(p.scene, minlength=3), torch.tensor([6, 6, 6]))
    x, y = p.point[:, 0, 0].long(), p.point[:, 0, 1].long()
    anything = scenes.object_masks.any(1)[p.scene, y, x]  # B: the click is on some object
    assert not anything[background].any() and not p.target[background].any()
    assert p.target[torch.arange(9), y[:9], x[:9]].all()  # the object clicks lie inside their targets
    assert not p.whole_for_part[9:].any() and not p.both_readings[9:].any()


def test_mask_and_iou_losses_do_not_apply_to_background_clicks(one_thread):
    """The masks of the prompt sets whose click is on the background get no gradient (as in SAM 2, where
    the mask, dice and IoU losses are multiplied by target_obj), those with an object do."""
    torch.manual_seed(0)
    cfg = replace(SAM2_SCHEDULES["tiny"], encoder_dim=16, hr_dims=(8, 8), iterative_fraction=0.0)
    model = TOY_SAM2.build(cfg).train()
    outs = []  # the masks of each decoder call, B x M x 4H x 4W, their gradient kept

    def keep(module, args, out):
        out.retain_grad()
        outs.append(out)

    handle = model.mask_decoder.hook_masks.register_forward_hook(keep)
    try:
        loss, stats = sam2_step_loss(model, cfg, 0, torch.Generator().manual_seed(0), StepOps.of(
            model.encode, model.mask_decoder.predict_masks))
        loss.backward()
    finally:
        handle.remove()
    assert len(outs) == 2  # the clicks, then the boxes (no second pass here)
    grad = outs[0].grad  # the clicks: S = 2 scenes x 2 object clicks, then 2 x 1 background clicks
    assert grad.shape[:2] == (6, 4)
    per_set = grad.flatten(1).abs().sum(1)  # B
    assert (per_set[:4] > 0).all() and (per_set[4:] == 0).all(), per_set
    assert stats["object"] > 0


def test_object_score_loss_separates_object_from_background_clicks(one_thread):
    """A hand-made batch: 4 scenes (32 px), two clicks on an object and two on the background each, a model
    from scratch. Training only the object-score loss (30 steps) moves the decoder's score from no separation
    to a clean one, in the direction of the labels (the video path's reading: > 0 where an object is)."""
    torch.manual_seed(0)
    model = ToySam2Model(encoder_config={"dim": 16, "hr_dims": (8, 8)})
    model.set_image_size(32)
    scenes = generate_scenes(4, seed=7, image_size=32)
    scene = torch.arange(4).repeat_interleave(2)  # 8
    gen = torch.Generator().manual_seed(1)
    on_object = sample_in_masks(scenes.object_masks[scene, 0], gen)  # 8 x 2: object slot 0 is always present
    on_background = sample_background(scenes, scene, gen)  # 8 x 2
    coords = torch.cat([on_object, on_background])[:, None]  # 16 x 1 x 2
    scene, has_object = torch.cat([scene, scene]), torch.arange(16) < 8
    labels = torch.ones(16, 1, dtype=torch.int64)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def scores() -> torch.Tensor:
        emb, feat_s0, feat_s1 = model.encode(scenes.images)  # 4 x C x 8 x 8, 4 x C/8 x 32 x 32, 4 x C/4 x 16 x 16
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        out = model.mask_decoder(emb[scene], model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True,
                                 repeat_image=False, high_res_features=[feat_s0[scene], feat_s1[scene]])
        return out[3]  # 16 x 1 object-score logits

    with torch.no_grad():
        first = scores()
    before = object_score_loss(first, has_object).mean().item()
    for _ in range(30):
        opt.zero_grad()
        object_score_loss(scores(), has_object).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as train() does
        opt.step()
    with torch.no_grad():
        last = scores()[:, 0]
    after = object_score_loss(last[:, None], has_object).mean().item()
    assert after < 0.2 * before, (before, after)
    assert roc_auc(last[has_object], last[~has_object]) == 1.0
    assert (last[has_object] > 0).all() and (last[~has_object] <= 0).all(), last
    assert roc_auc(first[has_object, 0], first[~has_object, 0]) < 0.9  # not separated to begin with


def test_roc_auc_is_the_chance_that_a_positive_outscores_a_negative():
    assert roc_auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert roc_auc(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0])) == 0.375  # pairs: 0, 0, 1 and a tie, 0.5
    assert np.isnan(roc_auc(torch.tensor([1.0]), torch.empty(0)))


def test_tiny_schedule_lowers_the_losses(tiny_run):
    """40 steps at 32 px from scratch: the total, mask and IoU losses fall with a clear margin."""
    _, history = tiny_run
    assert len(history["loss"]) == 40
    for name, factor in (("loss", 0.6), ("mask", 0.6), ("iou_l1", 0.3)):
        values = history[name]
        assert np.mean(values[-8:]) < factor * np.mean(values[:3]), (name, values)
    assert np.mean(history["object"][-8:]) < np.mean(history["object"][:3]), history["object"]


def test_loader_names_the_train_command_when_there_are_no_weights(tmp_path, monkeypatch):
    missing = tmp_path / "none.safetensors"
    with pytest.raises(FileNotFoundError, match=r"toy SAM 2 weights not found at .*none\.safetensors; train them "
                                                r"with `sam-explain train-toy --model sam2"):
        toy_sam2_model(missing)
    monkeypatch.setattr("sam_explain.toy.sam2_model.default_sam2_weights_path", lambda: missing)
    with pytest.raises(FileNotFoundError, match=r"--schedule gpu --device cuda on one GPU"):
        toy_sam2_model()


@needs_toy_weights
def test_loader_refuses_a_toy_sam_file_saying_what_it_is():
    from sam_explain.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"toy_sam\.safetensors holds a toy SAM's weights .* expected a toy "
                                              r"SAM 2's; load it with sam_explain\.toy_model\(\), or train"):
        toy_sam2_model(default_weights_path())


def test_weights_round_trip_and_eval_toy_measures_them(tiny_run, capsys, one_thread):
    """The tiny run's file loads with toy_sam2_model (float16 on disk); `eval-toy --model sam2` prints SAM 2's
    figures, writes them as JSON and stamps them into the file."""
    from sam_explain.cli import main

    out, _ = tiny_run
    model = toy_sam2_model(out)
    assert model.image_size == 256 and model.prompt_encoder.image_embedding_size == (64, 64)
    assert model.metadata["schedule"] == "tiny" and model.metadata["steps_done"] == "40"
    assert json.loads(model.metadata["encoder_config"]) == {"dim": 96, "hr_dims": [32, 64]}
    assert not model.training and model.mask_decoder.dynamic_multimask_via_stability

    figures_path = out.with_suffix(".json")
    capsys.readouterr()
    assert main(["eval-toy", "--model", "sam2", "--weights", str(out), "--scenes", "2", "--json", str(figures_path),
                 "--stamp"]) == 0
    report = capsys.readouterr().out
    assert "object score, object vs background clicks: ROC AUC" in report and "stability switch" in report
    figures = json.loads(figures_path.read_text())
    assert figures["scenes"] == 2 and figures["background_clicks"] == 4 and figures["prompts"] >= 2
    for name in ("click_best_of_3_miou", "click_single_output_miou", "box_miou", "object_score_auc",
                 "switch_fraction", "click_best_of_3_miou_no_skips"):
        assert 0.0 <= figures[name] <= 1.0, (name, figures)
    assert json.loads(toy_sam2_model(out).metadata["figures"]) == figures


def test_train_toy_model_sam2_writes_what_it_trained(tmp_path, capsys, heap_calls, one_thread):
    from sam_explain.cli import main

    out = tmp_path / "cli.safetensors"
    assert main(["train-toy", "--model", "sam2", "--schedule", "tiny", "--stages", "32:2", "--seed", "3",
                 "--out", str(out), "--checkpoint-every", "0", "--no-retain-memory", "--log", str(tmp_path / "log")]) == 0
    assert "toy SAM 2, schedule tiny, 2 steps" in capsys.readouterr().out
    model = toy_sam2_model(out)
    config = json.loads(model.metadata["config"])
    assert model.metadata["model"] == "toy SAM 2" and model.metadata["schedule"] == "tiny"
    assert config["stages"] == [[32, 2]] and config["seed"] == 3 and config["retain_memory"] is False
    assert config["background_per_scene"] == 1 and config["boxes_per_scene"] == 1 and heap_calls == []
    assert "step 1 " in (tmp_path / "log").read_text()


def test_model_and_schedule_must_agree_and_bad_recipes_are_refused(tmp_path, heap_calls):
    from sam_explain.cli import main

    out = tmp_path / "x.safetensors"
    with pytest.raises(SystemExit, match=r"train-toy: --schedule quick is a schedule of --model sam; the schedules "
                                         r"of --model sam2 are gpu, cpu, tiny"):
        main(["train-toy", "--model", "sam2", "--schedule", "quick", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"--schedule gpu is a schedule of --model sam2; the schedules of --model sam "
                                         r"are quick, cpu"):
        main(["train-toy", "--schedule", "gpu", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"--init nowhere\.safetensors: no such file"):
        main(["train-toy", "--model", "sam2", "--init", "nowhere.safetensors", "--out", str(out)])
    with pytest.raises(ValueError, match=r"room for at least one object click .* got P = 4, 1 background click\(s\), "
                                         r"3 box\(es\)"):
        Sam2TrainConfig(prompts_per_scene=4, background_per_scene=1, boxes_per_scene=3)
    with pytest.raises(TypeError, match="expected a Sam2TrainConfig, got TrainConfig"):
        from sam_explain.toy.schedules import TrainConfig

        train_sam2(TrainConfig())
    assert heap_calls == [] and not list(tmp_path.iterdir())
