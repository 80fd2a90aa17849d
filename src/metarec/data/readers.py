"""Read one file (CSV, TSV, Parquet, JSON lines; optionally gzip-compressed) into a raw frame.

Readers do no validation: delimited files are read with every column as text (so that a bad
number is reported, not guessed), Parquet and JSON keep their own types. Each frame gets the
``_file`` and ``_row`` columns; a record's line number is worked out only when a bad row needs
it (:func:`record_lines`), so the fast path never scans a file twice.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from metarec.data.schema import FILE_COLUMN, ROW_COLUMN, FileKind, SourceFile
from metarec.errors import DataError

TABLE_EXTENSIONS: dict[str, FileKind] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
}
"""Extensions of the generic table format (each may also end in ``.gz``, except Parquet)."""

_CHUNK = 1 << 20
BAD_JSON_COLUMN = "(json)"
"""Column of a JSON-lines frame holding the raw text of lines that are not JSON objects (a
truncated last line, say); validation marks those rows bad, so ``skip_bad_rows`` skips them."""


def table_kind(path: Path) -> FileKind | None:
    """The layout of a generic table file from its extension, or None if it is not one."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes:
        return None
    kind = TABLE_EXTENSIONS.get(suffixes[-1])
    if kind == "parquet" and path.suffix.lower() == ".gz":
        return None  # Parquet compresses itself; a gzipped Parquet file is a mistake
    return kind


def table_stem(path: Path) -> str:
    """The file name without its table extension(s): ``items.csv.gz`` gives ``items``."""
    name = path.name
    lowered = name.lower()
    if lowered.endswith(".gz"):
        name, lowered = name[:-3], lowered[:-3]
    for ext in TABLE_EXTENSIONS:
        if lowered.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def read_file(
    path: Path,
    kind: FileKind,
    *,
    names: Sequence[str] | None = None,
    schema: pa.Schema | None = None,
    what: str = "table",
) -> tuple[pd.DataFrame, SourceFile]:
    """Read a file into a raw frame with ``_file`` and ``_row`` columns.

    Args:
        path: the file.
        kind: its layout. ``csv`` is comma-separated and honours double quotes; ``tsv`` is
            tab-separated with no quoting (titles may contain quote characters).
        names: column names for a delimited file without a header line.
        schema: for JSON lines of a known layout, the fields to keep and their types: read by
            Arrow's multi-threaded parser, other fields skipped (falls back to the generic reader
            when a value does not fit).
        what: what the file is for, used in error messages (``interactions``, ``items``...).

    Returns:
        The frame (delimited files: every column as text, missing values as empty strings) and
        the :class:`SourceFile` describing it.

    Raises:
        DataError: the file is missing, unreadable, empty, or has duplicate column names.
    """
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist or is not a file")
    source = SourceFile(str(path), kind, header=names is None)
    try:
        if kind in ("csv", "tsv"):
            frame = _read_delimited(path, kind, names)
        elif kind == "parquet":
            frame = pq.read_table(path).to_pandas()
        elif kind == "jsonl":
            frame = _read_json_lines(path, schema)
        else:  # pragma: no cover - "frame" sources are never files
            raise DataError(f"cannot read {path}: unsupported layout {kind!r}")
    except DataError:
        raise
    except (OSError, ValueError, pa.ArrowException, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read {what} file {path} as {kind.upper()}: {exc}. Check that the "
            "extension matches the content, that text is UTF-8, and that every row has as many "
            "fields as the header (a missing value is an empty field)."
        ) from exc
    if len(frame) == 0:
        raise DataError(
            f"{what} file {path} is empty (no data rows); remove it or add rows below the header"
        )
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{what} file {path} repeats column(s) {duplicated}; rename them")
    frame[FILE_COLUMN] = source.path
    frame[ROW_COLUMN] = np.arange(len(frame), dtype=np.int64)
    return frame, source


def _read_delimited(path: Path, kind: FileKind, names: Sequence[str] | None) -> pd.DataFrame:
    delimiter = "," if kind == "csv" else "\t"
    quote: str | bool = '"' if kind == "csv" else False
    if path.stat().st_size == 0:
        return pd.DataFrame()
    header = list(names) if names is not None else _read_header(path, delimiter, kind == "csv")
    if not header:
        return pd.DataFrame()
    table = pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=header, skip_rows=0 if names else 1),
        parse_options=pa_csv.ParseOptions(
            delimiter=delimiter, quote_char=quote, newlines_in_values=kind == "csv"
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
        ),
    )
    return table.to_pandas()


