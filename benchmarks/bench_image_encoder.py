"""Image encoder: ours against the official one, same random weights, full size, in one run.

    python benchmarks/bench_image_encoder.py                 # vit_b on CPU (and CUDA if present)
    python benchmarks/bench_image_encoder.py --model vit_l --pairs 4 --no-e2e

Prints, per device: the time of one 1 x 3 x 1024 x 1024 forward of each, the ratio ours / official
(``timing.compare``: --pairs interleaved pairs, geometric mean), and the largest difference
between the two image embeddings. Then (unless --no-e2e) writes the random weights as an
official-layout checkpoint file, loads it with ``build_sam(checkpoint=...)`` (strict), and
runs the predictor end to end next to the official predictor, printing the differences.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sam_explain.build_sam import SAM_CONFIGS, build_sam, load_state_dict_strict, make_sam  # noqa: E402
from sam_explain.predictor import SamPredictor  # noqa: E402
from sam_explain.testing import build_official_sam, official_predictor_module  # noqa: E402
from timing import compare  # noqa: E402


@torch.no_grad()
def bench_encoder(official, ours, device: torch.device, pairs: int, warmup: int) -> None:
    official_enc = official.image_encoder.to(device)
    ours_enc = ours.image_encoder.to(device)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0)).to(device)
    expected, got = official_enc(x), ours_enc(x)
    diff = (got - expected).abs().max().item()
    c = compare(lambda: ours_enc(x), lambda: official_enc(x), pairs=pairs, warmup=warmup - 1, device=device)
    print(f"[{device}] image encoder forward, 1 x 3 x 1024 x 1024 -> {tuple(got.shape)}")
    print(f"  ours      {c.a_ms:9.1f} ms   runs {[round(t * 1000, 1) for t in c.a]}")
    print(f"  official  {c.b_ms:9.1f} ms   runs {[round(t * 1000, 1) for t in c.b]}")
    print(f"  ratio ours / official (geometric mean of {pairs} pairs): {c.ratio:.3f}")
    print(f"  max |ours - official| of the embedding: {diff:.3e} (max |embedding| {expected.abs().max().item():.3f})")
    if device.type == "cuda":
        print(f"  peak CUDA memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    official.image_encoder.cpu(), ours.image_encoder.cpu()


def end_to_end(official, model_type: str) -> None:
    """Write an official-layout checkpoint, load it with build_sam, predict next to the official predictor."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"sam_{model_type}_random.pth")
        torch.save(official.state_dict(), path)
        size_mb = os.path.getsize(path) / 2**20
        start = time.perf_counter()
        sam = build_sam(checkpoint=path)
        load_s = time.perf_counter() - start
    print(f"end to end: wrote a random {model_type} checkpoint ({size_mb:.0f} MiB, official layout), "
          f"build_sam(checkpoint=...) loaded it strictly in {load_s:.1f} s")

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    ours_p, official_p = SamPredictor(sam), official_predictor_module().SamPredictor(official)
    start = time.perf_counter()
    ours_p.set_image(image)
    set_s = time.perf_counter() - start
    official_p.set_image(image)
    emb_diff = (ours_p.get_image_embedding() - official_p.get_image_embedding()).abs().max().item()
    prompts = dict(point_coords=np.array([[320.0, 240.0], [100.0, 400.0]]), point_labels=np.array([1, 0]),
                   box=np.array([50.0, 60.0, 500.0, 420.0]))
    worst = 0.0
    for multimask in (True, False):
        got = ours_p.predict(multimask_output=multimask, return_logits=True, **prompts)
        want = official_p.predict(multimask_output=multimask, return_logits=True, **prompts)
        assert all(g.shape == w.shape and g.dtype == w.dtype for g, w in zip(got, want))
        worst = max(worst, *(float(np.abs(g - w).max()) for g, w in zip(got, want)))
    print(f"  set_image (ours) {set_s:.1f} s; masks {got[0].shape}, iou {got[1].shape}, low-res {got[2].shape}")
    print(f"  max |ours - official|: image embedding {emb_diff:.3e}, masks/iou/low-res logits {worst:.3e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SAM_CONFIGS), default="vit_b")
    parser.add_argument("--pairs", type=int, default=2, help="timed pairs (even)")
    parser.add_argument("--warmup", type=int, default=1, help="forwards per model before timing (the parity one counts)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, then CUDA when available")
    parser.add_argument("--no-e2e", action="store_true", help="skip the checkpoint + predictor run")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    config = SAM_CONFIGS[args.model]
    official = build_official_sam(**config, seed=0)
    ours = make_sam(**config)
    load_state_dict_strict(ours, official.state_dict())
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    for name in devices:
        bench_encoder(official, ours, torch.device(name), args.pairs, args.warmup)
    if not args.no_e2e:
        end_to_end(official, args.model)


if __name__ == "__main__":
    main()
