"""The toy world: scenes, training, and the shipped weights."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from sam_explain.toy import generate_scenes, make_scene, mask_iou, toy_model
from sam_explain.toy.model import ToyModel, default_weights_path
from sam_explain.toy.losses import best_pair_loss
from sam_explain.toy.sampling import bounding_boxes, sample_prompts
from sam_explain.toy.schedules import SCHEDULES, TrainConfig
from sam_explain.toy.train import StepOps, encoder_config, train, train_step


@pytest.fixture(autouse=True)
def heap_calls(monkeypatch):
    """On CPU, train() asks glibc's malloc to keep freed memory, which is process-wide and cannot be
    undone; in the test process the call is only recorded."""
    calls = []
    monkeypatch.setattr("sam_explain.toy.train.retain_freed_memory", lambda: calls.append(True) or True)
    return calls


def test_scenes_have_documented_shapes_and_are_deterministic():
    a = generate_scenes(3, seed=5, image_size=64)
    b = generate_scenes(3, seed=5, image_size=64)
    c = generate_scenes(3, seed=6, image_size=64)
    assert a.images.shape == (3, 3, 64, 64) and a.images.dtype == torch.float32
    assert a.object_masks.shape == (3, 4, 64, 64) and a.object_masks.dtype == torch.bool
    assert a.targets.shape == (3, 8, 64, 64) and a.targets_valid.shape == (3, 8)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    assert 0 <= a.images.min() and a.images.max() <= 1
    # A part lies inside its object, and objects do not overlap (occlusion hides the one below).
    assert not (a.part_masks & ~a.object_masks).any()
    assert (a.object_masks.sum(1) <= 1).all()


def test_make_scene_gives_an_image_and_masks():
    scene = make_scene(3)
    assert scene.image.shape == (256, 256, 3) and scene.image.dtype == np.uint8
    k = scene.object_masks.shape[0]
    assert k >= 1 and scene.object_masks.shape[1:] == (256, 256)
    assert scene.part_masks.shape == (k, 256, 256) and scene.has_part.shape == (k,)
    assert np.array_equal(make_scene(3).image, scene.image)


def test_prompts_fall_inside_their_targets():
    scenes = generate_scenes(4, seed=1, image_size=64)
    gen = torch.Generator().manual_seed(0)
    prompts = sample_prompts(scenes, 5, gen)
    assert prompts.target.shape == (20, 64, 64) and prompts.point.shape == (20, 1, 2)
    x, y = prompts.point[:, 0, 0].long(), prompts.point[:, 0, 1].long()
    assert prompts.target[torch.arange(20), y, x].all()
    exact = bounding_boxes(prompts.target)  # B x 4
    assert (exact[:, :2] <= exact[:, 2:]).all()
    assert (prompts.box - exact).abs().max() <= 20.0 * 64 / 1024 * 6  # noise std capped at 1.25 px here


def test_whole_fraction_gives_part_clicks_the_whole_object():
    scenes = generate_scenes(8, seed=2, image_size=64)
    K = scenes.object_masks.shape[1]
    prompts = sample_prompts(scenes, 16, torch.Generator().manual_seed(0), whole_fraction=1.0)
    swapped = prompts.whole_for_part
    assert swapped.any() and prompts.is_point[swapped].all()
    parts = scenes.part_masks[prompts.scene, :]  # B x K x H0 x W0
    x, y = prompts.point[:, 0, 0].long(), prompts.point[:, 0, 1].long()
    b = torch.arange(len(x))
    for i in swapped.nonzero()[:, 0].tolist():
        k = next(k for k in range(K) if torch.equal(prompts.target[i], scenes.object_masks[prompts.scene[i], k]))
        assert parts[i, k, y[i], x[i]]  # the click is on the part, the target is its whole object
        assert prompts.target[i].sum() > parts[i, k].sum()
    assert prompts.target[b, y, x].all()
    assert not sample_prompts(scenes, 16, torch.Generator().manual_seed(0)).whole_for_part.any()


def test_both_fraction_marks_the_other_part_clicks_with_their_whole_object():
    scenes = generate_scenes(8, seed=2, image_size=64)
    K = scenes.object_masks.shape[1]
    plain = sample_prompts(scenes, 16, torch.Generator().manual_seed(0), whole_fraction=0.5)
    prompts = sample_prompts(scenes, 16, torch.Generator().manual_seed(0), whole_fraction=0.5, both_fraction=1.0)
    both = prompts.both_readings
    assert both.any() and not (both & prompts.whole_for_part).any() and prompts.is_point[both].all()
    assert torch.equal(prompts.target, plain.target) and torch.equal(prompts.whole_for_part, plain.whole_for_part)
    x, y = prompts.point[:, 0, 0].long(), prompts.point[:, 0, 1].long()
    for i in both.nonzero()[:, 0].tolist():
        k = next(k for k in range(K) if torch.equal(prompts.target[i], scenes.part_masks[prompts.scene[i], k]))
        assert torch.equal(prompts.whole[i], scenes.object_masks[prompts.scene[i], k])  # the part's own object
        assert prompts.whole[i, y[i], x[i]] and prompts.whole[i].sum() > prompts.target[i].sum()
    # every click on a nested part whose target stayed the part is marked, and nothing else
    on_part = torch.stack([(prompts.target[i] != prompts.whole[i]).any() for i in range(len(x))])
    assert torch.equal(both, on_part & prompts.is_point & ~prompts.whole_for_part)
    assert not plain.both_readings.any()


def test_best_pair_loss_puts_the_two_readings_on_different_outputs():
    loss_part = torch.tensor([[1.0, 5.0, 5.0], [4.0, 0.5, 9.0]])
    loss_whole = torch.tensor([[0.0, 9.0, 2.0], [3.0, 8.0, 1.0]])
    # row 0: the best output for each reading is output 0; apart, part on 0 and whole on 2 cost 1 + 2
    # row 1: part on 1, whole on 2
    assert torch.equal(best_pair_loss(loss_part, loss_whole), torch.tensor([3.0, 1.5]))


@pytest.mark.parametrize("recipe", [{}, {"amp": True, "whole_fraction": 0.5, "both_fraction": 1.0}],
                         ids=["float32", "bf16-both-readings"])
def test_training_a_few_dozen_steps_lowers_the_loss(one_thread, recipe, heap_calls):
    cfg = replace(SCHEDULES["tiny"], stages=((32, 30),), **recipe)
    _, history = train(cfg, out=None, progress=False)
    assert heap_calls == [True]  # on CPU, train() keeps freed memory by default (retain_memory)
    losses = history["loss"]
    assert len(losses) == 30
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:3]), losses


def test_iterative_clicks_only_in_the_stages_from_iterative_min_size(one_thread):
    """With iterative_min_size, a step at a smaller H0 has no second pass (no error-region click)."""
    cfg = replace(SCHEDULES["tiny"], stages=((32, 1), (64, 1)), encoder_dim=16, iterative_min_size=64)
    model = ToyModel(encoder_config=encoder_config(cfg)).train()
    gen = torch.Generator().manual_seed(0)
    at_32 = train_step(model, cfg, 0, gen)  # H0 = 32 < 64
    at_64 = train_step(model, cfg, 1, gen)  # H0 = 64
    assert "mask_iter" not in at_32 and "iou_iter" not in at_32, at_32
    assert np.isfinite(at_64["mask_iter"]) and np.isfinite(at_64["iou_iter"]), at_64


def test_context_branch_computes_the_same_features_at_every_image_size(one_thread, tmp_path):
    """With context_size = h0 the encoder's context branch sees the image resized to h0 x h0: a 256 px
    scene and its 64 px area average give it the same features, while the embedding keeps the
    H x W = H0/4 x W0/4 grid. A schedule with the branch writes weights that toy_model() loads back."""
    from sam_explain.toy.encoder import ToyImageEncoder

    torch.manual_seed(0)
    encoder = ToyImageEncoder(dim=16, dilations=(1, 2), context_size=64).eval()
    seen = []
    encoder.context_blocks.register_forward_hook(lambda module, args, out: seen.append(out))
    big = generate_scenes(2, seed=3, image_size=256).images  # S x 3 x 256 x 256
    small = torch.nn.functional.avg_pool2d(big, 4)  # S x 3 x 64 x 64
    with torch.no_grad():
        assert encoder(big).shape == (2, 256, 64, 64) and encoder(small).shape == (2, 256, 16, 16)
    assert seen[0].shape == seen[1].shape == (2, 16, 16, 16)
    torch.testing.assert_close(seen[0], seen[1], atol=1e-5, rtol=1e-5)

    cfg = replace(SCHEDULES["tiny"], stages=((32, 2),), encoder_dim=16, encoder_dilations=(1,), encoder_context_size=32)
    out = tmp_path / "context.safetensors"
    trained, _ = train(cfg, out=out, progress=False, checkpoint_every=0)
    loaded = toy_model(out)
    assert loaded.encoder_config == {"dim": 16, "dilations": (1,), "context_size": 32}
    assert len(loaded.image_encoder.blocks) == 1 and loaded.image_encoder.context_size == 32
    theirs = loaded.state_dict()
    assert theirs.keys() == trained.state_dict().keys()
    for key, value in trained.state_dict().items():  # the weights are written in float16
        torch.testing.assert_close(theirs[key], value.half().float(), atol=0, rtol=0)

    with pytest.raises(ValueError, match=r"context_size: expected 0 .* multiple of the patch \(4 px\), got 30"):
        ToyImageEncoder(context_size=30)


def test_pattern_matcher_switch_reaches_torch_compile(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: seen.append(kwargs) or fn)
    StepOps.for_model(ToyModel(), compile=True, pattern_matcher=False)
    assert len(seen) == 4 and all(kw["options"] == {"pattern_matcher": False} for kw in seen)
    seen.clear()
    StepOps.for_model(ToyModel(), compile=True)
    assert len(seen) == 4 and all(kw["options"] is None for kw in seen)


def test_compile_min_size_runs_smaller_stages_eager(monkeypatch, one_thread):
    """With compile on, stages below compile_min_size call the eager functions; the others the compiled ones."""
    calls = []

    def fake_compile(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(getattr(fn, "__name__", type(fn).__name__))
            return fn(*args, **kw)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = replace(SCHEDULES["tiny"], stages=((32, 3), (64, 2)), compile=True, compile_min_size=0)
    train(cfg, out=None, progress=False)
    per_step = len(calls) / 5  # every step compiled: the encoder, the decoder passes, the losses
    assert per_step >= 4 and per_step == int(per_step)
    calls.clear()
    train(replace(cfg, compile_min_size=64), out=None, progress=False)
    assert len(calls) == per_step * 2  # only the 2 steps at 64 px


def test_amp_min_size_runs_smaller_stages_in_float32(one_thread):
    """Under amp, a stage below amp_min_size runs its forward in float32; the others in bfloat16."""
    cfg = replace(SCHEDULES["tiny"], stages=((32, 1), (64, 1)), encoder_dim=16, amp=True, amp_min_size=64)
    model = ToyModel(encoder_config=encoder_config(cfg)).train()
    dtypes = []  # of the upscaled embedding of every decoder pass of a step
    model.mask_decoder.output_upscaling.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    gen = torch.Generator().manual_seed(0)

    def step_dtypes(cfg: TrainConfig, step: int) -> set:
        dtypes.clear()
        train_step(model, cfg, step, gen)
        return set(dtypes)

    assert step_dtypes(cfg, 0) == {torch.float32}  # H0 = 32
    assert step_dtypes(cfg, 1) == {torch.bfloat16}  # H0 = 64
    assert step_dtypes(replace(cfg, amp_min_size=0), 0) == {torch.bfloat16}


@pytest.mark.skipif(not default_weights_path().is_file(), reason="no shipped toy weights")
def test_shipped_weights_segment_held_out_scenes(one_thread):
    from sam_explain.toy.evaluate import evaluate

    model = toy_model()
    assert model.prompt_encoder.image_embedding_size == (64, 64)
    emb = model.embed(make_scene(0).image)
    assert emb.shape == (1, 256, 64, 64)
    masks, iou = model.predict(emb, points=[(100.0, 120.0)])
    assert masks.shape == (1, 3, 256, 256) and iou.shape == (1, 3)
    figures = evaluate(model, num_scenes=4)  # 22 prompts
    # The figures measured on 100 scenes are in docs/toy_model.md; a small sample, looser bounds.
    assert figures["click_best_of_3_miou"] >= THRESHOLDS["click_best_of_3_miou"], figures
    assert figures["click_single_mask_miou"] >= THRESHOLDS["click_single_mask_miou"], figures
    assert figures["box_miou"] >= THRESHOLDS["box_miou"], figures
    # The best of three splits into clicks for whole objects and for nested parts, weighted by their counts.
    n, n_parts = figures["prompts"], figures["nested_parts"]
    assert 0 < n_parts < n, figures
    split = (n - n_parts) * figures["click_best_of_3_miou_objects"] + n_parts * figures["click_best_of_3_miou_parts"]
    assert split == pytest.approx(n * figures["click_best_of_3_miou"], rel=1e-5), figures
    assert 0.0 < figures["nested_best_iou_whole"] <= 1.0, figures



@pytest.mark.skipif(not default_weights_path().is_file(), reason="no shipped toy weights")
def test_shipped_decoder_is_sams_architecture_at_sams_sizes(one_thread):
    """The trained prompt encoder and decoder load, strictly, into the official modules and agree."""
    from sam_explain.testing import build_official_pair

    model = toy_model()
    decoder, prompt_encoder = build_official_pair(input_image_size=(256, 256))
    decoder.load_state_dict(model.mask_decoder.state_dict(), strict=True)
    prompt_encoder.load_state_dict(model.prompt_encoder.state_dict(), strict=True)
    emb = model.embed(make_scene(1).image)
    points = (torch.tensor([[[90.0, 140.0]]]), torch.tensor([[1]]))
    sparse, dense = prompt_encoder(points=points, boxes=None, masks=None)
    with torch.no_grad():
        theirs, their_iou = decoder(emb, prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True)
    ours, our_iou = model.predict(emb, points=[(90.0, 140.0)])
    assert torch.allclose(ours, theirs, atol=1e-4) and torch.allclose(our_iou, their_iou, atol=1e-5)


# Below what the shipped weights measure on these 4 scenes (22 prompts: best of 3 0.82, single 0.71, box
# 0.93; docs/toy_model.md has 100 scenes), and far above what a model that ignores its prompt gets
# (about 0.05 best of 3, 0.0 box).
THRESHOLDS = {"click_best_of_3_miou": 0.70, "click_single_mask_miou": 0.60, "box_miou": 0.75}


def test_train_and_eval_commands_write_and_measure_weights(tmp_path, capsys, one_thread, heap_calls):
    """`sam-explain train-toy` writes loadable weights recording its configuration (the --compile,
    --amp, --pattern-matcher and --stages overrides included); `sam-explain eval-toy` measures them and can stamp the figures in."""
    import json

    from sam_explain.cli import main

    out = tmp_path / "tiny.safetensors"
    assert main(["train-toy", "--schedule", "tiny", "--out", str(out), "--no-compile", "--amp", "--seed", "3", "--no-pattern-matcher",
                 "--stages", "32:6,48:2",
                 "--no-retain-memory", "--checkpoint-every", "0", "--log", str(tmp_path / "train.log")]) == 0
    model = toy_model(out)
    config = json.loads(model.metadata["config"])
    assert model.metadata["schedule"] == "tiny" and model.metadata["steps_done"] == "8"
    assert config["compile"] is False and config["amp"] is True and config["seed"] == 3
    assert config["pattern_matcher"] is False and config["retain_memory"] is False and heap_calls == []
    assert config["stages"] == [[32, 6], [48, 2]]
    assert "step 7 " in (tmp_path / "train.log").read_text()
    # Trained on 32 and 48 px scenes, but the weights do not depend on the size: they load at SAM's grid.
    assert model.image_size == 256 and model.prompt_encoder.image_embedding_size == (64, 64)

    capsys.readouterr()
    assert main(["eval-toy", "--weights", str(out), "--scenes", "2", "--stamp"]) == 0
    report = capsys.readouterr().out
    assert "one click, best of the 3 multimask outputs" in report
    assert "for nested parts" in report and "against the whole object" in report
    figures = json.loads(toy_model(out).metadata["figures"])
    assert figures["scenes"] == 2 and 0.0 <= figures["click_best_of_3_miou"] <= 1.0


def test_stages_that_cannot_train_are_refused_with_the_expected_and_the_actual(capsys, heap_calls):
    """--stages and TrainConfig refuse what cannot train (a size off the 4-pixel patch grid, no steps, a
    decay stage that does not exist), naming what was expected and what was given; nothing is trained."""
    from sam_explain.cli import main
    from sam_explain.commands.toy import parse_stages

    assert parse_stages("64:1200, 256:800") == ((64, 1200), (256, 800))
    with pytest.raises(ValueError, match=r"multiple of 4 .* got H0 = 50"):
        TrainConfig(stages=((50, 10),))
    with pytest.raises(ValueError, match="at least 1 step per stage, got 0 at H0 = 64"):
        TrainConfig(stages=((64, 0),))
    with pytest.raises(ValueError, match=r"stage index in 0\.\.0 \(1 stages\), got 1"):
        replace(SCHEDULES["quick"], stages=((64, 10),), decay_from_stage=1)

    with pytest.raises(SystemExit):  # argparse: usage and the message, exit status 2
        main(["train-toy", "--schedule", "tiny", "--stages", "64-1200"])
    assert "expected H0:STEPS pairs separated by commas" in capsys.readouterr().err
    threads = torch.get_num_threads()
    with pytest.raises(SystemExit, match=r"train-toy: decay_from_stage: expected a stage index in 0\.\.0"):
        main(["train-toy", "--schedule", "quick", "--stages", "64:10", "--threads", str(threads + 1)])
    assert heap_calls == [] and torch.get_num_threads() == threads  # nothing ran, nothing changed


def test_phased_schedule_chains_its_phases_and_goes_on_where_it_stopped(tmp_path, monkeypatch, one_thread, heap_calls):
    """`train-toy --schedule tiny-phases` trains phase 2 from the weights phase 1 wrote, keeps each phase's
    weights, and writes the last phase's with the metadata of the whole run. Run again, it trains nothing
    finished, resumes a phase from its checkpoint, and starts over a phase trained with other options."""
    import json

    from sam_explain.cli import main
    from sam_explain.toy import train as train_module
    from safetensors.torch import load_file, save_file

    out = tmp_path / "toy.safetensors"
    command = ["train-toy", "--schedule", "tiny-phases", "--out", str(out), "--checkpoint-every", "0"]
    assert main(command) == 0
    phase1, phase2 = (tmp_path / f"toy.phase{i}.safetensors" for i in (1, 2))
    assert toy_model(phase2).metadata["init"] == str(phase1) and "init" not in toy_model(phase1).metadata
    model = toy_model(out)
    phases = json.loads(model.metadata["phases"])
    assert model.metadata["schedule"] == "tiny-phases" and model.metadata["steps_done"] == "80"
    assert [(p["schedule"], p["config"]["seed"]) for p in phases] == [("tiny", 0), ("tiny", 1)]
    assert float(model.metadata["train_seconds"]) == pytest.approx(sum(p["train_seconds"] for p in phases), abs=0.1)
    last = toy_model(phase2).state_dict()
    assert all(torch.equal(value, last[key]) for key, value in model.state_dict().items())
    assert not torch.equal(toy_model(phase1).state_dict()["mask_decoder.iou_token.weight"],
                           last["mask_decoder.iou_token.weight"])  # phase 2 trained on from phase 1

    calls = []
    monkeypatch.setattr(train_module, "train", lambda cfg, **kw: calls.append((cfg.seed, kw["resume"], kw["init"])))
    assert main(command) == 0 and calls == []  # both phases finished
    # A file written before a TrainConfig field existed was trained with its default: still finished.
    for path in (phase1, phase2):
        meta = toy_model(path).metadata
        config = {k: v for k, v in json.loads(meta["config"]).items() if k != "amp_min_size"}
        save_file(load_file(str(path)), str(path), metadata={**meta, "config": json.dumps(config)})
    assert main(command) == 0 and calls == []
    # Phase 2 stopped after 20 of its 40 steps: it resumes from its training state, from phase 1's weights.
    meta = toy_model(phase2).metadata
    save_file(load_file(str(phase2)), str(phase2), metadata={**meta, "steps_done": "20"})
    phase2.with_suffix(".state.pt").write_bytes(b"")
    assert main(command) == 0 and calls == [(1, phase2.with_suffix(".state.pt"), phase1)]
    # With another option (--amp), the weights on disk are not this run's: every phase trains from the start.
    calls.clear()
    save_file(load_file(str(phase2)), str(phase2), metadata=meta)
    assert main([*command, "--amp"]) == 0 and calls == [(0, None, None), (1, None, phase1)]
    # Phase 1 trains again (its file is another configuration's), so the finished phase 2 after it does too.
    calls.clear()
    meta1 = toy_model(phase1).metadata
    other = json.dumps({**json.loads(meta1["config"]), "seed": 99})
    save_file(load_file(str(phase1)), str(phase1), metadata={**meta1, "config": other})
    assert main(command) == 0 and calls == [(0, None, None), (1, None, phase1)]


def test_phased_schedule_refuses_what_its_phases_set_for_themselves(tmp_path, heap_calls):
    from sam_explain.cli import main

    out = tmp_path / "toy.safetensors"
    with pytest.raises(SystemExit, match=r"tiny-phases is a phased schedule .* expected none of --stages, --seed, "
                                         r"--resume, --init, got --seed, --init"):
        main(["train-toy", "--schedule", "tiny-phases", "--out", str(out), "--seed", "3", "--init", "w.safetensors"])
    assert heap_calls == [] and not list(tmp_path.iterdir())


def test_mask_iou_takes_numpy_and_tensors_and_is_zero_for_two_empty_masks():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b = np.zeros((4, 4), bool)
    b[:, :2] = True  # 8 pixels, 4 shared
    assert mask_iou(a, b) == 4 / 12 and mask_iou(torch.from_numpy(a), b) == 4 / 12 and mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((4, 4), bool), torch.zeros(4, 4, dtype=torch.bool)) == 0.0
