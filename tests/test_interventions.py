"""Interventions change exactly the tensor they name, for the run inside the block only; listings
come from the package's own source."""

import pytest
import torch

import sam_explain as se
from sam_explain.modeling.build import randomize_
from sam_explain.prompts import example_prompts, run_decoder


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    decoder = randomize_(se.build_mask_decoder(transformer_dim=32, num_heads=2, mlp_dim=64, iou_head_hidden_dim=32))
    pe = randomize_(se.build_prompt_encoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128)), 1)
    image = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    return pe.eval(), decoder.eval(), image


def hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def run(parts, prompts=None, **kw):
    pe, decoder, image = parts
    prompts = prompts or example_prompts(points=2, batch=2, image_size=(128, 128))
    return run_decoder(pe, decoder, image, prompts, **kw)


def test_zero_ablates_one_module_for_the_block_only(parts):
    _, decoder, _ = parts
    plain, _, _, _ = run(parts)
    before = hook_counts(decoder)
    path = "transformer.layers.0.cross_attn_image_to_token"
    with se.intervene(decoder, se.zero(path)), se.record_attention(decoder) as record, \
            se.trace_shapes(decoder, keep_tensors=True) as trace:
        ablated, _, _, _ = run(parts)
    assert not torch.allclose(plain, ablated)
    assert torch.equal(trace.find(path)[0].tensor, torch.zeros_like(trace.find(path)[0].tensor))
    assert len(record) == 7  # the record still sees the run
    assert hook_counts(decoder) == before
    torch.testing.assert_close(run(parts)[0], plain, atol=0, rtol=0)


def test_replace_with_a_cached_output_and_swap_and_drop(parts):
    pe, decoder, image = parts
    a = example_prompts(points=1, batch=1, image_size=(128, 128), seed=1)
    b = example_prompts(points=1, batch=1, image_size=(128, 128), seed=2)
    with se.intervene(decoder, cache=["hook_masks"]) as cached:
        masks_a, _, _, _ = run(parts, a)
    with se.intervene(decoder, se.replace("hook_masks", cached.cache["hook_masks"])):
        patched, _, _, _ = run(parts, b)
    torch.testing.assert_close(patched, masks_a, atol=0, rtol=0)  # b's run, with a's masks patched in

    plain, _, sparse, dense = run(parts, a)
    with se.intervene(decoder, se.drop_tokens(-1)):
        dropped, _, _, _ = run(parts, a)
    with torch.no_grad():
        by_hand, _ = decoder(image, pe.get_dense_pe(), sparse[:, :-1], dense, multimask_output=True)
    torch.testing.assert_close(dropped, by_hand, atol=0, rtol=0)  # the padding point, gone

    with se.intervene(decoder, se.swap_tokens(2, 3)):
        swapped, _, _, _ = run(parts, a)
    with se.intervene(decoder, se.swap_tokens(2, 3), se.swap_tokens(2, 3)):
        twice, _, _, _ = run(parts, a)
    assert not torch.allclose(swapped, plain)
    torch.testing.assert_close(twice, plain, atol=1e-6, rtol=0)


def test_bad_paths_and_failures_leave_no_hook(parts):
    _, decoder, _ = parts
    before = hook_counts(decoder)
    with pytest.raises(ValueError, match=r"no module at \['transformer.nothing'\]; the hook points are"):
        with se.intervene(decoder, se.zero("transformer.nothing")):
            pass
    with pytest.raises(ValueError, match="must have the shape of the old one"):
        with se.intervene(decoder, se.replace("hook_masks", torch.zeros(1))):
            run(parts)
    assert hook_counts(decoder) == before


def test_show_source_lists_the_package_code():
    listing = se.show_source(se.MaskDecoder.predict_masks, lines=("# The output tokens", "tokens = self.hook_tokens"),
                             highlight=["torch.cat"])
    assert listing.lines[0].startswith("# The output tokens") and listing.lines[-1].startswith("tokens = ")
    assert listing.highlight and all("torch.cat" in listing.lines[n - listing.first_line] for n in listing.highlight)
    text = open(listing.path).read().splitlines()
    assert text[listing.first_line - 1].strip() == listing.lines[0].strip()  # the numbers are the file's
    html = listing._repr_html_()
    assert "<pre" in html and "http" not in html  # inline styles, nothing fetched
    with pytest.raises(ValueError, match="no line of MaskDecoder.predict_masks contains 'nothing'"):
        se.show_source(se.MaskDecoder.predict_masks, lines=("nothing", "x"))
