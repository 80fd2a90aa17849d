"""Data commands: simulate, ingest, embed, categories, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from metarec.cli.app import JsonOption, QuietOption, StoreOption, command, console

_SORTS = {"category": False, "items": True, "users": True, "positives": True}  # descending?


@command
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tables into.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write the simulated bookstore (generic table format) into OUT."""
    from metarec.data.simulate import simulate as run

    summary = run(out, seed=seed)
    console.print(f"[green]wrote[/] {escape(str(out))}: {escape(str(summary))}")


@command
def ingest(
    source: Annotated[list[Path], typer.Argument(help="Folder or files to load.")],
    store: StoreOption,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table, recbole, movielens, douban, goodreads, amazon-pairs, dbook or auto.",
        ),
    ] = "auto",
    skip_bad_rows: Annotated[
        bool, typer.Option(help="Load the good rows and write a bad-row report beside the store.")
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Load data into the store (atomic; re-running the same load changes nothing)."""
    from metarec.data import ingest as run

    report = run(
        source if len(source) > 1 else source[0],
        store,
        fmt=fmt,  # type: ignore[arg-type]  # validated by ingest()
        skip_bad_rows=skip_bad_rows,
        progress=not quiet,
    )
    if as_json:
        counts = {
            name: vars(getattr(report, name))
            for name in ("interactions", "items", "users", "categories")
        }
        typer.echo(
            json.dumps(
                {
                    "store": str(store),
                    **counts,
                    "findings": list(report.findings),
                    "bad_rows_report": None
                    if report.report_path is None
                    else str(report.report_path),
                    "seconds": round(report.seconds, 3),
                }
            )
        )
        return
    table = Table(
        "table", "read", "inserted", "unchanged", "updated", "bad", title=escape(str(store))
    )
    for name in ("interactions", "items", "users", "categories"):
        counts = getattr(report, name)
        table.add_row(
            name,
            *(
                f"{getattr(counts, f):,}"
                for f in ("read", "inserted", "unchanged", "updated", "bad")
            ),
        )
    console.print(table)
    for finding in report.findings:
        console.print(f"[yellow]note:[/] {escape(finding)}")
    if report.report_path is not None:
        console.print(
            f"[yellow]bad rows skipped; report written to {escape(str(report.report_path))}[/]"
        )
    console.print(f"loaded in {report.seconds:.1f} s")


@command
def embed(
    store: StoreOption,
    config: Annotated[Path | None, typer.Option(help="TOML training config.")] = None,
    quiet: QuietOption = False,
) -> None:
    """Embed item and category texts into the store's cache once (text features, pip extra
    `text`); later commands open the store read-only and read the cache."""
    from metarec.config import load_config
    from metarec.data.export import open_store
    from metarec.features.text import fill_text_cache

    features = load_config(config).features
    with open_store(store) as opened:
        table = fill_text_cache(opened, features, progress=not quiet)
    console.print(
        f"[green]text cache[/] {store}: {len(table.items):,} items and "
        f"{len(table.categories):,} categories embedded with {table.model}"
    )


@command
def categories(
    store: StoreOption,
    config: Annotated[
        Path | None, typer.Option(help="TOML config (what counts as a positive).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON lines, one per category.")
    ] = False,
    sort: Annotated[
        str,
        typer.Option(
            help="Order by category (A to Z), or by items, users or positives (most first)."
        ),
    ] = "category",
) -> None:
    """List the store's categories: items, users with a positive, positives (what the service's
    GET /categories/{category} reports too)."""
    from metarec.config import load_config
    from metarec.data.counts import CategoryCount, category_counts
    from metarec.data.store import Store

    if sort not in _SORTS:
        raise typer.BadParameter(f"--sort must be one of {', '.join(_SORTS)}, got {sort!r}")
    feedback = load_config(config).feedback
    if store.is_dir():  # an export folder loads the catalogue (pandas, pyarrow)
        from metarec.data.catalog import Catalog
        from metarec.data.export import open_export

        with open_export(store) as opened:
            table = Catalog.load(opened, feedback).category_table
        rows = [CategoryCount(*row) for row in table.itertuples(index=False, name=None)]
    else:  # a store file counts in DuckDB (the catalogue's twin), without pandas
        with Store.open(store, read_only=True) as opened:
            rows = category_counts(opened, feedback)
    # most first for a count (ties by name), A to Z by name: never the store's insertion order
    if _SORTS[sort]:
        rows.sort(key=lambda row: (-getattr(row, f"n_{sort}"), row.category))
    else:
        rows.sort(key=lambda row: row.category)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row._asdict()))
        return
    shown = Table("category", "items", "users", "positives")
    for row in rows:
        shown.add_row(
            escape(row.category), f"{row.n_items:,}", f"{row.n_users:,}", f"{row.n_positives:,}"
        )
    console.print(shown)


@command
def export(
    store: StoreOption,
    out: Annotated[Path, typer.Option("--out", help="Folder to create (must not exist).")],
) -> None:
    """Write the store as Parquet partitioned by category, for training elsewhere or at scale."""
    from metarec.data.export import export_store

    summary = export_store(store, out)
    console.print(f"[green]wrote[/] {escape(str(out))}: {escape(str(summary))}")
