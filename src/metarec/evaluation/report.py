"""Write a benchmark run to disk (PROTOCOL.md §4): metrics, report, plots, config, split.

``metrics.json`` holds only what the seed determines (records, comparisons, tuning), so two runs
with the same seed write identical files; wall times go to ``timings.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from metarec.atomic import write_atomic
from metarec.config import EvalConfig, TrainConfig
from metarec.evaluation.records import Result

MAIN_METRIC = ("ndcg", 10)


def write_run(
    result: Result,
    out: str | Path,
    *,
    eval_config: EvalConfig,
    train_config: TrainConfig,
    source: str,
    user_ids: pd.Series,
    item_ids: pd.Series,
) -> Path:
    """Write every output of a run into ``out`` (created if missing).

    Args:
        result: the evaluation result.
        out: the run folder.
        eval_config, train_config: the resolved configuration (written to ``config.json``).
        source: where the data came from (the store path), for the report.
        user_ids, item_ids: external ids by internal index, for the split keys file.

    Returns:
        The run folder.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(
        folder / "metrics.json",
        {
            "records": result.records,
            "comparisons": result.comparisons,
            "tuning": result.tuning,
            "skipped": result.skipped,
        },
    )
    _write_json(folder / "timings.json", {"seconds_per_method": result.timings})
    _write_json(
        folder / "config.json",
        {
            "evaluation": eval_config.model_dump(mode="json"),
            "train": train_config.model_dump(mode="json"),
            "source": source,
        },
    )
    split_digest = _write_split(folder, result, user_ids, item_ids)
    plots = _plots(folder, result.records)
    write_atomic(
        folder / "report.md",
        render_report(result, eval_config, source=source, split_digest=split_digest, plots=plots),
    )
    return folder


def _save_figure(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    write_atomic(path, buffer.getvalue())


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(_clean(data), indent=1, sort_keys=True) + "\n")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN becomes null (strict JSON has no NaN), numpy scalars become Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_split(folder: Path, result: Result, user_ids: pd.Series, item_ids: pd.Series) -> str:
    """``split.json`` (folds and per-launch key counts and checksums) and ``split_keys.parquet``."""
    frames = []
    launches = []
    for entry in result.split_keys:
        for role in ("support", "query"):
            pairs = entry[role]
            frames.append(
                pd.DataFrame(
                    {
                        "fold": entry["fold"],
                        "category": entry["category"],
                        "shots": -1 if entry["shots"] is None else entry["shots"],
                        "role": role,
                        "user_id": user_ids.to_numpy()[pairs[:, 0]] if len(pairs) else [],
                        "item_id": item_ids.to_numpy()[pairs[:, 1]] if len(pairs) else [],
                    }
                )
            )
        launches.append(
            {
                "fold": entry["fold"],
                "category": entry["category"],
                "shots": entry["shots"],
                "support_pairs": len(entry["support"]),
                "query_pairs": len(entry["query"]),
                "sha256": hashlib.sha256(
                    np.ascontiguousarray(entry["support"], dtype=np.int64).tobytes()
                    + b"|"
                    + np.ascontiguousarray(entry["query"], dtype=np.int64).tobytes()
                ).hexdigest(),
            }
        )
    keys = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    keys_path = folder / "split_keys.parquet"
    buffer = io.BytesIO()
    keys.to_parquet(buffer, index=False)
    write_atomic(keys_path, buffer.getvalue())
    digest = hashlib.sha256(json.dumps(launches, sort_keys=True).encode()).hexdigest()
    _write_json(
        folder / "split.json",
        {
            "folds": [
                {"fold": f.index, "train": f.train, "validation": f.validation, "test": f.test}
                for f in result.folds
            ],
            "launches": launches,
            "sha256": digest,
            "keys_file": keys_path.name,
        },
    )
    return digest


