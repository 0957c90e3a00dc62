"""Per-click latency of the deployed decoder: PyTorch against onnxruntime, ours against the official.

    python benchmarks/bench_onnx.py --threads 2                   # B = 1 per click, and the decoders at B = 16
    python benchmarks/bench_onnx.py --threads 2 --default-malloc  # glibc's malloc as it comes
    python benchmarks/bench_onnx.py --threads 2 --compile         # also torch.compile (inductor, CPU) of ours

A click is what the exported graph does: one click and its padding point -> prompt encoder -> mask decoder
(all four masks) -> upscaled to an H0 x W0 photo (--size, default 600 x 900, a size the official file
crops correctly; see docs/onnx.md). Timed, same weights (random, seeded), same inputs:

  PyTorch     SamOnnxModel's forward, eager, ours and the official (segment-anything 1.0)
  onnxruntime our exported file and the official export (its script's call, restated), CPU provider,
              ``session.run`` on ready float32 arrays (without OnnxDecoder's input checks)
  B = 16      the MaskDecoder alone in PyTorch, ours and the official, 16 prompt sets of two clicks

By default the process first calls ``retain_freed_memory()`` (glibc: no mmap for large blocks, no
trimming of the heap), so that PyTorch reuses the memory it frees instead of faulting in fresh pages on
every call; on the 2-core development VM that made the PyTorch path several times faster at B = 1
(docs/onnx.md). onnxruntime keeps its own arena either way.

Each row is ``timing.compare``: interleaved pairs (an even number), milliseconds as geometric means,
and the ratio a / b as the geometric mean of the pair ratios. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from sam_explain import build_mask_decoder, build_prompt_encoder
from sam_explain.prompts import example_prompts
from sam_explain.testing import build_official_pair, official_onnx_export, official_onnx_model
from sam_explain.utils.memory import retain_freed_memory
from sam_explain.utils.onnx import SamOnnxModel, export_onnx_model, onnx_prompt
from timing import Comparison, compare

Row = Tuple[str, str, str, Comparison, int]  # (setting, a, b, comparison, prompt sets per call)
WARMUP = 5  # untimed pairs first: the first eager calls of a process are several times slower


def session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # without this, onnxruntime's idle threads spin after each run and slow whatever runs next (PyTorch)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def click_inputs(size: Tuple[int, int]) -> Dict[str, torch.Tensor]:
    """One click and its padding point on a 1 x 256 x 64 x 64 embedding, no mask input, an H0 x W0 photo."""
    coords, labels = onnx_prompt(np.array([[500.0, 300.0]]), np.array([1]))  # 1 x 2 x 2, 1 x 2
    return {
        "image_embeddings": torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0)),
        "point_coords": torch.from_numpy(coords), "point_labels": torch.from_numpy(labels),
        "mask_input": torch.zeros(1, 1, 256, 256), "has_mask_input": torch.zeros(1),
        "orig_im_size": torch.tensor([float(s) for s in size]),
    }


@torch.no_grad()
def click_rows(size: Tuple[int, int], threads: int, pairs: int, try_compile: bool) -> List[Row]:
    od, op = build_official_pair(seed=0)
    d, p = build_mask_decoder().eval(), build_prompt_encoder().eval()
    d.load_state_dict(od.state_dict())
    p.load_state_dict(op.state_dict())
    ours, official = SamOnnxModel.from_parts(p, d, return_single_mask=False).eval(), official_onnx_model(od, op)
    inputs = click_inputs(size)
    args = tuple(inputs.values())
    feeds = {name: t.numpy() for name, t in inputs.items()}
    with tempfile.TemporaryDirectory() as folder:
        export_onnx_model(p, d, Path(folder) / "ours.onnx")
        official_onnx_export(official, Path(folder) / "official.onnx")
        ours_ort, official_ort = session(Path(folder) / "ours.onnx", threads), session(Path(folder) / "official.onnx", threads)
    torch_ours, torch_official = (lambda: ours(*args)), (lambda: official(*args))
    ort_ours, ort_official = (lambda: ours_ort.run(None, feeds)), (lambda: official_ort.run(None, feeds))
    rows: List[Row] = [
        ("B=1 PyTorch", "ours", "official", compare(torch_ours, torch_official, pairs, WARMUP), 1),
        ("B=1 onnxruntime", "our file", "official file", compare(ort_ours, ort_official, pairs, WARMUP), 1),
        ("B=1 ORT vs PyTorch", "our file", "official PyTorch", compare(ort_ours, torch_official, pairs, WARMUP), 1),
    ]
    if try_compile:
        compiled = torch.compile(ours)
        compiled(*args)  # compiles here, untimed
        rows.append(("B=1 torch.compile", "compiled ours", "ours",
                     compare(lambda: compiled(*args), torch_ours, pairs, warmup=WARMUP), 1))
    return rows


@torch.no_grad()
def batch_rows(batch: int, pairs: int, try_compile: bool) -> List[Row]:
    od, op = build_official_pair(seed=0)
    d, p = build_mask_decoder().eval(), build_prompt_encoder().eval()
    d.load_state_dict(od.state_dict())
    p.load_state_dict(op.state_dict())
    prompts = example_prompts(points=2, batch=batch)
    sparse, dense = p(prompts.points, None, None)  # B x 3 x C, B x C x H x W
    args = (torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0)), p.get_dense_pe(),
            sparse, dense, True)
    rows: List[Row] = [(f"B={batch} PyTorch decoder", "ours", "official",
                        compare(lambda: d(*args), lambda: od(*args), pairs, warmup=WARMUP), batch)]
    if try_compile:
        compiled = torch.compile(d)
        compiled(*args)
        rows.append((f"B={batch} torch.compile", "compiled ours", "ours",
                     compare(lambda: compiled(*args), lambda: d(*args), pairs, warmup=WARMUP), batch))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads (default: torch's)")
    parser.add_argument("--pairs", type=int, default=40, help="timed pairs per B = 1 row, even (default 40)")
    parser.add_argument("--batch-pairs", type=int, default=10, help="timed pairs per B = 16 row, even (default 10)")
    parser.add_argument("--size", default="600,900", help="H0,W0 of the photo the masks are upscaled to")
    parser.add_argument("--batch", type=int, default=16, help="prompt sets for the decoder rows (default 16)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of ours (compiles first)")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc as it comes")
    args = parser.parse_args()
    retained = False if args.default_malloc else retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    size = tuple(int(v) for v in args.size.split(","))
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    malloc_text = "retain_freed_memory()" if retained else (malloc or "glibc default")
    print(f"Deployed decoder, per click on CPU: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{torch.get_num_threads()} threads, photo {size[0]} x {size[1]}, "
          f"malloc: {malloc_text}")
    print(f"{'setting':<22} {'a':<14} {'b':<17} {'a ms':>9} {'b ms':>9} {'a ms/prompt':>12} {'a / b':>7}")
    rows = click_rows(size, torch.get_num_threads(), args.pairs, args.compile) + \
        batch_rows(args.batch, args.batch_pairs, args.compile)
    for setting, a, b, c, batch in rows:
        print(f"{setting:<22} {a:<14} {b:<17} {c.a_ms:>9.2f} {c.b_ms:>9.2f} {c.a_ms / batch:>12.2f} {c.ratio:>7.3f}")


if __name__ == "__main__":
    main()
