"""Names and titles are data: the CLI prints them as they are, never as Rich markup (a
category named ``[/]`` used to crash a command after its work was done)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from metarec.cli import app
from metarec.data.ingest import ingest_frames

runner = CliRunner()

ODD = "Shelf > [/]Odd [bold]one[/bold]"
TITLE = "[red]not red[/] [/]"


def _store_with_an_odd_category(known_store: Path, folder: Path) -> Path:
    store = Path(shutil.copy(known_store, folder / "store.duckdb"))
    items = pd.DataFrame(
        {
            "item_id": [f"odd-{n}" for n in range(6)],
            "category": ODD,
            "title": [TITLE, *(f"odd {n}" for n in range(1, 6))],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{n}" for n in range(12)],
            "item_id": [f"odd-{n % 6}" for n in range(12)],
            "event": "order",
            "event_id": [f"odd-e{n}" for n in range(12)],
        }
    )
    ingest_frames(interactions, store, items=items)
    return store


def test_odd_names_print_as_they_are(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    store = _store_with_an_odd_category(known_store, tmp_path)
    shown = runner.invoke(app, ["categories", "--store", str(store)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert ODD in shown.output

    model = ["--model", str(known_model_dir), "--store", str(store), "--category", ODD]
    adapted = runner.invoke(app, ["adapt", *model], terminal_width=200)
    assert adapted.exit_code == 0, adapted.output
    assert repr(ODD) in adapted.output

    listed = runner.invoke(
        app, ["recommend", *model, "--user", "u20", "-k", "6"], terminal_width=300
    )
    assert listed.exit_code == 0, listed.output
    assert f"in {ODD} for user u20" in listed.output
    assert TITLE in listed.output

    refused = runner.invoke(
        app, ["adapt", *model[:4], "--category", "Shelf > [/]missing"], terminal_width=200
    )
    assert refused.exit_code == 2 and "[/]missing" in refused.output
