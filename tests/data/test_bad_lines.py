"""A JSON-lines file whose last line was cut off: the broken line is a bad row at its line
number (skipped with ``skip_bad_rows``), not a refusal of the whole file by character position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarec.data import Store, ingest
from metarec.errors import BadRowsError


def _tables(folder: Path, *, cut: bool) -> Path:
    folder.mkdir()
    items = [{"item_id": f"i{n}", "category": "Toys"} for n in range(3)]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    rows = [
        {"user_id": f"u{n}", "item_id": f"i{n % 3}", "timestamp": 1_700_000_000 + n}
        for n in range(5)
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, "")  # a blank line: not a record, but it counts in line numbers
    text = "\n".join(lines) + "\n"
    if cut:
        text = text[: -len(lines[-1]) // 2 - 1]  # the last line loses its second half
    (folder / "interactions.jsonl").write_text(text)
    return folder


def test_a_truncated_last_line_is_a_bad_row_at_its_line(tmp_path: Path) -> None:
    tables = _tables(tmp_path / "cut", cut=True)
    with pytest.raises(BadRowsError) as refused:
        ingest(tables, tmp_path / "refused.duckdb", fmt="table")
    (bad,) = refused.value.report.bad_rows  # type: ignore[attr-defined]
    assert bad.file.endswith("interactions.jsonl") and bad.line == 6
    assert "truncated" in bad.reason
    assert "interactions.jsonl:6" in str(refused.value)

    report = ingest(tables, tmp_path / "s.duckdb", fmt="table", skip_bad_rows=True)
    assert [row.line for row in report.bad_rows] == [6]
    with Store.open(tmp_path / "s.duckdb", read_only=True) as store:
        assert store.stats()["n_interactions"] == 4


def test_an_intact_file_loads_whole(tmp_path: Path) -> None:
    report = ingest(_tables(tmp_path / "ok", cut=False), tmp_path / "s.duckdb", fmt="table")
    assert report.bad_rows == [] and report.interactions.inserted == 5
