"""The comparisons of a finished run, recomputed from its units: over users and over categories.

    .venv/bin/python benchmarks/compare_categories.py runs/full-all-ml1m-v4
    .venv/bin/python benchmarks/compare_categories.py runs/full-all-ml1m-v4 --all

Runs written before the comparisons tested over categories (docs/METRICS.md, "Paired
comparisons") hold the per-user values in ``OUT/units/``; this reads them (whatever code wrote
them: the unit key is not checked) and prints every metarec method against the best baseline
at each shot count as a markdown table, or every method with ``--all``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from metarec.evaluation.methods import METHODS
from metarec.evaluation.records import comparisons
from metarec.evaluation.units import UnitResult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run folder with a units/ folder")
    parser.add_argument("--all", action="store_true", help="every method, not only metarec's")
    args = parser.parse_args()
    per_user: dict[tuple[str, int | None, str], dict[tuple[str, int | None], np.ndarray]] = {}
    for document in sorted((args.run / "units").glob("*.json")):
        key = json.loads(document.read_text())["key"]
        unit = UnitResult.load(document.with_suffix(""), key)
        if unit is None:
            raise SystemExit(f"{document}: unreadable unit")
        for (shots, category), values in unit.per_user.items():
            per_user[(unit.method, shots, category)] = values
    families = {name: METHODS[name].family for name, _, _ in per_user}
    shots_list = sorted({shots for _, shots, _ in per_user}, key=lambda s: -1 if s is None else s)
    print(
        "| method | shots | best baseline | method | baseline | change | p over users | users "
        "| categories ahead | p over categories |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in comparisons(per_user, families, shots_list):
        if not args.all and c["family"] != "metarec":
            continue
        change = "" if c["relative_change"] is None else f"{c['relative_change']:+.1%}"
        print(
            f"| {c['method']} | {c['shots']} | {c['baseline']} | {c['mean']:.4f} "
            f"| {c['baseline_mean']:.4f} | {change} | {_p(c['p_value'])} | {c['n_users']} "
            f"| {c['categories_ahead']} of {c['n_categories']} | {_p(c['p_value_categories'])} |"
        )


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.2g}"


if __name__ == "__main__":
    main()
