"""Markdown tables for docs/BENCHMARKS.md, straight from benchmark run folders.

    .venv/bin/python benchmarks/benchmark_tables.py runs/ml-100k runs/ml-1m ...

For each run: pooled NDCG@10 and Recall@10 per method and shots (mean [95% CI]), the paired
comparison of each metarec method against the best baseline, and the wall time
(``timings.json``). Nothing is typed by hand: the numbers in the docs are this script's output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metarec.evaluation.report import main_table


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
            ]
            for c in comparisons
        ]
        out += [
            "metarec against the best baseline (NDCG@10, paired Wilcoxon over users):",
            "",
            _table(
                ["method", "shots", "best baseline", "metarec", "baseline", "change", "p", "users"],
                rows,
            ),
            "",
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("\n\n".join(render(run) for run in args.runs))


if __name__ == "__main__":
    main()