def _read_header(path: Path, delimiter: str, quoted: bool) -> list[str]:
    with _open_text(path) as handle:
        reader = csv.reader(
            handle, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
        )
        first = next(reader, [])
    return [name.strip().lstrip("\ufeff") for name in first]


def _read_json_lines(path: Path, schema: pa.Schema | None) -> pd.DataFrame:
    if path.stat().st_size == 0:
        return pd.DataFrame()
    if schema is not None:
        try:
            options = pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            )
            table = pa_json.read_json(path, parse_options=options)
            # A field absent from every line comes back all null: drop it, as if not asked for.
            present = [c for c in table.column_names if table.column(c).null_count < len(table)]
            return table.select(present).to_pandas()
        except pa.ArrowInvalid:
            pass  # a value of another type: read it the generic way, to report it as bad
    # pandas keeps each value's JSON type per row (a timestamp column may mix numbers and ISO
    # strings) where pyarrow's reader refuses a column that changes type.
    try:
        return pd.read_json(path, lines=True, dtype=False)  # dtype=False: no date guessing
    except ValueError:
        return _read_json_lines_one_by_one(path)


def _read_json_lines_one_by_one(path: Path) -> pd.DataFrame:
    """Each non-blank line parsed alone: a line that is not a JSON object becomes a row with
    only :data:`BAD_JSON_COLUMN` (its text), reported as a bad row at its line number."""
    records: list[dict[str, object]] = []
    with _open_text(path) as handle:
        for line in handle:
            if not line.strip():
                continue  # blank lines are not records (as record_lines counts them)
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                record = {BAD_JSON_COLUMN: line.strip()}
            records.append(record)
    if all(BAD_JSON_COLUMN in r for r in records):
        raise DataError(
            f"cannot read {path} as JSON lines: no line is a JSON object (one object per line, "
            'e.g. {"user_id": "u1", "item_id": "i1"})'
        )
    return pd.DataFrame.from_records(records)


@contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    if path.suffix.lower() == ".gz":
        with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as handle:
            yield handle
    else:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            yield handle


def record_lines(source: SourceFile) -> np.ndarray:
    """The 1-based line number where each data record of a file starts.

    Blank lines are skipped by the readers, and a quoted CSV value may span lines, so a record's
    index alone does not give its line: this scans the file once (only called to report bad
    rows). Parquet files and in-memory frames have no lines: their row numbers (1-based) are used.

    Returns:
        ``lines[r]`` is the line of record ``r``: (n_records,) int64.
    """
    path = Path(source.path)
    if source.kind in ("parquet", "frame") or not path.is_file():
        return np.empty(0, dtype=np.int64)  # callers fall back to row + 1
    starts: list[int] = []
    with _open_text(path) as handle:
        if source.kind == "jsonl":
            starts = [n for n, line in enumerate(handle, start=1) if line.strip()]
        else:
            reader = csv.reader(
                handle,
                delimiter="," if source.kind == "csv" else "\t",
                quoting=csv.QUOTE_MINIMAL if source.kind == "csv" else csv.QUOTE_NONE,
            )
            previous_end = 0
            for record in reader:
                if record:
                    starts.append(previous_end + 1)
                previous_end = reader.line_num
    lines = np.asarray(starts, dtype=np.int64)
    return lines[1:] if source.header and source.kind != "jsonl" else lines


def line_numbers(source: SourceFile, rows: np.ndarray) -> np.ndarray:
    """Line numbers of some records of one file (``rows``: 0-based record indices)."""
    lines = record_lines(source)
    rows = np.asarray(rows, dtype=np.int64)
    if len(lines) == 0:
        return rows + 1
    inside = rows < len(lines)
    return np.where(inside, lines[np.minimum(rows, len(lines) - 1)], rows + 1)


def files_sha256(paths: Sequence[Path]) -> str:
    """One sha256 over the contents of several files, in the given order (a load's fingerprint)."""
    digest = hashlib.sha256()
    for path in paths:
        file_digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                file_digest.update(chunk)
        digest.update(file_digest.digest())
    return digest.hexdigest()
