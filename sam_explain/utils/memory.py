"""How much memory a run will take, estimated before it runs, and how much the machine has."""

from __future__ import annotations

import ctypes
import os
import platform
import re
from typing import Optional


def decoder_bytes(B: int, C: int = 256, H: int = 64, W: int = 64, elem: int = 4) -> int:
    """An upper estimate of the memory a MaskDecoder forward holds at its peak for B prompt sets:
    about four B x C x H x W maps on the image side (src, pos_src, keys and their sums), and one and a
    half of the B x C/8 x 4H x 4W upscaled features (the last transposed convolution and its GELU).
    For SAM in float32: 28 MiB per prompt set. The peak of live tensors measured 22 MiB per prompt set
    for SAM and 24 for SAM 2.1's decoder, high-resolution skips included (B = 12 to 32, in the torch
    profiler's allocation record; tests/test_memory_estimate.py checks both)."""
    per_prompt_set = 4 * C * H * W + (3 * (C // 8) * 16 * H * W) // 2
    return int(B) * per_prompt_set * elem


def available_bytes() -> Optional[int]:
    """Memory available to a new process: MemAvailable on Linux, free pages elsewhere; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def parse_size(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"100000"`` (bytes) -> bytes. Raises ValueError."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise ValueError(f"expected a size such as 8G, 512M or 1000000 (bytes), got {text!r}")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def format_size(n: float) -> str:
    """Bytes as text: ``512 B``, ``1.5 KiB``, ``28.0 MiB``, ``2.1 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, glibc's malloc.h
ON_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"  # where mallopt exists


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a process frees, for the next allocation, instead of handing
    it back to the kernel. A CPU training step allocates and frees gigabytes of activations; by
    default each block larger than 32 MiB is a fresh mmap, and the first touch of every 4 KiB page of
    it is a page fault (about 550,000 a step at 256 px, close to a third of the step; docs/toy_model.md; it also slows
    the decoder's PyTorch path, docs/onnx.md).
    With no mmap and no trimming the heap is reused, and the memory is no longer given back between
    steps (the peak resident memory at 256 px: 3.0 GB instead of 2.4 GB). Process-wide and
    irreversible. Returns whether it was applied (False where the C library is not glibc)."""
    if not ON_GLIBC:
        return False
    libc = ctypes.CDLL(None)
    ok_mmap = libc.mallopt(M_MMAP_MAX, 0)  # large blocks come from the heap, not from mmap
    ok_trim = libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # and the heap's free top is kept (up to 2 GiB)
    return bool(ok_mmap and ok_trim)
