"""The one way the benchmarks time two things against each other.

``compare(a, b, pairs)`` runs a and b in pairs, alternating which goes first (a b, b a, a b, ...), and
returns the geometric mean of the per-pair ratios a / b. On these machines the second run of a pair
is measurably warmer, so the number of pairs must be even (each side goes first as often as second)
and the ratios are combined by their geometric mean, not by a median of an odd count.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch


def sync(device: Optional[torch.device | str] = None) -> None:
    """Wait for the GPU's queued work, so that the clock measures it (nothing on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: Optional[torch.device | str] = None) -> float:
    """Wall-clock seconds of one call of ``fn`` (the GPU's work included)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


@dataclass
class Comparison:
    """a against b: seconds per run of each, and the pair ratios a / b."""

    a: List[float]
    b: List[float]

    @property
    def ratios(self) -> List[float]:
        return [x / y for x, y in zip(self.a, self.b)]

    @property
    def ratio(self) -> float:
        """The geometric mean of the pair ratios a / b."""
        return math.exp(sum(math.log(r) for r in self.ratios) / len(self.ratios))

    @property
    def a_ms(self) -> float:
        """The geometric mean of a's times, in ms."""
        return 1e3 * math.exp(sum(math.log(t) for t in self.a) / len(self.a))

    @property
    def b_ms(self) -> float:
        return 1e3 * math.exp(sum(math.log(t) for t in self.b) / len(self.b))


def compare(a: Callable[[], object], b: Callable[[], object], pairs: int = 10, warmup: int = 2,
            device: Optional[torch.device | str] = None) -> Comparison:
    """Time ``a`` against ``b`` in ``pairs`` interleaved pairs (an even number), after ``warmup`` pairs."""
    if pairs < 2 or pairs % 2:
        raise ValueError(f"pairs must be even and at least 2 (each side first as often as second), got {pairs}")
    for _ in range(warmup):
        a(), b()
    ta, tb = [], []
    for i in range(pairs):
        if i % 2 == 0:
            ta.append(seconds(a, device))
            tb.append(seconds(b, device))
        else:
            tb.append(seconds(b, device))
            ta.append(seconds(a, device))
    return Comparison(ta, tb)
