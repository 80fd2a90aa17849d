"""``metarec check``: report a store's rows that ingest would refuse today (exit 1 when any)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from metarec.cli.app import StoreOption, command, console


@command
def check(
    store: StoreOption,
    limit: Annotated[int, typer.Option(min=1, help="Rows listed at most per column.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON lines: one per bad row, then the counts.")
    ] = False,
) -> None:
    """List stored numbers (ratings, weights, years, prices) that are not finite or lie outside
    the range the model can carry; reads and training skip them. Exit 1 when there are any."""
    from metarec.data.export import open_store

    with open_store(store, read_only=True) as opened:
        counts = opened.bad_counts()
        rows = opened.bad_rows(limit=limit)
    if as_json:
        for record in rows.to_dict(orient="records"):
            typer.echo(json.dumps(record, allow_nan=False))
        typer.echo(json.dumps({"bad": counts, "total": sum(counts.values())}, allow_nan=False))
    elif not counts:
        console.print(f"[green]ok[/] {store}: every stored number is finite and in range")
    else:
        shown = Table("table", "key", "column", "value", "reason", title=escape(str(store)))
        for row in rows.itertuples(index=False):
            shown.add_row(
                *(escape(str(v)) for v in (row.table, row.key, row.column, row.value, row.reason))
            )
        console.print(shown)
        summary = ", ".join(f"{n:,} in {column}" for column, n in counts.items())
        console.print(
            f"[yellow]bad values:[/] {summary}. Reads and training skip these rows; fix the "
            "source and re-ingest it into a new store to be rid of them"
        )
    if counts:
        raise typer.Exit(1)
