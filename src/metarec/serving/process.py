"""What the serving process does once at start-up, beyond opening the service."""

from __future__ import annotations

import gc


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
