"""Is the live explorer fast enough to feel live? Two ratios against a plain prompt-encoder + decoder
forward of the same prompt (``timing.compare``: interleaved pairs, an even number, geometric mean).

    python benchmarks/bench_explorer.py                # the toy model, 512 px (pixel ratio 1)
    python benchmarks/bench_explorer.py --ratio 2      # a display of pixel ratio 2: 1024 px

  click-to-picture  what a click on the image costs the kernel: ``explorer.reset()`` then
                    ``explorer.click(x, y)`` on the widget (prompt encoding, the decoder with every
                    attention map of every layer and head recorded, the render of the map, the masks
                    and the markers, the meta and bytes sent to the page). Target: at most 2x.
  control change    ``explorer.select(...)``, cycling through head, layer and kind changes: only the
                    render. Target: at most 0.5x.
  baseline          ``run_decoder`` (prompt encoder + decoder, no hooks) on the same one-point prompt.

The image embedding is computed once, when the explorer is built (as in the notebook). The trace
panel is not part of a click: it is computed when the learner opens it.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from sam_explain.prompts import run_decoder
from timing import compare

TARGETS = {"click-to-picture": 2.0, "control change": 0.5}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10, help="timed pairs per comparison (even)")
    parser.add_argument("--ratio", type=float, default=1.0, help="device pixel ratio to render for (1: 512 px)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sam_explain.explorer import ExplorerSession, live_explorer

    try:
        explorer = live_explorer(ratio=args.ratio)  # the widget, as in the notebook (no page attached)
        session = explorer.session
        what = "the widget (LiveExplorer)"
    except ImportError:  # without anywidget: the session, which does all the work but the sending
        explorer = session = ExplorerSession(ratio=args.ratio)
        what = "the session (anywidget is not installed)"
    backend = session.backend
    x, y, _ = session.points[0]  # the first click, deep inside the largest object
    prompts = session.prompts([(x, y, 1)], None)  # the same prompt in the input frame

    def plain() -> None:
        run_decoder(backend.prompt_encoder, backend.mask_decoder, backend.image_embeddings, prompts)

    def click() -> None:
        explorer.reset()
        explorer.click(x, y)

    changes = itertools.cycle([
        {"head": 3}, {"layer": 1}, {"kind": "image_to_token", "token": "point0"},
        {"kind": "token_to_image", "layer": "final", "head": "mean", "token": "mask1"},
    ])

    def control() -> None:
        explorer.select(**next(changes))

    h, w = session.picture.shape[:2]
    print(f"toy model, {what}, picture {h} x {w} (pixel ratio {session.geometry.ratio:g}), "
          f"torch threads {torch.get_num_threads()}, {args.pairs} pairs")
    print(f"{'':<18} {'ms':>8} {'plain forward ms':>17} {'ratio':>6} {'target':>7}")
    results = {"click-to-picture": compare(click, plain, pairs=args.pairs),
               "control change": compare(control, plain, pairs=args.pairs)}
    for name, c in results.items():
        verdict = "ok" if c.ratio <= TARGETS[name] else "OVER"
        print(f"{name:<18} {c.a_ms:>8.1f} {c.b_ms:>17.1f} {c.ratio:>6.2f} {'<= ' + format(TARGETS[name], 'g'):>7} {verdict}")


if __name__ == "__main__":
    main()
