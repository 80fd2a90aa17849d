"""Numbers the model cannot carry never reach the store, and old ones are reported and skipped.

A weight of 1e39 is finite JSON and float64 but infinite in float32: once stored it turned every
score of its category into NaN (issue 13). Ingest now refuses numbers outside ``NUMBER_LIMITS``;
rows stored before are listed by ``Store.bad_rows`` / `metarec check` and skipped by reads.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import known_answer_config
from typer.testing import CliRunner

from metarec.cli import app
from metarec.data import Store, ingest_frames
from metarec.data.values import NUMBER_LIMITS
from metarec.errors import BadRowsError
from metarec.training import train

ITEMS = pd.DataFrame(
    {"item_id": ["a", "b", "c"], "category": ["Toys"] * 3, "year": [2000, 1e7, None]}
)


def _events(**columns: list[object]) -> pd.DataFrame:
    base = {"user_id": ["u1", "u2", "u3", "u4"], "item_id": ["a", "a", "c", "c"]}
    return pd.DataFrame({**base, **columns})


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("weight", [1.0, 1e39, 2.0, 3.0], "outside [0, 1e+06]"),  # inf in float32
        ("weight", [1.0, -1.0, 2.0, 3.0], "outside [0, 1e+06]"),  # profiles could cancel to 0/0
        ("rating", [4.0, float("inf"), 2.0, 3.0], "not finite"),
        ("rating", [4.0, 2e6, 2.0, 3.0], "outside [-1e+06, 1e+06]"),
        ("weight", ["1", "1e400", "2", "3"], "not finite"),  # text that parses to inf
    ],
)
def test_ingest_refuses_numbers_outside_their_range(
    tmp_path: Path, column: str, values: list[object], reason: str
) -> None:
    path = tmp_path / "s.duckdb"
    items = ITEMS.assign(year=[2000, 2001, None])
    with pytest.raises(BadRowsError) as refused:
        ingest_frames(_events(**{column: values}), path, items=items)
    (bad,) = refused.value.report.bad_rows  # type: ignore[attr-defined]
    assert (bad.line, bad.column) == (2, column)
    assert reason in bad.reason
    assert not path.exists()  # refused whole: not even the store was created


def test_skip_bad_rows_keeps_the_good_ones_and_an_item_year_out_of_range_is_bad(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.duckdb"
    report = ingest_frames(
        _events(weight=[1.0, 1e39, 2.0, 3.0]).iloc[[0, 1]],
        path,
        items=ITEMS,
        skip_bad_rows=True,
    )
    reasons = {(row.column, row.line) for row in report.bad_rows}
    assert reasons == {("year", 2), ("weight", 2)}
    with Store.open(path, read_only=True) as store:
        assert store.interactions()["weight"].tolist() == [1.0]
        assert store.items()["item_id"].tolist() == ["a", "c"]
        assert store.bad_counts() == {}


def _poisoned(known_store: Path, folder: Path) -> Path:
    """A copy of the known-answer store with values written before ingest checked ranges."""
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(shutil.copy(known_store, folder / "store.duckdb"))
    with Store.open(path) as store:
        con = store.connection
        con.execute(
            "UPDATE interactions SET weight = 1e39 WHERE event_id IN "
            "(SELECT event_id FROM interactions ORDER BY event_id LIMIT 2)"
        )
        con.execute(
            "UPDATE interactions SET rating = 'nan'::DOUBLE WHERE event_id = "
            "(SELECT max(event_id) FROM interactions)"
        )
        con.execute("UPDATE items SET price = 'inf'::DOUBLE WHERE item_id = 'c0-i0'")
        con.execute("CHECKPOINT")
    return path


def test_store_reads_skip_stored_bad_values_and_list_them(
    known_store: Path, tmp_path: Path
) -> None:
    path = _poisoned(known_store, tmp_path)
    with Store.open(path, read_only=True) as store:
        n_all = store.stats()["n_interactions"]
        interactions = store.interactions()
        assert len(interactions) == n_all - 3
        assert interactions["weight"].dropna().le(NUMBER_LIMITS["weight"][1]).all()
        items = store.items().set_index("item_id")
        assert math.isnan(items.loc["c0-i0", "price"])
        assert store.bad_counts() == {
            "interactions.rating": 1,
            "interactions.weight": 2,
            "items.price": 1,
        }
        rows = store.bad_rows()
        assert sorted(zip(rows["table"], rows["column"], strict=True)) == [
            ("interactions", "rating"),
            ("interactions", "weight"),
            ("interactions", "weight"),
            ("items", "price"),
        ]
        assert set(rows.loc[rows["column"] == "weight", "value"]) == {"1e+39"}


def test_check_command_reports_bad_rows_with_exit_1(known_store: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    clean = runner.invoke(app, ["check", "--store", str(known_store)])
    assert clean.exit_code == 0, clean.output
    assert "ok" in clean.output
    path = _poisoned(known_store, tmp_path)
    found = runner.invoke(app, ["check", "--store", str(path), "--json"])
    assert found.exit_code == 1, found.output
    lines = [json.loads(line) for line in found.output.splitlines()]  # valid JSON, every line
    assert lines[-1] == {
        "bad": {"interactions.rating": 1, "interactions.weight": 2, "items.price": 1},
        "total": 4,
    }
    assert {line["column"] for line in lines[:-1]} == {"rating", "weight", "price"}
    table = runner.invoke(app, ["check", "--store", str(path)])
    assert table.exit_code == 1 and "2 in interactions.weight" in table.output


def test_training_skips_stored_bad_rows_with_a_warning(known_store: Path, tmp_path: Path) -> None:
    path = _poisoned(known_store, tmp_path)
    config = known_answer_config(
        meta={"first_order": True, "meta_steps": 3, "meta_batch_size": 4, "inner_steps": 1}
    )
    with (
        Store.open(path, read_only=True) as store,
        pytest.warns(UserWarning, match=r"2 in interactions.weight.*metarec check --store"),
    ):
        model = train(store, config, progress=False)
    assert all(bool(p.isfinite().all()) for p in model.params.values())
