"""The only code that opens DuckDB: migrations, reads, writes and the lock policy.

DuckDB lets one process open a file read-write, or many processes open it read-only, never both
at once. Several processes share the lab's file (stream sink, detector, narrator, dashboard,
scheduled notebooks), so every operation here opens the file, does one short transaction and
closes it again. When another process holds the file, the open is retried with jittered
exponential backoff up to `store_lock_timeout_seconds`; only then does a `StoreLockedError`
reach the caller, naming the process that holds the file. Do not nest a read inside a write
(or the reverse) in one process: DuckDB refuses two configurations of one file per process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psutil

from obslab.errors import SchemaError, StoreError, StoreLockedError
from obslab.retry import call_with_retries
from obslab.schema import TABLES, Table
from obslab.settings import Settings

log = logging.getLogger(__name__)

_LOCK_MESSAGE = re.compile(r"Could not set lock on file|Conflicting lock", re.IGNORECASE)
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")


# ------------------------------------------------------------------------- migrations
# Each migration runs once, in order, inside one transaction; the applied versions are kept in
# schema_migrations. Migration 1 creates the tables as `obslab.schema` defines them now, so a
# later migration that adds a column must use ADD COLUMN IF NOT EXISTS (a new file already has it).

def _migration_1() -> list[str]:
    return [table.ddl() for table in TABLES.values()]


def _migration_2() -> list[str]:
    from obslab.schema import LATENCY_HISTOGRAMS, STREAM_BATCHES, STREAM_STATE

    return [
        "ALTER TABLE endpoint_metrics ADD COLUMN IF NOT EXISTS latency_sum_ms DOUBLE",
        LATENCY_HISTOGRAMS.ddl(),
        STREAM_BATCHES.ddl(),
        STREAM_STATE.ddl(),
    ]


def _migration_3() -> list[str]:
    from obslab.schema import INCIDENTS

    return [INCIDENTS.ddl()]


def _migration_4() -> list[str]:
    from obslab.schema import STATUS_COUNTS

    return [
        STATUS_COUNTS.ddl(),
        "ALTER TABLE incident_summaries ADD COLUMN IF NOT EXISTS requested_backend VARCHAR",
        "ALTER TABLE incident_summaries ADD COLUMN IF NOT EXISTS attempts INTEGER",
        "ALTER TABLE incident_summaries ADD COLUMN IF NOT EXISTS fallback_reason VARCHAR",
    ]


def _migration_5() -> list[str]:
    from obslab.schema import HEALTH_CHECKS, QUALITY_CHECKS

    return [
        *(f"ALTER TABLE pipeline_runs ADD COLUMN IF NOT EXISTS {c} VARCHAR"
          for c in ("dag_id", "dag_run_id", "notebook", "output_notebook", "error")),
        HEALTH_CHECKS.ddl(),
        QUALITY_CHECKS.ddl(),
    ]


def _migration_6() -> list[str]:
    from obslab.schema import STREAM_ENDPOINTS, STREAM_OFFSETS

    return [
        STREAM_OFFSETS.ddl(),
        STREAM_ENDPOINTS.ddl(),
        "ALTER TABLE stream_batches ADD COLUMN IF NOT EXISTS offsets JSON",
        "ALTER TABLE stream_batches ADD COLUMN IF NOT EXISTS endpoint_overflow BIGINT",
    ]


def _migration_7() -> list[str]:
    from obslab.schema import SERVICE_CATALOG

    return [
        "ALTER TABLE injected_incidents ADD COLUMN IF NOT EXISTS benign BOOLEAN",
        "ALTER TABLE injected_incidents ADD COLUMN IF NOT EXISTS root_cause VARCHAR",
        "ALTER TABLE injected_incidents ADD COLUMN IF NOT EXISTS cause_fault_id VARCHAR",
        "ALTER TABLE incidents ADD COLUMN IF NOT EXISTS origin_service VARCHAR",
        "ALTER TABLE incidents ADD COLUMN IF NOT EXISTS origin_reason VARCHAR",
        "ALTER TABLE incidents ADD COLUMN IF NOT EXISTS related_incidents VARCHAR",
        SERVICE_CATALOG.ddl(),
    ]


def _migration_8() -> list[str]:
    return ["ALTER TABLE stream_batches ADD COLUMN IF NOT EXISTS skipped_spans BIGINT"]


MIGRATIONS: list[tuple[int, str, Any]] = [
    (1, "create the lab tables", _migration_1),
    (2, "stream state: latency histograms, applied batches, watermark", _migration_2),
    (3, "incidents", _migration_3),
    (4, "narrator: status_counts (error mix), provenance of summaries", _migration_4),
    (5, "scheduled runs: notebook task records, health checks, data-quality checks", _migration_5),
    (6, "stream: consumed Kafka offsets, kept endpoint names, per-batch offsets and endpoint overflow", _migration_6),
    (7, "realistic traffic: benign events and root causes in ground truth, service catalogue, incident origins",
     _migration_7),
    (8, "spans: the spans a batch skipped (not SERVER: no request)", _migration_8),
]


def _describe_holder(message: str) -> str | None:
    """'PID 123 (python -m obslab stream)' from DuckDB's lock message, when it names a PID."""
    match = _HOLDER_PID.search(message)
    if not match:
        return None
    pid = match.group(1)
    try:
        cmdline = " ".join(psutil.Process(int(pid)).cmdline()).strip()
    except (psutil.Error, ValueError):
        cmdline = ""
    return f"PID {pid} ({cmdline[:120]})" if cmdline else f"PID {pid}"


