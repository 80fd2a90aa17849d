"""Markdown tables for docs/BENCHMARKS.md, straight from benchmark run folders.

    .venv/bin/python benchmarks/benchmark_tables.py runs/ml-100k runs/ml-1m ...

For each run: pooled NDCG@10 and Recall@10 per method and shots (mean [95% CI]), the paired
comparison of each metarec method against the best baseline, the wall time
(``timings.json``) and, for tuned runs, every setting tried with its validation NDCG@10.
Nothing is typed by hand: the numbers in the docs are this script's output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metarec.evaluation.report import main_table


def _categories(comparison: dict[str, Any]) -> str:
    """``3 of 4 (0.62)``; blank for runs written before the category test."""
    if not comparison.get("n_categories"):
        return ""
    return (
        f"{comparison['categories_ahead']} of {comparison['n_categories']} "
        f"({comparison['p_value_categories']:.2g})"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(run: Path) -> str:
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    timings = json.loads((run / "timings.json").read_text())["seconds_per_method"]
    records = [r for r in metrics["records"] if r["mean"] is not None]
    out = [f"### `{run.name}`", ""]
    ev = config["evaluation"]
    out.append(
        f"Source `{config['source']}`, protocol {ev['protocol']}, folds {ev['folds']}"
        + (f" (fixed test {ev['test_categories']})" if ev.get("test_categories") else "")
        + (", quick" if ev["quick"] else "")
        + f", seed {ev['seed']}. Time in the methods (fitting and scoring): "
        + f"{sum(timings.values()):.0f} s "
        + "("
        + ", ".join(f"{m} {s:.0f} s" for m, s in timings.items())
        + ")."
    )
    out.append("")
    for metric, k in (("ndcg", 10), ("recall", 10)):
        subset = [
            dict(r, metric="ndcg", k=10) if (r["metric"], r["k"]) == (metric, k) else None
            for r in records
        ]
        header, rows = main_table([r for r in subset if r is not None])
        out += [
            f"{metric.upper() if metric == 'ndcg' else 'Recall'}@{k}:",
            "",
            _table(header, rows),
            "",
        ]
    comparisons = [c for c in metrics["comparisons"] if c["family"] == "metarec"]
    if comparisons:
        rows = [
            [
                c["method"],
                "window" if c["shots"] is None else str(c["shots"]),
                c["baseline"],
                f"{c['mean']:.4f}",
                f"{c['baseline_mean']:.4f}",
                "" if c["relative_change"] is None else f"{c['relative_change']:+.1%}",
                "" if c["p_value"] is None else f"{c['p_value']:.2g}",
                str(c["n_users"]),
                _categories(c),
            ]
            for c in comparisons
        ]
        out += [
            "metarec against the best baseline (NDCG@10, paired Wilcoxon over users, and over "
            "the test categories' means):",
            "",
            _table(
                [
                    "method",
                    "shots",
                    "best baseline",
                    "metarec",
                    "baseline",
                    "change",
                    "p",
                    "users",
                    "categories ahead (p)",
                ],
                rows,
            ),
            "",
        ]
    out += _tuning(metrics.get("tuning", []))
    return "\n".join(out)


def _tuning(tuning: list[dict]) -> list[str]:
    """Every setting tried per method: mean validation NDCG@10 over folds, folds where chosen.

    Chosen = the harness's rule: the first setting with the highest validation score.
    """
    if not any(len([t for t in tuning if t["method"] == m["method"]]) > 1 for m in tuning):
        return []  # quick runs and folds without validation try one setting per method
    scores: dict[tuple[str, str], list[float]] = {}
    chosen: dict[tuple[str, str], int] = {}
    by_fold: dict[tuple[str, int], list[dict]] = {}
    for t in tuning:
        key = (t["method"], json.dumps(t["setting"], sort_keys=True))
        chosen.setdefault(key, 0)
        if t["validation_ndcg@10"] is not None:
            scores.setdefault(key, []).append(t["validation_ndcg@10"])
        by_fold.setdefault((t["method"], t["fold"]), []).append(t)
    for tried in by_fold.values():
        best = max(
            tried,
            key=lambda t: -1.0 if t["validation_ndcg@10"] is None else t["validation_ndcg@10"],
        )
        chosen[(best["method"], json.dumps(best["setting"], sort_keys=True))] += 1
    rows = [
        [
            method,
            f"`{setting}`",
            f"{sum(scores[key]) / len(scores[key]):.4f}" if scores.get(key) else "n/a",
            str(chosen[key]),
        ]
        for key in chosen
        for method, setting in [key]
    ]
    return [
        "Tuning on the validation categories (each fold's own; test categories never scored):",
        "",
        _table(
            ["method", "setting", "mean validation NDCG@10 over folds", "chosen in folds"], rows
        ),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("\n\n".join(render(run) for run in args.runs))


if __name__ == "__main__":
    main()
