"""The bad-row report of a load: line numbers, the CSV beside the store, the refusal message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.readers import line_numbers
from metarec.data.schema import BadRow, LoadReport, SourceFile

_SHOWN_BAD_ROWS = 5


def _bad_rows(parts: list[pd.DataFrame], files: dict[str, SourceFile]) -> list[BadRow]:
    """Turn bad-row marks into BadRows with line numbers (one scan of each file involved)."""
    if not parts:
        return []
    marks = pd.concat(parts, ignore_index=True)
    lines = np.empty(len(marks), dtype=np.int64)
    for file, group in marks.groupby("file", sort=False):
        source = files.get(str(file), SourceFile(str(file), "frame"))
        lines[group.index.to_numpy()] = line_numbers(source, group["row"].to_numpy())
    marks["line"] = lines
    marks = marks.sort_values(["file", "line"], kind="stable")
    return [
        BadRow(int(line), str(file), str(column), str(reason), value)
        for line, file, column, reason, value in marks[
            ["line", "file", "column", "reason", "value"]
        ].itertuples(index=False)
    ]


def _write_bad_rows(rows: list[BadRow], store_path: Path) -> Path | None:
    path = store_path.with_name(store_path.name + ".bad-rows.csv")
    if not path.parent.is_dir():
        return None
    frame = pd.DataFrame(
        [(r.line, r.file, r.column, r.reason, r.value) for r in rows],
        columns=["line", "file", "column", "reason", "value"],
    )
    frame.to_csv(path, index=False)
    return path


def _bad_rows_message(report: LoadReport) -> str:
    rows = report.bad_rows
    shown = "; ".join(row.describe() for row in rows[:_SHOWN_BAD_ROWS])
    more = f" (and {len(rows) - _SHOWN_BAD_ROWS} more)" if len(rows) > _SHOWN_BAD_ROWS else ""
    where = f"; full list in {report.report_path}" if report.report_path else ""
    return (
        f"{len(rows)} bad row(s), nothing was loaded (the store is unchanged): {shown}{more}"
        f"{where}. Fix these rows, or load the rest with skip_bad_rows=True "
        "(CLI: --skip-bad-rows)."
    )
