"""`make demo`: the whole new-category story on the simulated bookstore, in a few minutes.

1. simulate the bookstore (generic table format) and ingest it into a DuckDB store;
2. meta-train on the established categories, with ``Books > Literature > Poetry`` sealed;
3. evaluate the sealed category under the leave-categories-out protocol (k-shot per user, full
   ranking): the adapted model against launch popularity, random, and the un-adapted
   meta-initialisation;
4. replay its launch: adapt from the first interactions only, and print top-K lists.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from metarec.config import MetaConfig, load_config, validated
from metarec.data import ingest
from metarec.data.catalog import Catalog
from metarec.data.simulate import simulate
from metarec.data.store import Store
from metarec.evaluation.holdout import evaluate_holdout
from metarec.features import load_catalog
from metarec.meta.model import save_model
from metarec.serving.recommender import Recommender
from metarec.training import train

HELD_OUT = "Books > Literature > Poetry"
DEMO_SHOTS = (1, 3, 5)
LAUNCH_SHARE = 0.10  # the launch replay adapts on the category's first 10% of positives


def run_demo(
    workdir: Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> list[dict[str, object]]:
    """Run the demo end to end, printing as it goes (``progress``: the ingest and meta-training
    progress on stderr too); returns the evaluation records.

    Raises:
        ConfigError: ``steps`` is not a valid meta-step count (checked before any work).
    """
    if steps is not None:
        validated(MetaConfig, {"meta_steps": steps})
    console = console or Console()
    started = time.perf_counter()
    data_dir, store_path, model_dir = workdir / "data", workdir / "store.duckdb", workdir / "model"

    console.rule("[bold]1. simulate and ingest")
    summary = simulate(data_dir, seed=seed)
    console.print(
        f"simulated {summary.n_users:,} users, {summary.n_items:,} items, "
        f"{summary.n_events:,} events in {len(summary.categories)} categories -> {data_dir}"
    )
    report = ingest(data_dir, store_path, fmt="table", progress=progress)
    counts = report.interactions
    console.print(
        f"ingested into {store_path} in {report.seconds:.1f} s: {counts.inserted:,} new "
        f"interactions, {counts.unchanged:,} already there (re-running changes nothing)"
    )

    console.rule("[bold]2. meta-train")
    config = load_config(data_dir / "metarec.toml", seed=seed, hold_out=[HELD_OUT])
    if steps is not None:  # validated above (model_copy does not validate)
        config = config.model_copy(
            update={"meta": config.meta.model_copy(update={"meta_steps": steps})}
        )
    with Store.open(store_path, read_only=True) as store:
        model = train(store, config, progress=progress)
        save_model(model, model_dir)
        console.print(
            f"meta-trained {config.meta.algorithm} "
            f"({'first' if config.meta.first_order else 'second'} order) for "
            f"{config.meta.meta_steps} steps on {len(model.splits['train'])} categories "
            f"(validated on {len(model.splits['validation'])}); sealed: {HELD_OUT!r} -> {model_dir}"
        )

        console.rule(f"[bold]3. evaluate the sealed category {HELD_OUT!r}")
        catalog = load_catalog(store, config)
        records = evaluate_holdout(model, catalog, [HELD_OUT], shots=DEMO_SHOTS, ks=(10,))
        console.print(results_table(records))
        for line in verdicts(records, f"metarec-{config.meta.algorithm}", "popularity"):
            console.print(line)

        console.rule("[bold]4. launch: adapt from its first interactions, recommend")
        as_of = launch_cutoff(catalog, HELD_OUT, LAUNCH_SHARE)
        recommender = Recommender.open(model_dir, store)
        adaptation = recommender.adapt(HELD_OUT, as_of=as_of)
        console.print(
            f"adapted {HELD_OUT!r} from its first {adaptation.support_size} positives "
            f"({adaptation.n_users} users) in {adaptation.seconds * 1000:.1f} ms"
        )
        for user_id in demo_users(catalog, store, HELD_OUT):
            result = recommender.recommend(user_id, HELD_OUT, k=5)
            title = f"user {user_id}" + (
                f" (fallback: {result.fallback})" if result.fallback else ""
            )
            table = Table("rank", "item", "title", "score", title=title)
            for rank, item in enumerate(result.items, 1):
                table.add_row(str(rank), item.item_id, item.title or "", f"{item.score:.3f}")
            console.print(table)
    console.print(f"[green]demo finished in {time.perf_counter() - started:.0f} s[/]")
    return records


def results_table(records: list[dict[str, object]]) -> Table:
    """NDCG@10 and Recall@10 (mean and 95% CI) per method and shots."""
    table = Table("shots", "method", "NDCG@10", "Recall@10", "users", title="held-out category")
    wanted = {(r["method"], r["shots"], r["metric"]): r for r in records if r["k"] == 10}
    methods = list(dict.fromkeys(r["method"] for r in records))
    for shots in sorted({int(str(r["shots"])) for r in records}):
        for method in methods:
            cells = []
            for metric in ("ndcg", "recall"):
                r = wanted[(method, shots, metric)]
                cells.append(f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
            users = wanted[(method, shots, "ndcg")]["n_users"]
            table.add_row(str(shots), str(method), *cells, str(users))
        table.add_section()
    return table


def verdicts(records: list[dict[str, object]], ours: str, baseline: str) -> list[str]:
    """One plain sentence per shot count: does ``ours`` beat ``baseline`` on NDCG@10?

    "Beats" means the confidence intervals do not overlap; otherwise the sentence says the
    difference is within the noise, whichever way it goes.
    """
    ndcg = {(r["method"], r["shots"]): r for r in records if r["metric"] == "ndcg" and r["k"] == 10}
    lines = []
    for shots in sorted({int(str(r["shots"])) for r in records}):
        a, b = ndcg[(ours, shots)], ndcg[(baseline, shots)]
        if float(a["ci_low"]) > float(b["ci_high"]):  # type: ignore[arg-type]
            word = "[green]beats[/]"
        elif float(a["ci_high"]) < float(b["ci_low"]):  # type: ignore[arg-type]
            word = "[red]loses to[/]"
        else:
            word = "is within the noise of"
        lines.append(
            f"{shots} shot(s): {ours} (NDCG@10 {a['mean']:.3f}) {word} {baseline} "
            f"({b['mean']:.3f}) on this category"
        )
    return lines


def launch_cutoff(catalog: Catalog, category: str, share: float) -> int:
    """The time by which the category had received ``share`` of its positives."""
    positives = catalog.positives_in([category])
    times = positives["timestamp"].dropna().to_numpy(dtype=np.int64)
    return int(np.quantile(times, share, method="lower"))


def demo_users(catalog: Catalog, store: Store, category: str) -> list[str]:
    """Two users active in the category early, one with no history there, one unknown."""
    positives = catalog.positives_in([category])
    counts = positives.groupby("user_idx").size().sort_values(ascending=False)
    users = catalog.users.set_index("user_idx")["user_id"]
    active = [str(users[u]) for u in counts.index[:2]]
    outside = catalog.positives.loc[~catalog.positives["user_idx"].isin(counts.index), "user_idx"]
    newcomer = [str(users[int(outside.iloc[0])])] if len(outside) else []
    return [*active, *newcomer, "someone-new"]