def _main(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    metric, k = MAIN_METRIC
    return frame[(frame["metric"] == metric) & (frame["k"] == k)]


def _plots(folder: Path, records: list[dict[str, Any]]) -> list[str]:
    """NDCG@10 against shots per method; per-category NDCG@10 bars at each shot count."""
    main = _main(records)
    if main.empty:
        return []
    names = []
    pooled = main[main["category"] == "all"]
    if pooled.empty:  # a single test category: its own rows are the pooled ones
        pooled = main
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, rows in pooled.groupby("method", sort=False):
        rows = rows.dropna(subset=["shots"]).sort_values("shots")
        if rows.empty:
            continue
        ax.errorbar(
            rows["shots"],
            rows["mean"],
            yerr=[rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.set_xlabel("support positives per user (shots)")
    ax.set_ylabel("NDCG@10 (mean, 95% CI)")
    ax.set_title("New categories: NDCG@10 against shots")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, folder / "ndcg10_vs_shots.png")
    plt.close(fig)
    names.append("ndcg10_vs_shots.png")

    per_category = main[main["category"] != "all"]
    shots_values = list(dict.fromkeys(per_category["shots"].tolist()))
    if per_category.empty:
        return names
    fig, axes = plt.subplots(
        len(shots_values), 1, figsize=(9, 2.8 * len(shots_values)), squeeze=False
    )
    methods = list(dict.fromkeys(per_category["method"]))
    for ax, shots in zip(axes[:, 0], shots_values, strict=True):
        rows = (
            per_category[per_category["shots"].isna()]
            if _is_none(shots)
            else per_category[per_category["shots"] == shots]
        )
        categories = sorted(rows["category"].unique())
        width = 0.8 / max(1, len(methods))
        x = np.arange(len(categories))
        for i, method in enumerate(methods):
            values = rows[rows["method"] == method].set_index("category")["mean"]
            ax.bar(x + i * width, [values.get(c, np.nan) for c in categories], width, label=method)
        ax.set_xticks(x + 0.4 - width / 2, categories, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(f"NDCG@10\n({_shots_label(shots)})", fontsize=8)
    axes[0, 0].legend(fontsize=7, ncol=min(4, len(methods)))
    fig.tight_layout()
    _save_figure(fig, folder / "ndcg10_per_category.png")
    plt.close(fig)
    names.append("ndcg10_per_category.png")
    return names


def main_table(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Pooled NDCG@10 per method (rows) and shots (columns), as text cells with CIs."""
    main = _main(records)
    pooled = main[main["category"] == "all"]
    if pooled.empty:
        pooled = main
    shots_values = list(dict.fromkeys(pooled["shots"].tolist()))
    header = ["method", *(_shots_label(s) for s in shots_values)]
    rows = []
    for method, group in pooled.groupby("method", sort=False):
        cells = [str(method)]
        for shots in shots_values:
            match = group[group["shots"].isna() if _is_none(shots) else group["shots"] == shots]
            if match.empty:
                cells.append("")
                continue
            r = match.iloc[0]
            cells.append(f"{r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")
        rows.append(cells)
    return header, rows


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _shots_label(value: Any) -> str:
    if _is_none(value):
        return "launch window"
    return f"{int(value)} shot" + ("" if int(value) == 1 else "s")


def render_report(
    result: Result,
    config: EvalConfig,
    *,
    source: str,
    split_digest: str,
    plots: list[str],
) -> str:
    """``report.md``: the main table, comparisons, per-category table, tuning log, plots."""
    lines = [
        "# New-category benchmark",
        "",
        f"Data: `{source}`. Protocol: "
        + (
            "leave-categories-out (PROTOCOL.md §2)"
            if config.protocol == "loco"
            else f"launch window, first {config.launch_window:.0%} of each category's positives "
            "(PROTOCOL.md §3)"
        )
        + f"; {len(result.folds)} fold(s) of {config.folds}"
        + (" (quick run: one fold, short training, default settings only)" if config.quick else "")
        + f"; seed {config.seed}. Full ranking over every item of the category except the "
        "user's own support items; no sampled negatives. Split checksum "
        f"`{split_digest[:16]}`.",
        "",
        "## NDCG@10, pooled over the test categories' users (mean [95% bootstrap CI])",
        "",
    ]
    header, rows = main_table(result.records)
    lines += _markdown_table(header, rows)
    lines += [
        "",
        "## Each method against the best baseline (NDCG@10, paired over users and categories)",
        "",
    ]
    comparison_rows = [
        [
            str(c["method"]),
            _shots_label(c["shots"]),
            str(c["baseline"]),
            f"{c['mean']:.4f}",
            f"{c['baseline_mean']:.4f}",
            "" if c["relative_change"] is None else f"{c['relative_change']:+.1%}",
            "" if c["p_value"] is None else f"{c['p_value']:.2g}",
            str(c["n_users"]),
            f"{c['categories_ahead']} of {c['n_categories']}",
            "" if c["p_value_categories"] is None else f"{c['p_value_categories']:.2g}",
        ]
        for c in result.comparisons
    ]
    lines += _markdown_table(
        [
            "method",
            "shots",
            "best baseline",
            "method",
            "baseline",
            "change",
            "p (Wilcoxon)",
            "users",
            "categories ahead",
            "p over categories",
        ],
        comparison_rows,
    )
    lines += [
        "",
        "The first p-value counts users as independent; the second tests each test category's "
        "mean difference, so it also says whether a difference holds from one new category to "
        "the next. A method that gives every user of a category the same list (popularity, or "
        "anything with nothing personal to go on, such as a random tie order at zero shots) "
        "makes its category's users share one draw: there only the second is a fair measure.",
    ]
    lines += ["", "## Per category (NDCG@10)", ""]
    main = _main(result.records)
    per_category = main[main["category"] != "all"]
    cat_rows = [
        [
            str(r["category"]),
            _shots_label(r["shots"]),
            str(r["method"]),
            f"{r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]",
            str(r["n_users"]),
        ]
        for _, r in per_category.sort_values(["category", "shots", "method"]).iterrows()
    ]
    lines += _markdown_table(["category", "shots", "method", "NDCG@10", "users"], cat_rows)
    lines += [
        "",
        "## Tuning on validation categories (every setting tried)",
        "",
        f"Each method tries at most {config.tuning_budget} settings of its grid (the same budget "
        "for all) and keeps the best validation NDCG@10; quick runs use the first setting. "
        "*Chosen in the fit*: what a method chose on validation inside its own fit.",
        "",
    ]
    lines += _markdown_table(
        ["method", "fold", "setting", "validation NDCG@10", "chosen in the fit"],
        [
            [
                str(t["method"]),
                str(t["fold"]),
                json.dumps(t["setting"], sort_keys=True),
                "" if t["validation_ndcg@10"] is None else f"{t['validation_ndcg@10']:.4f}",
                json.dumps(t["chosen"], sort_keys=True) if "chosen" in t else "",
            ]
            for t in result.tuning
        ],
    )
    if result.skipped:
        lines += [
            "",
            "Not eligible at some shot counts (too few users with more positives than the shots, "
            "or too few items), so not in those columns: "
            + "; ".join(f"{s['category']} at {_shots_label(s['shots'])}" for s in result.skipped)
            + ".",
        ]
    lines += ["", "## Folds", ""]
    for fold in result.folds:
        lines.append(
            f"- fold {fold.index}: test {fold.test}; validation {fold.validation}; "
            f"{len(fold.train)} training categories"
        )
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({name})" for name in plots]
    lines += [
        "",
        "All metrics at K = "
        + ", ".join(str(k) for k in config.ks)
        + " (precision, recall, ndcg, hit_rate, mrr, map, coverage) and AUC are in "
        "`metrics.json`.",
        "",
    ]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out
