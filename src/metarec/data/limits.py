"""The range each number column may hold: light enough for the store to import without
pandas (``metarec categories`` answers in well under a second)."""

from __future__ import annotations

# The range each number column may hold (inclusive): well inside float32 (3.4e38), which features
# and parameters use, so that sums over many rows, squares in a standardisation and weight x
# feature products stay finite. A weight of 1e39 is finite in JSON and float64 but infinite in
# float32: stored, it turned a category's every score into NaN. Beyond these: a bad row.
NUMBER_LIMITS: dict[str, tuple[float, float]] = {
    "rating": (-1e6, 1e6),
    "weight": (0.0, 1e6),
    "year": (-1e6, 1e6),
    "price": (-1e12, 1e12),
}


def range_text(name: str) -> str:
    """The allowed range of a number column, for messages: ``[0, 1e+06]``."""
    low, high = NUMBER_LIMITS[name]
    return f"[{low:g}, {high:g}]"
