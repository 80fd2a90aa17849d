"""What the serving process does once at start-up, beyond opening the service."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from functools import cache


def freeze_heap() -> int:
    """Exempt every object alive now from the cyclic garbage collector, for good.

    After its imports (torch, pandas, FastAPI: functions, tuples, dicts) a serving process holds
    about 290,000 objects the collector tracks, nearly all for the process's whole life.
    Python's full collection walks every one of them with the GIL held, while no request is
    answered: on the serving benchmark the first one after start-up came some 20 s into the
    load and took 76 and 88 ms (two runs): an open-loop p99 of 56 to 96 ms at 1,200 req/s in
    five runs, against 17.5 to 25.7 ms frozen (docs/SERVING.md). Frozen (``gc.freeze``, after one
    collection) they are never walked again. Objects made later (new snapshots, requests) are
    collected as before, and every object is still freed when its last reference goes; what
    freezing gives up is reclaiming reference cycles among the frozen objects that later become
    garbage (the first snapshot's, after a swap): a bounded, one-time amount.

    Returns:
        The number of objects frozen (also ``metarec_gc_frozen_objects`` in /metrics).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def release_free_memory() -> bool:
    """Hand the memory allocator's free pages back to the system (glibc's ``malloc_trim``).

    A refresh, an adaptation or a swap builds large frames and tensors and drops them; glibc
    keeps what they freed in its heaps, fragmented, for reuse: 20-minute soaks of the serving
    benchmark saw the resident size's median climb 9.6 and 11.1% while what the process held
    did not grow. In process, events and adaptations left it at 1,247 MB after the first of 20
    cycles and 1,363 after the last (up to 1,472 between); trimmed after each cycle it read 989
    and 1,100 MB, growing only with the data (docs/SERVING.md, "Bounded adaptations, and memory
    handed back"). A trim took 8 to 16 ms there, so the worker calls it after its work at most
    every 10 s (``JobQueue``), never per request.

    Returns:
        Whether anything was trimmed (False where the C library has no ``malloc_trim``).
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; absent on musl and macOS
    except (OSError, AttributeError):
        return None
