"""detect-series on hostile files and options (issue 26, item 2), beside tests/detect/test_series_fuzz.py (which
varies the rows of a well-shaped CSV): bytes that are no UTF-8, a BOM, NUL bytes, other delimiters, quoted and
duplicate headers, missing or renamed columns, extra and short rows, CRLF, huge cells, no file, a folder; and
hostile column names and timestamp policies. Each gives an answer (exit 0, JSON) or one line of error (exit 1)."""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from typer.testing import CliRunner

from obslab.cli import app
from tests.fuzzing import examples

runner = CliRunner()
ROWS = [f"2026-01-05T{h:02d}:{m:02d}:00Z,{100 + (h * 7 + m) % 13}" for h in range(6) for m in range(0, 60, 10)]


@st.composite
def hostile_files(draw) -> bytes:
    """A CSV file's bytes, bent in up to three ways (bytes and line ends: MANGLE)."""
    header, rows = "time,value", list(ROWS[: draw(st.integers(0, len(ROWS)))])
    for how in draw(st.lists(st.sampled_from([
        "semicolon", "tab", "quoted", "duplicate_header", "renamed", "no_header", "extra_column", "short_row",
        "long_row", "huge_cell", "blank_lines", "unicode_header", "only_commas",
    ]), min_size=0, max_size=3, unique=True)):
        if how == "semicolon":
            header, rows = header.replace(",", ";"), [r.replace(",", ";") for r in rows]
        elif how == "tab":
            header, rows = header.replace(",", "\t"), [r.replace(",", "\t") for r in rows]
        elif how == "quoted":
            header, rows = '"time","value"', [f'"{r.split(",")[0]}","{r.split(",")[-1]}"' for r in rows]
        elif how == "duplicate_header":
            header, rows = header + ",value", [r + ",1" for r in rows]
        elif how == "renamed":
            header = "Time,Value"
        elif how == "no_header":
            header = rows.pop(0) if rows else ""
        elif how == "extra_column":
            header, rows = header + ",note", [r + ',"a, ""quoted"" note"' for r in rows]
        elif how == "short_row" and rows:
            rows[draw(st.integers(0, len(rows) - 1))] = "2026-01-05T09:00:00Z"
        elif how == "long_row" and rows:
            rows[draw(st.integers(0, len(rows) - 1))] += ",1,2,3"
        elif how == "huge_cell" and rows:
            rows[draw(st.integers(0, len(rows) - 1))] = "2026-01-05T09:00:00Z," + "9" * 200_000
        elif how == "blank_lines":
            rows = [r for row in rows for r in (row, "", " ")]
        elif how == "unicode_header":
            header = header.replace("time", "tïme🚀")
        elif how == "only_commas":
            rows = [",,,"] * 5
    return (header + "\n" + "\n".join(rows) + "\n").encode()


MANGLE = st.sampled_from(["none"] * 8 + ["bom", "latin1", "nul", "crlf", "cr", "binary", "truncated"])


def _mangle(data: bytes, how: str) -> bytes:
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "latin1":
        return data.replace(b"time", "tîme".encode("latin-1"), 1)  # no UTF-8
    if how == "nul":
        return data[: len(data) // 2] + b"\x00" + data[len(data) // 2:]
    if how == "crlf":
        return data.replace(b"\n", b"\r\n")
    if how == "cr":
        return data.replace(b"\n", b"\r")
    if how == "binary":
        return bytes(range(256)) * 4
    if how == "truncated":
        return data[: max(0, len(data) - 7)]
    return data


COLUMNS = st.sampled_from(["time", "value", "Time", "", " ", "tïme🚀", "time,value", "\x00", "nope"])


@pytest.mark.fuzz
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
@given(data=hostile_files(), how=MANGLE, time_col=st.sampled_from(["time"] * 9) | COLUMNS,
       value_col=st.sampled_from(["value"] * 9) | COLUMNS,
       timestamps=st.sampled_from(["mean"] * 6 + ["strict", "last", "MEAN", "median", ""]),
       where=st.sampled_from(["file"] * 8 + ["none", "folder"]))
def test_any_file_gives_an_answer_or_one_line_of_error(tmp_path, data, how, time_col, value_col, timestamps, where):
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "series.csv"  # tmp_path is shared by the examples
    if where == "file":
        path.write_bytes(_mangle(data, how))
    elif where == "folder":
        path.mkdir(exist_ok=True)
    args = ["detect-series", "--csv", str(path), "--time-col", time_col, "--value-col", value_col,
            "--timestamps", timestamps, "--json"]
    out = runner.invoke(app, args)
    # An exception other than the exit typer raises is a crash (CliRunner keeps it, with its traceback).
    assert out.exception is None or isinstance(out.exception, SystemExit), (data[:300], how, out.exc_info)
    assert "Traceback" not in out.output
    event(f"exit {out.exit_code}")  # --hypothesis-show-statistics: how many answered, how many refused
    if out.exit_code == 0:
        json.loads(out.stdout)
    else:
        lines = out.stderr.strip().splitlines()
        assert out.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), out.output
