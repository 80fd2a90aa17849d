"""The benchmark command: evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from metarec.cli.app import JsonOption, QuietOption, StoreOption, command, console, err_console


@command
def evaluate(
    store: StoreOption,
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")],
    protocol: Annotated[
        str,
        typer.Option(
            help="loco (leave categories out), launch (launch window), or melu (DBook's "
            "shipped user splits, ranking within each user's query items: not full ranking)."
        ),
    ] = "loco",
    methods: Annotated[str, typer.Option(help="Comma-separated method names, or all.")] = "all",
    shots: Annotated[str, typer.Option(help="Comma-separated shot counts.")] = "0,1,3,5,10",
    folds: Annotated[int, typer.Option(help="Rotating folds of test categories.")] = 5,
    test_category: Annotated[
        list[str] | None,
        typer.Option(help="Fixed test category (repeatable): one fold instead of rotating ones."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quick: Annotated[
        bool, typer.Option(help="One fold, short training, default settings: a smoke run.")
    ] = False,
    ks: Annotated[str, typer.Option(help="Comma-separated cutoffs.")] = "5,10,20",
    min_users: Annotated[int, typer.Option(help="Eligible categories need this many users.")] = 20,
    config: Annotated[Path | None, typer.Option(help="TOML training config.")] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="(fold, method) units run side by side, one torch thread each (default: every "
            "core). The metrics do not depend on it.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Reuse units already finished in OUT/units under the same data, settings and "
            "code (after a kill, re-run the same command); --no-resume recomputes them."
        ),
    ] = True,
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            envvar="MLFLOW_TRACKING_URI",
            help="Also log the run (config, pooled metrics, report, plots) to this MLflow "
            "tracking URI; needs the tracking extra. Protocols loco and launch.",
        ),
    ] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Benchmark every method on sealed categories (PROTOCOL.md); write metrics, report, plots."""
    import time

    from metarec.config import EvalConfig, load_config, validated
    from metarec.data.export import open_store
    from metarec.evaluation.harness import evaluate as run
    from metarec.evaluation.report import main_table, write_run
    from metarec.features import load_catalog

    started = time.perf_counter()
    if mlflow:
        from metarec.tracking import require_mlflow

        require_mlflow()  # before the run, not after it
    train_config = load_config(config, seed=seed)
    options = {
        "protocol": protocol,
        "methods": None if methods == "all" else tuple(m.strip() for m in methods.split(",")),
        "shots": _counts("--shots", shots),
        "folds": folds,
        "test_categories": tuple(test_category) if test_category else None,
        "seed": seed,
        "quick": quick,
        "ks": _counts("--ks", ks),
        "min_users": min_users,
    }
    eval_config = validated(EvalConfig, options)
    if eval_config.protocol == "melu":
        _evaluate_melu(store, out, eval_config, started)
        return
    with open_store(store, read_only=True) as opened:
        catalog = load_catalog(opened, train_config)
    import os

    result = run(
        catalog,
        train_config,
        eval_config,
        log=err_console.print if as_json else console.print,  # stdout holds only the JSON
        progress=not quiet,
        jobs=jobs or os.cpu_count() or 1,
        units_dir=out / "units",
        resume=resume,
    )
    write_run(
        result,
        out,
        eval_config=eval_config,
        train_config=train_config,
        source=str(store),
        user_ids=catalog.users["user_id"],
        item_ids=catalog.items["item_id"],
    )
    run_id = None
    if mlflow:
        from metarec.tracking import log_evaluation

        run_id = log_evaluation(out, mlflow)
    header, rows = main_table(result.records)
    if as_json:
        summary: dict[str, Any] = {"out": str(out), "header": header, "rows": rows}
        summary |= {"comparisons": result.comparisons, "mlflow_run_id": run_id}
        typer.echo(json.dumps(summary))
        return
    table = Table(title="NDCG@10 on sealed categories (pooled users, 95% CI)")
    table.add_column(header[0], no_wrap=True)
    for name in header[1:]:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for c in result.comparisons:
        if c["family"] == "metarec":
            change = "" if c["relative_change"] is None else f"{c['relative_change']:+.1%}"
            console.print(
                f"{c['method']} vs {c['baseline']} at {c['shots']} shots: {change} "
                f"(p = {c['p_value']:.2g} over {c['n_users']} users; "
                f"{_over_categories(c)})"
            )
    if run_id is not None:
        console.print(f"logged to MLflow: run {run_id}")
    console.print(f"[green]wrote[/] {escape(str(out))} in {time.perf_counter() - started:.0f} s")


def _counts(option: str, text: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers (``--shots 0,1,3``).

    Raises:
        ConfigError: an entry is not a whole number.
    """
    from metarec.errors import ConfigError

    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"{option} takes comma-separated whole numbers such as 1,3,5; got {text!r}"
        ) from None


def _over_categories(comparison: dict[str, Any]) -> str:
    """The category-level half of a comparison line: ``ahead in 3 of 4 categories, p = 0.6``."""
    n = comparison.get("n_categories")
    if not n:  # a run written before the category test
        return "categories not compared"
    p = comparison["p_value_categories"]
    return f"ahead in {comparison['categories_ahead']} of {n} categories, p = {p:.2g}"


def _evaluate_melu(store: Path, out: Path, eval_config: Any, started: float) -> None:
    """The MeLU-line protocol on DBook (docs/MELU_PROTOCOL.md): its own records and table."""
    import time

    from metarec.evaluation.melu_protocol import evaluate_melu, melu_table

    records = evaluate_melu(
        store, methods=eval_config.methods, seed=eval_config.seed, quick=eval_config.quick
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"records": records}, indent=1, sort_keys=True))
    table = melu_table(records)
    (out / "report.md").write_text(
        "# MeLU-line protocol on DBook (within each user's query items, NOT full ranking)\n\n"
        + table
        + "\n"
    )
    console.print(table)
    console.print(f"[green]wrote[/] {escape(str(out))} in {time.perf_counter() - started:.0f} s")
