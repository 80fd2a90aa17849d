"""Seeds derived from (run seed, key): results never depend on call order or global RNG state."""

from __future__ import annotations

import zlib


def derived_seed(seed: int, key: str) -> int:
    """A seed for one (run seed, key) pair, stable across processes and call order."""
    return zlib.crc32(f"{seed}:{key}".encode())
