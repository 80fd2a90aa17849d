"""One method against named others, paired over the same users, from a run folder's unit files.

    .venv/bin/python benchmarks/paired_vs.py runs/douban-full-v2 --method metarec-ridge \
        --against popularity,als,emcdr

The report of a run compares each method with the *best* baseline only; an issue's target is
often against a given one ("not below popularity", "ahead of ALS and EMCDR"). For each shot
count: NDCG@10 pooled over the test categories' users, the relative change, and the paired
Wilcoxon p-value (``metarec.evaluation.stats.paired_test``, as the report computes it), from
the same per-user arrays the report pools (``units/fold*-<method>.{json,npz}``).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from metarec.evaluation.stats import paired_test

K = 10


def per_user(run: Path, method: str) -> dict[int | None, np.ndarray]:
    """NDCG@10 per user for each shot count, pooled over folds and test categories."""
    parts: dict[int | None, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for meta_path in sorted((run / "units").glob(f"fold*-{method}.json")):
        meta = json.loads(meta_path.read_text())
        if meta["method"] != method:
            continue
        with np.load(meta_path.with_suffix(".npz"), allow_pickle=False) as arrays:
            for shots, category, metric, k, name in meta["arrays"]:
                if metric == "ndcg" and k == K:
                    parts[shots].append((category, arrays[name]))
    if not parts:
        raise SystemExit(f"no unit files of {method!r} in {run / 'units'}")
    # the report's order: categories sorted by name (each is a test category in one fold)
    return {
        shots: np.concatenate([a for _, a in sorted(found, key=lambda x: x[0])])
        for shots, found in parts.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--method", required=True)
    parser.add_argument("--against", required=True, help="comma-separated method names")
    args = parser.parse_args()
    ours = per_user(args.run, args.method)
    print(f"| shots | {args.method} | against | theirs | change | p (Wilcoxon) | users |")
    print("|---|---|---|---|---|---|---|")
    for other in args.against.split(","):
        theirs = per_user(args.run, other)
        for shots in sorted(ours, key=lambda s: -1 if s is None else s):
            a, b = ours[shots], theirs.get(shots)
            if b is None or len(a) != len(b):
                raise SystemExit(f"{other} was not scored on the same users at {shots} shots")
            both = ~np.isnan(a) & ~np.isnan(b)
            a, b = a[both], b[both]
            change = (a.mean() / b.mean() - 1) * 100 if b.mean() > 0 else float("nan")
            p = paired_test(a, b) if len(a) else float("nan")
            print(
                f"| {shots} | {a.mean():.4f} | {other} | {b.mean():.4f} | {change:+.1f}% "
                f"| {p:.2g} | {len(a)} |"
            )


if __name__ == "__main__":
    main()