class Store:
    """The lab's DuckDB file, shared safely between processes."""

    def __init__(self, path: Path | str, lock_timeout_s: float = 30.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self._held: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Store":
        return cls(settings.duckdb_path, settings.store_lock_timeout_seconds)

    # --------------------------------------------------------------- connections

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.path.exists():
            raise StoreError(
                f"no store at {self.path} yet. Run `obslab store migrate` "
                "(or start the pipeline, which creates it)."
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        def locked(err: BaseException) -> bool:
            return isinstance(err, duckdb.IOException) and bool(_LOCK_MESSAGE.search(str(err)))

        def still_waiting(err: BaseException, failed: int, _wait_s: float) -> None:
            if failed == 50:
                log.info("still waiting for %s: %s", self.path, err)

        try:
            # Full jitter keeps several waiting processes from retrying in lock-step.
            return call_with_retries(lambda: duckdb.connect(str(self.path), read_only=read_only), locked,
                                     first_wait_s=0.005, max_wait_s=0.25, within_s=self.lock_timeout_s,
                                     jitter=True, on_retry=still_waiting)
        except duckdb.IOException as err:
            message = str(err)
            if locked(err):
                raise StoreLockedError(str(self.path), self.lock_timeout_s, _describe_holder(message)) from err
            raise StoreError(f"cannot open {self.path}: {message}") from err

    @contextmanager
    def held(self) -> Iterator["Store"]:
        """Keep one read-write connection open for many operations: for a store only this process
        uses (an evaluation's scratch store), where opening the file per operation would dominate."""
        if self._held is not None:
            yield self
            return
        self._held = self._open(read_only=False)
        try:
            yield self
        finally:
            self._held.close()
            self._held = None

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for one short read; closed on exit."""
        if self._held is not None:
            yield self._held
            return
        con = self._open(read_only=True)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside one transaction: committed on exit, rolled back on error."""
        con = self._held or self._open(read_only=False)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            if con is not self._held:
                con.close()

    # --------------------------------------------------------------- schema

    def migrate(self) -> list[int]:
        """Create or upgrade the schema; returns the versions applied now (empty when current)."""
        # Asked read-only first: every detection and narration pass calls this, and a current schema
        # needs no write lock (which would shut out every reader, or fail while one reads).
        if self._applied() >= {version for version, _, _ in MIGRATIONS}:
            return []
        with self.writer() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, description VARCHAR NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
            applied = []
            for version, description, statements in MIGRATIONS:
                if version in done:
                    continue
                for sql in statements():
                    con.execute(sql)
                con.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES (?, ?)",
                    [version, description],
                )
                applied.append(version)
        if applied:
            log.info("store %s: applied migrations %s", self.path, applied)
        return applied

    def _applied(self) -> set[int]:
        """The migrations recorded in the file (none for a missing file or one without the schema)."""
        if not self.path.exists():
            return set()
        with self.reader() as con:
            if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                               ["schema_migrations"]).fetchone()[0]:
                return set()
            return {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}

    def schema_version(self) -> int:
        """Highest applied migration (0 for a file without the schema)."""
        if not self.path.exists():
            return 0
        with self.reader() as con:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", ["schema_migrations"]
            ).fetchone()[0]
            if not exists:
                return 0
            return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]

    # --------------------------------------------------------------- reads

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple]:
        """Run a parameterized read and return its rows."""
        with self.reader() as con:
            return con.execute(sql, params).fetchall()

    def query_df(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()):
        """Run a parameterized read and return a pandas DataFrame."""
        with self.reader() as con:
            return con.execute(sql, params).df()

    def count(self, table: str) -> int:
        """Rows in one of the lab's tables."""
        spec = _table(table)
        return self.query(f"SELECT count(*) FROM {spec.name}")[0][0]

    # --------------------------------------------------------------- writes

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> None:
        """Run one parameterized write statement in its own transaction."""
        with self.writer() as con:
            con.execute(sql, params)

    def upsert(self, table: str, rows) -> int:
        """Insert rows, replacing those with the same key; one bulk statement, one transaction.

        `rows` is a pyarrow Table or a pandas DataFrame whose columns are the table's columns
        (nullable ones may be left out). Returns the number of rows written.
        """
        return self.upsert_many({table: rows})[table]

    def upsert_row(self, table: str, row: dict[str, Any]) -> None:
        """Insert one row (a dict of column -> value), replacing the one with the same key."""
        self.upsert_many({table: [row]})

    def upsert_many(self, batches: dict[str, Any]) -> dict[str, int]:
        """Upsert into several tables in one transaction, so readers never see half a batch."""
        batches = {name: rows for name, rows in batches.items() if not (isinstance(rows, list) and not rows)}
        prepared = {name: _Rows.of(rows) if _is_few_dicts(rows) else _as_arrow(rows) for name, rows in batches.items()}
        for name, data in prepared.items():
            _check_columns(_table(name), data.column_names)
        written: dict[str, int] = {}
        if all(data.num_rows == 0 for data in prepared.values()):
            # Nothing to write: do not take the write lock (it would shut out every reader for nothing).
            return {name: 0 for name in prepared}
        with self.writer() as con:
            for name, data in prepared.items():
                spec = _table(name)
                if data.num_rows == 0:
                    written[name] = 0
                    continue
                cols = ", ".join(data.column_names)
                verb = "INSERT OR REPLACE" if spec.key else "INSERT"
                if isinstance(data, _Rows):
                    marks = ", ".join("?" * len(data.column_names))
                    con.executemany(f"{verb} INTO {spec.name} ({cols}) VALUES ({marks})", data.values)
                    written[name] = data.num_rows
                    continue
                con.register("incoming_rows", data)
                try:
                    con.execute(f"{verb} INTO {spec.name} ({cols}) SELECT {cols} FROM incoming_rows")
                finally:
                    con.unregister("incoming_rows")
                written[name] = data.num_rows
        return written


