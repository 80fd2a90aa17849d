"""The ``metarec`` command through typer's runner: the happy path and its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import KNOWN_HELD_OUT, write_known_answer_tables
from typer.testing import CliRunner

from metarec.cli import app

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_ingest_train_adapt_recommend(tmp_path: Path) -> None:
    tables = write_known_answer_tables(tmp_path / "tables")
    store, model = str(tmp_path / "store.duckdb"), str(tmp_path / "model")
    config = tmp_path / "small.toml"
    config.write_text(
        "[tasks]\nshots = 3\ntrain_shots = [1, 3]\nmin_users = 10\n"
        "[model]\nhidden = [16, 8]\n[features]\ncf_rank = 4\n"
        "[meta]\nmeta_batch_size = 4\ninner_steps = 1\n"
    )
    _ok("ingest", str(tables), "--store", store, "--format", "table")
    assert "Shelf > C7" in _ok("categories", "--store", store)
    out = _ok(
        "train",
        "--store",
        store,
        "--out",
        model,
        "--config",
        str(config),
        "--hold-out",
        KNOWN_HELD_OUT,
        "--steps",
        "3",
        "--first-order",
        "--quiet",
    )
    assert "1 held out" in out

    not_adapted = runner.invoke(
        app,
        [
            "recommend",
            "--model",
            model,
            "--store",
            store,
            "--category",
            KNOWN_HELD_OUT,
            "--user",
            "u1",
        ],
    )
    # not adapted yet: ranked by the meta-initialisation, and the fallback says so (as HTTP)
    assert not_adapted.exit_code == 0
    assert "fallback: zero-shot" in not_adapted.output

    assert "version 1" in _ok(
        "adapt", "--model", model, "--store", store, "--category", KNOWN_HELD_OUT
    )
    payload = json.loads(
        _ok(
            "recommend",
            "--model",
            model,
            "--store",
            store,
            "--category",
            KNOWN_HELD_OUT,
            "--user",
            "u1",
            "-k",
            "4",
            "--json",
        )
    )
    assert payload["fallback"] is None and len(payload["items"]) == 4
    table = _ok(
        "recommend",
        "--model",
        model,
        "--store",
        store,
        "--category",
        KNOWN_HELD_OUT,
        "--user",
        "someone-new",
        "-k",
        "2",
    )
    assert "fallback: popularity" in table

    unknown = runner.invoke(
        app, ["recommend", "--model", model, "--store", store, "--category", "Nope", "--user", "u1"]
    )
    assert unknown.exit_code == 2 and "not in the store" in unknown.output


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "interactions.csv").write_text("user_id,timestamp\nu1,5\n")
    result = runner.invoke(
        app,
        [
            "ingest",
            str(tmp_path / "bad"),
            "--store",
            str(tmp_path / "s.duckdb"),
            "--format",
            "table",
        ],
    )
    assert result.exit_code == 2
    assert "item_id" in result.output
    assert "Traceback" not in result.output

    missing = runner.invoke(app, ["categories", "--store", str(tmp_path / "none.duckdb")])
    assert missing.exit_code == 2 and "metarec ingest" in missing.output

    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[meta]\nalgoritm = 'maml'\n")
    result = runner.invoke(
        app,
        [
            "train",
            "--store",
            str(tmp_path / "s.duckdb"),
            "--out",
            str(tmp_path / "m"),
            "--config",
            str(bad_config),
        ],
    )
    assert result.exit_code == 2 and "algoritm" in result.output


def test_simulate_writes_the_generic_tables(tmp_path: Path) -> None:
    _ok("simulate", "--out", str(tmp_path / "sim"), "--seed", "3")
    for name in ("items.csv", "interactions.csv", "users.csv", "categories.csv", "metarec.toml"):
        assert (tmp_path / "sim" / name).is_file()
