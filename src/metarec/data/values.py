"""Raw values to typed columns: ids, free text, numbers, times, other attributes as JSON."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.limits import NUMBER_LIMITS

# Text a number or time column may hold to mean "no value" (ids never: "NA" can be an id).
_MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none")
# Beyond this a time value is not a time at all (even in microseconds): a bad row.
MAX_TIME_VALUE = 10**17


def _ids(column: pd.Series) -> pd.Series:
    """External ids as text, stripped; missing (or empty) as NaN. Integral numbers lose ``.0``."""
    if pd.api.types.is_float_dtype(column.dtype):
        finite = column.dropna()
        if (finite == np.floor(finite)).all():
            column = column.astype("Int64")
    if pd.api.types.is_object_dtype(column.dtype):
        column = column.map(_id_text, na_action="ignore")
    text = column.astype("str").str.strip()
    return text.where(text != "")


def _id_text(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


def _text(column: pd.Series) -> pd.Series:
    """Free text, stripped; missing or empty as NaN."""
    text = column.astype("str").str.strip()
    return text.where(text != "")


def _nulls(n: int) -> pd.Series:
    return pd.Series([None] * n, dtype="str")


def _missing(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The column as stripped text, and where it holds no value (NaN or a missing token)."""
    text = column.astype("str").str.strip()
    return text, column.isna() | text.str.lower().isin(_MISSING_TOKENS)


def _numbers(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse a number column. Returns (float64 values, NaN when missing; bad-row mask).

    Non-finite values are bad rows; the range is checked separately (:func:`_out_of_range`).
    """
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        values = column.astype("float64")
        return values, (values.notna() & ~np.isfinite(values)).to_numpy()
    text, missing = _missing(column)
    values = pd.to_numeric(text.where(~missing), errors="coerce").astype("float64")
    bad = ~missing & ~np.isfinite(values.fillna(np.inf))
    return values.where(~bad), bad.to_numpy()


def _out_of_range(values: pd.Series, name: str) -> np.ndarray:
    """Rows whose (finite) value lies outside ``NUMBER_LIMITS[name]``; missing values are fine."""
    low, high = NUMBER_LIMITS[name]
    return (values.notna() & ((values < low) | (values > high))).to_numpy()


def _times(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse a time column: unix seconds (int or float) or ISO-8601 text (naive means UTC).

    Returns:
        Int64 unix seconds (<NA> when missing), and the bad-row mask.
    """
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return _seconds(pd.to_datetime(column, utc=True)), np.zeros(len(column), dtype=bool)
    iso = pd.Series(False, index=column.index)
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column):
        numbers = column.astype("float64")
        present = numbers.notna()
    else:
        text, missing = _missing(column)
        numbers = pd.to_numeric(text.where(~missing), errors="coerce").astype("float64")
        present = ~missing
        iso = present & numbers.isna()
    in_range = np.isfinite(numbers.fillna(np.inf)) & (numbers.abs() < MAX_TIME_VALUE)
    seconds = np.floor(numbers.where(in_range)).astype("Int64")
    if iso.any():
        parsed = pd.to_datetime(text[iso], format="ISO8601", utc=True, errors="coerce")
        seconds[iso] = _seconds(parsed)
    return seconds, (present & seconds.isna()).to_numpy()


def _seconds(times: pd.Series) -> pd.Series:
    return ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("Int64")


def _repeated(keys: pd.Series) -> pd.Series:
    """Rows whose (non-missing) key already appeared earlier in the load."""
    return keys.notna() & keys.duplicated(keep="first")


def _extra_json(raw: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Other attributes as one JSON object per row (sorted keys, missing values left out)."""
    if not columns:
        return _nulls(len(raw)).set_axis(raw.index)
    records = raw[columns].to_dict("records")
    texts = []
    for record in records:
        kept = {str(k): v for k, v in record.items() if not _is_missing(v)}
        texts.append(
            json.dumps(kept, sort_keys=True, ensure_ascii=False, default=_jsonable)
            if kept
            else None
        )
    return pd.Series(texts, index=raw.index, dtype="str")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, list | tuple | dict | np.ndarray):
        return len(value) == 0
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return str(value)


def _shown(value: Any) -> str | None:
    if _is_missing(value):
        return None
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."
