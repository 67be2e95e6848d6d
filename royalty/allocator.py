"""Keep the C allocator from returning large tensors' memory to the OS between steps.

glibc serves allocations above its mmap threshold (128 KiB at first, adjusted upward
as blocks are freed, up to 32 MiB) with fresh mappings: every step's per-sample
gradients and activations of that size then cost page faults that zero the memory
anew. Serving them from the heap and keeping up to `TRIM` bytes of freed heap
re-uses the same pages. Measured on the training pass (BENCHMARKS.md, "Engine cost
per step"). The arithmetic is untouched: only where the bytes live.

Only on Linux with glibc; anywhere else this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM = 256 * 2**20


def tune_cpu_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds; True where it was done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM))
