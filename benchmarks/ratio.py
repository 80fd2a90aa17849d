"""Compare the JSON summaries (last line) of two benchmark logs: head / base for every number.

Usage: .venv/bin/python benchmarks/ratio.py BASE.log HEAD.log
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def summary(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"{path}: no JSON summary line")


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def main() -> None:
    base, head = (flat(summary(Path(p))) for p in sys.argv[1:3])
    print("| measure | base | head | head / base |")
    print("|---|---|---|---|")
    for key in sorted(base.keys() & head.keys()):
        ratio = f"{head[key] / base[key]:.2f}" if base[key] else "n/a"
        print(f"| {key} | {base[key]:g} | {head[key]:g} | {ratio} |")


if __name__ == "__main__":
    main()
