"""Reading a metric series from a CSV file: validated points, one per instant, ascending.

- Time stamps. By default rows are sorted by instant and rows sharing an instant are combined
  (mean; or sum, first, last): a daylight-saving repeat or a late row is a thing a user can mean,
  and the summary says how many rows were moved or combined. `strict` refuses both, naming the
  row. Times with different UTC offsets compare as instants; a file that mixes times with and
  without an offset is refused (it has no single meaning).
- Values. An empty cell or NaN is a missing value: the row is left out (a gap) and counted. An
  infinity, a non-number, or a magnitude beyond MAX_MAGNITUDE is refused, naming the row.

Input errors name the column or the row (1 = the first data row) and say what to do.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from obslab.errors import ObslabError

TIMESTAMP_POLICIES = ("mean", "sum", "first", "last", "strict")
# Squares and sums of squares of the values must stay finite in float64 (max about 1.8e308).
MAX_MAGNITUDE = 1e150
MISSING = ("", "nan", "na", "null", "none")  # cell texts (any case) read as "no value here"


class SeriesError(ObslabError):
    """A metric series file cannot be used; names the column or row and why."""


@dataclass(frozen=True)
class Series:
    """The points of a file, one per instant, ascending, and what reading them changed."""

    texts: list[str]  # timestamp as written (the first row of an instant)
    times: list[datetime]
    values: list[float]
    rows: int  # data rows read
    reordered: int  # rows that came after a later instant
    combined: int  # rows folded into another row of the same instant
    missing: int = 0  # rows without a value (empty or NaN), left out


def read_series_csv(path: Path, time_col: str, value_col: str, timestamps: str = "mean") -> Series:
    """The file's points, validated; `timestamps` says what to do with unsorted or repeated times."""
    if timestamps not in TIMESTAMP_POLICIES:
        raise SeriesError(f"timestamp policy {timestamps!r} is not one of {', '.join(TIMESTAMP_POLICIES)}")
    rows = _rows(Path(path), time_col, value_col)
    parsed: list[tuple[str, datetime, float]] = []
    zones = _ZoneCheck(path, time_col)
    missing = 0
    for number, row in enumerate(rows, 1):
        text = (row.get(time_col) or "").strip()
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise SeriesError(f"{path}: row {number}: {time_col}={text!r} is not an ISO-8601 time "
                              "(e.g. 2026-01-05T14:00:00+00:00); fix or remove the row") from None
        zones.see(number, when, text)
        value = _value(path, number, value_col, row.get(value_col))
        if value is None:
            missing += 1
            continue
        if timestamps == "strict" and parsed:
            _strictly_after(path, number, time_col, text, when, parsed[-1][1])
        parsed.append((text, when, value))
    if not parsed:
        raise SeriesError(f"{path}: column {value_col!r} has no value in any of its {len(rows)} rows "
                          "(all empty or NaN); choose the column that holds the metric")
    return _combine(parsed, timestamps, len(rows), missing)


def _rows(path: Path, time_col: str, value_col: str) -> list[dict]:
    """The data rows as dicts, after checking the file and its header."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise SeriesError(f"{path}: the file is empty; expected a header row with {time_col!r} and "
                                  f"{value_col!r}")
            for col in (time_col, value_col):
                if col not in reader.fieldnames:
                    raise SeriesError(f"{path}: no column {col!r}; the columns are {reader.fieldnames}")
            rows = list(reader)
    except OSError as err:
        raise SeriesError(f"{path}: cannot read it: {err.strerror}") from None
    except UnicodeDecodeError:
        raise SeriesError(f"{path}: is not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as err:
        raise SeriesError(f"{path}: is not valid CSV ({err}); save it as plain comma-separated text") from None
    if not rows:
        raise SeriesError(f"{path}: has a header but no data rows")
    return rows


def _value(path: Path, number: int, value_col: str, cell: str | None) -> float | None:
    """The row's value; None when the cell holds none (empty or NaN)."""
    raw = (cell or "").strip()
    if raw.lower() in MISSING:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SeriesError(f"{path}: row {number}: {value_col}={raw!r} is not a number; "
                          "fix it, or leave the cell empty for a missing value") from None
    if math.isnan(value):
        return None
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise SeriesError(f"{path}: row {number}: {value_col}={raw!r} is not a finite number of at most "
                          f"{MAX_MAGNITUDE:g} in magnitude; rescale the column or leave the cell empty")
    return value


class _ZoneCheck:
    """Refuses a file whose times mix ones with a UTC offset and ones without."""

    def __init__(self, path: Path, time_col: str):
        self.path, self.time_col = path, time_col
        self.aware_row: int | None = None
        self.naive_row: int | None = None

    def see(self, number: int, when: datetime, text: str) -> None:
        if when.utcoffset() is None:
            self.naive_row = self.naive_row or number
        else:
            self.aware_row = self.aware_row or number
        if self.aware_row and self.naive_row:
            other, has = ((self.aware_row, "has no") if number == self.naive_row else (self.naive_row, "has a"))
            raise SeriesError(f"{self.path}: row {number}: {self.time_col}={text!r} {has} UTC offset, unlike row "
                              f"{other}; give every time an offset (e.g. +00:00) or none")


def _strictly_after(path: Path, number: int, time_col: str, text: str, when: datetime, previous: datetime) -> None:
    if when == previous:
        raise SeriesError(f"{path}: row {number}: duplicate timestamp {text!r} (strict; the default "
                          "combines rows of the same instant by their mean)")
    if when < previous:
        raise SeriesError(f"{path}: row {number}: {text!r} is earlier than the row before; sort by "
                          f"{time_col} (strict; the default sorts)")


def _combine(parsed: list[tuple[str, datetime, float]], how: str, rows: int, missing: int) -> Series:
    """Sort by instant (stable: rows of one instant keep file order) and fold repeated instants."""
    reordered, latest = 0, None
    for _, when, _ in parsed:
        if latest is not None and when < latest:
            reordered += 1
        latest = when if latest is None or when > latest else latest
    texts, times, groups = [], [], []
    for text, when, value in sorted(parsed, key=lambda r: r[1]):
        if times and when == times[-1]:
            groups[-1].append(value)
        else:
            texts.append(text)
            times.append(when)
            groups.append([value])
    fold = {"mean": lambda g: math.fsum(g) / len(g), "sum": math.fsum, "first": lambda g: g[0],
            "last": lambda g: g[-1], "strict": lambda g: g[0]}[how]
    values = [float(fold(g)) for g in groups]
    if any(abs(v) > MAX_MAGNITUDE for v in values):
        raise SeriesError(f"rows of one instant add up beyond {MAX_MAGNITUDE:g}; use --timestamps mean, or "
                          "rescale the column")
    return Series(texts, times, values, rows, reordered, len(parsed) - len(times), missing)
