"""Memory the serving process hands back: freed allocator pages returned to the system, and the
worker that does it after its work, spaced out."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from metarec.serving.jobs import JobQueue
from metarec.serving.metrics import ServiceMetrics
from metarec.serving.process import _malloc_trim, release_free_memory


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim")
def test_freed_heap_pages_go_back_to_the_system() -> None:
    """Blocks below the allocator's mmap threshold live in its heap; freed with one block still
    live above them, the heap cannot shrink from the top, and its pages stay resident until
    trimmed."""
    blocks = [bytearray(b"x" * 64 * 1024) for _ in range(2_000)]  # 125 MiB, written
    pinned = bytearray(b"y" * 64 * 1024)  # allocated last: above the others in the heap
    del blocks
    before = resident_mb()
    assert release_free_memory()
    after = resident_mb()
    assert before - after > 60, (before, after)
    assert pinned[0] == ord("y")


def test_the_worker_hands_memory_back_after_its_work_at_most_every_release_every() -> None:
    released: list[int] = []
    ran = threading.Event()

    def queue(every: float) -> JobQueue:
        return JobQueue(
            run=lambda job: ran.set(),
            refresh=lambda changed: 0,
            current_version=lambda: 0,
            queue_size=8,
            refresh_seconds=0.0,
            metrics=ServiceMetrics(),
            release_memory=lambda: released.append(1),
            release_every=every,
        )

    often = queue(every=0.0)
    often.start()
    try:
        for category in ("a", "b", "c"):
            often.submit("adapt", category=category).future.result(timeout=30)
            often.mark_dirty()
            often.wait_for_refresh(timeout=30)
    finally:
        often.stop()
    assert len(released) >= 6  # after each job and each refresh

    released.clear()
    rarely = queue(every=3_600.0)
    rarely.start()
    try:
        for category in ("a", "b", "c"):
            rarely.submit("adapt", category=category).future.result(timeout=30)
    finally:
        rarely.stop()
    assert released == [1]  # the first time only: the next is an hour away
