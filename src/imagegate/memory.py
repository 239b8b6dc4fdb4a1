"""The process's memory management, tuned for a gateway of image-sized buffers.

``tune_malloc``: glibc's allocator.

By default glibc serves allocations over 128 KiB with fresh ``mmap`` pages and hands them
back when they are freed, and trims the heap's top as soon as it is free. A gateway moving
multi-megabyte images then faults every page of every buffer in again on each request
(~1,400 minor page faults per 1K PNG). Fixed thresholds keep that memory in the process.
Measured on 2 cores (docs/benchmarks.md): concurrency 1, +5.7 → +3.1 ms over the upstream;
concurrency 32, 199 → 241 requests/s.

``tune_gc``: CPython's cyclic garbage collector. Every full collection walks every object
alive, most of them the modules, catalog and app built at start-up (about 90 ms each here),
and the youngest generation is collected every 700 allocations. Frozen once started and
collected less often, the collector took 0.1–0.2 s instead of 0.8 s of 8 s of CPU at
concurrency 32 (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os

log = logging.getLogger(__name__)

#: mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Buffers up to this size come from the heap (glibc's own ceiling for the dynamic threshold).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory kept at the heap's top before it is returned to the kernel (128 MiB measured no
#: faster, and kept ~80 MiB more with 9,800 streams open).
TRIM_THRESHOLD = 32 * 1024 * 1024
#: Allocations between collections of the youngest generation (CPython's default: 700); the
#: older generations keep their default ratios. Cyclic garbage of a request is small (about 50
#: objects, no image buffer among them: checked with ``gc.DEBUG_SAVEALL``).
GC_THRESHOLDS = (5000, 10, 10)


def tune_malloc() -> bool:
    """Set the thresholds, unless the operator set ``MALLOC_*_`` variables of their own or the
    C library is not glibc; whether they were set."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.info("could not tune the allocator (mallopt refused)")
    return ok


def tune_gc() -> None:
    """Once the app has started: what is alive now is kept out of every later collection
    (``gc.freeze``) and the youngest generation is collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
