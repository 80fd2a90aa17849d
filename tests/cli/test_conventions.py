"""The CLI behaves like the rest of a team's tools: fast help, --version, --json, sorting,
--quiet, and whole progress lines when stderr is not a terminal."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metarec import __version__
from metarec.cli import app
from metarec.progress import PlainProgress, progress_bar

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_version_prints_the_installed_version() -> None:
    assert _ok("--version").strip() == f"metarec {__version__}"


def _modules_after(code: str) -> set[str]:
    """Top-level modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(done.stdout.split()[-1000:])


def test_help_and_version_import_no_heavy_library() -> None:
    loaded = _modules_after(
        "from typer.testing import CliRunner\nfrom metarec.cli import app\n"
        "CliRunner().invoke(app, ['--help']); CliRunner().invoke(app, ['--version'])"
    )
    assert not loaded & {"torch", "pandas", "sklearn", "scipy", "implicit", "fastapi", "duckdb"}


def test_categories_reads_the_store_without_torch(known_store: Path) -> None:
    loaded = _modules_after(
        "from typer.testing import CliRunner\nfrom metarec.cli import app\n"
        f"r = CliRunner().invoke(app, ['categories', '--store', {str(known_store)!r}])\n"
        "assert r.exit_code == 0, r.output"
    )
    assert "duckdb" in loaded  # it did read the store
    heavy = {"torch", "sklearn", "scipy", "implicit", "fastapi", "matplotlib", "pandas", "pyarrow"}
    assert not loaded & heavy


def test_categories_sort_and_json(known_store: Path) -> None:
    rows = [
        json.loads(line)
        for line in _ok("categories", "--store", str(known_store), "--json", "--sort", "users")
        .strip()
        .splitlines()
    ]
    assert len(rows) == 8
    keys = [(-r["n_users"], r["category"]) for r in rows]
    assert keys == sorted(keys)  # most users first, ties by name
    by_name = [
        json.loads(line)["category"]
        for line in _ok("categories", "--store", str(known_store), "--json").splitlines()
    ]
    assert by_name == sorted(by_name)
    table = _ok("categories", "--store", str(known_store), "--sort", "positives")
    shown = [line.split("│")[1].strip() for line in table.splitlines() if "Shelf > C" in line]
    by_positives = [
        json.loads(line)["category"]
        for line in _ok(
            "categories", "--store", str(known_store), "--json", "--sort", "positives"
        ).splitlines()
    ]
    assert shown == by_positives  # the table and the JSON agree on the order
    refused = runner.invoke(app, ["categories", "--store", str(known_store), "--sort", "size"])
    assert refused.exit_code == 2
    assert "--sort must be one of category, items, users, positives" in refused.output