def _table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise SchemaError(f"unknown table {name!r}; the store has {sorted(TABLES)}") from None


# Up to this many rows given as dicts are written as parameters, not through Arrow: Arrow's conversion of
# Python rows imports pandas (1.2 s and ~40 MiB in a process that has none: the generator, the detector,
# the narrator, an Airflow task). Larger lists go through Arrow, one bulk statement.
FEW_ROWS = 1_000


def _is_few_dicts(rows) -> bool:
    return isinstance(rows, list) and len(rows) <= FEW_ROWS and all(isinstance(row, dict) for row in rows)


@dataclass
class _Rows:
    """Rows given as dicts: their columns (every key, in first-seen order) and values (None where absent)."""

    column_names: list[str]
    values: list[list[Any]]

    @classmethod
    def of(cls, rows: list[dict]) -> "_Rows":
        names = list(dict.fromkeys(key for row in rows for key in row))
        return cls(names, [[row.get(name) for name in names] for row in rows])

    @property
    def num_rows(self) -> int:
        return len(self.values)


def _as_arrow(rows):
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        return rows
    if hasattr(rows, "to_arrow"):  # polars and friends
        return rows.to_arrow()
    if hasattr(rows, "columns") and hasattr(rows, "dtypes"):  # pandas
        return pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, list):
        return pa.Table.from_pylist(rows)
    raise SchemaError(f"cannot write {type(rows).__name__}; pass a pyarrow Table, a DataFrame or a list of dicts")


def _check_columns(spec: Table, given: list[str]) -> None:
    unknown = [c for c in given if c not in spec.column_names]
    if unknown:
        raise SchemaError(f"{spec.name}: unknown column(s) {unknown}; expected some of {spec.column_names}")
    required = [c.name for c in spec.columns if (not c.nullable or c.name in spec.key) and c.name not in spec.defaults]
    missing = [c for c in required if c not in given]
    if missing:
        raise SchemaError(f"{spec.name}: missing required column(s) {missing}")