def test_ingest_json_and_quiet(tmp_path: Path) -> None:
    from tests.conftest import write_known_answer_tables

    tables = write_known_answer_tables(tmp_path / "tables")
    store = str(tmp_path / "store.duckdb")
    args = ["ingest", str(tables), "--store", store, "--format", "table", "--json", "--quiet"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["interactions"]["inserted"] > 0 and report["interactions"]["bad"] == 0
    assert report["items"]["inserted"] == 320
    again = json.loads(_ok(*args))
    assert again["interactions"]["inserted"] == 0  # idempotent, and still machine-readable
    assert again["interactions"]["unchanged"] == report["interactions"]["inserted"]


def test_plain_progress_writes_whole_lines_at_tenths() -> None:
    stream = io.StringIO()
    bar = PlainProgress(100, "meta-train", every_seconds=0.0, stream=stream)
    for _ in range(100):
        bar.update()
        bar.set_postfix(loss="0.5000")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 10  # one per tenth, the last one at 100/100
    assert lines[0].startswith("meta-train 10/100 (10%)") and "ETA" in lines[0]
    assert lines[-1].startswith("meta-train 100/100 (100%)") and lines[-1].endswith("loss=0.5000")


def test_plain_progress_is_throttled_but_always_ends() -> None:
    stream = io.StringIO()
    with PlainProgress(1000, "ingest", every_seconds=3600, stream=stream) as bar:
        for _ in range(1000):
            bar.update()
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["ingest 100/1000", "ingest 1000/1000"]


def test_progress_bar_picks_lines_off_a_terminal_and_nothing_when_disabled() -> None:
    assert isinstance(progress_bar(10, "x", stream=io.StringIO()), PlainProgress)
    silent = io.StringIO()
    with progress_bar(10, "x", enabled=False, stream=silent) as bar:
        bar.update(10)
    assert silent.getvalue() == ""


def test_category_counts_twin_equals_the_catalogue(tmp_path: Path) -> None:
    """The SQL counts `categories` prints equal Catalog.category_table under every rule:
    ratings against the threshold, events, events without a name, repeated positives, a
    category without positives, and a stored row with an out-of-range weight."""
    import pandas as pd

    from metarec.config import FeedbackConfig
    from metarec.data import Catalog, Store, ingest
    from metarec.data.counts import category_counts

    folder = tmp_path / "tables"
    folder.mkdir()
    items = [(f"i{n}", f"Cat > {'ABC'[n % 3]}") for n in range(9)] + [("lonely", "Cat > Empty")]
    pd.DataFrame(items, columns=["item_id", "category"]).to_csv(folder / "items.csv", index=False)
    rows = []
    for user in range(12):
        for n in range(9):
            if (user + n) % 3 == 0:
                rating = float((user * n) % 5 + 1) if user % 2 else None
                event = [None, "view", "order", "click"][(user + n) % 4]
                rows.append((f"u{user}", f"i{n}", 1_600_000_000 + user * 10 + n, rating, event))
                rows.append((f"u{user}", f"i{n}", 1_600_000_500 + n, None, "order"))  # again
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "event"])
    frame.to_csv(folder / "interactions.csv", index=False)
    store_path = tmp_path / "store.duckdb"
    ingest(folder, store_path, fmt="table")
    with Store.open(store_path) as store:  # a row stored before ingest checked ranges
        store.connection.execute(
            "INSERT INTO interactions VALUES ('bad', 0, 1, 1600000000, 5.0, 'order', 1e39)"
        )
    configs = [
        FeedbackConfig(),
        FeedbackConfig(positive_threshold=3.0, positive_events=("order",)),
        FeedbackConfig(positive_events=()),
        FeedbackConfig(positive_threshold=5.0, positive_events=("click", "view")),
    ]
    with Store.open(store_path, read_only=True) as store:
        for config in configs:
            expected = Catalog.load(store, config).category_table
            rows = list(expected.itertuples(index=False, name=None))
            assert [tuple(row) for row in category_counts(store, config)] == rows, config
        assert expected.set_index("category").loc["Cat > Empty", "n_positives"] == 0


def test_progress_off_a_terminal_is_whole_lines(tmp_path: Path) -> None:
    """`metarec ingest` with stderr in a pipe (a CI log): progress lines, never a redrawn bar."""
    from tests.conftest import write_known_answer_tables

    tables = write_known_answer_tables(tmp_path / "tables")
    metarec = str(Path(sys.executable).with_name("metarec"))
    done = subprocess.run(
        [metarec, "ingest", str(tables), "--store", str(tmp_path / "s.duckdb"), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("ingest ") for line in lines)
    assert lines[-1].startswith("ingest 4/4 (100%)")
    assert json.loads(done.stdout)["interactions"]["inserted"] > 0  # stdout: only the JSON


def test_the_script_makes_openmp_threads_wait_passively(monkeypatch: pytest.MonkeyPatch) -> None:
    """``metarec`` sets OMP_WAIT_POLICY before any command imports torch, unless it is set."""
    import metarec.cli as cli

    monkeypatch.setattr(cli, "app", lambda: None)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cli.main()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # the caller's choice stands
    monkeypatch.delenv("OMP_WAIT_POLICY")
    cli.main()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_categories_of_an_export_folder_match_the_store(known_store: Path, tmp_path: Path) -> None:
    """An export folder is counted through the catalogue (pandas), a store file in DuckDB: the
    same rows, in the same order, under every sort."""
    folder = tmp_path / "export"
    _ok("export", "--store", str(known_store), "--out", str(folder))
    for sort in ("category", "users"):
        from_store = _ok("categories", "--store", str(known_store), "--json", "--sort", sort)
        from_export = _ok("categories", "--store", str(folder), "--json", "--sort", sort)
        assert from_export == from_store and len(from_store.splitlines()) == 8
