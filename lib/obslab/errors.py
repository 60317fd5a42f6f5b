"""Typed errors. Each carries what a user needs to act, and its message says what to do."""

from __future__ import annotations


class ObslabError(Exception):
    """Base class of every error obslab raises on purpose."""


class ConfigError(ObslabError):
    """A setting has a value obslab cannot use."""


class MissingDependencyError(ObslabError):
    """Something the lab needs (Java, jars, a package) is not installed."""


class BrokerError(ObslabError):
    """The local Kafka broker could not be started, reached or stopped."""


class PortInUseError(BrokerError):
    """A port the broker needs is already taken by another process."""

    def __init__(self, port: int, setting: str):
        self.port = port
        self.setting = setting
        super().__init__(
            f"port {port} on 127.0.0.1 is already in use by another process. "
            f"Stop that process (`ss -ltnp 'sport = :{port}'` shows it) "
            f"or choose another port with {setting}=<port>."
        )


class CollectorError(ObslabError):
    """The lab's OpenTelemetry Collector could not be built, started or stopped."""


class StoreError(ObslabError):
    """The DuckDB store could not do what was asked."""


class StoreLockedError(StoreError):
    """Another process held the DuckDB file for longer than the retry bound."""

    def __init__(self, path: str, waited_s: float, holder: str | None):
        self.path = path
        self.waited_s = waited_s
        self.holder = holder
        who = f"held by {holder}" if holder else "held by another process"
        super().__init__(
            f"{path} is {who}; gave up after {waited_s:.1f} s of retries. "
            "DuckDB allows one writing process or many reading ones at a time: stop the "
            "process that keeps it open, or raise STORE_LOCK_TIMEOUT_SECONDS."
        )


class SchemaError(StoreError):
    """Data does not match the table it is written to."""


class ScenarioError(ObslabError):
    """A scenario file is not valid; names the file, the field and why."""

    def __init__(self, source: str, field: str, why: str):
        self.source = source
        self.field = field
        self.why = why
        super().__init__(f"{source}: {field}: {why}")


class StreamError(ObslabError):
    """The streaming job failed or cannot start."""


class CheckpointMismatchError(StreamError):
    """A checkpoint was written by a differently configured stream; resuming it would mix windows."""

    def __init__(self, path: str, field: str, old, new):
        self.path, self.field, self.old, self.new = path, field, old, new
        super().__init__(
            f"checkpoint {path} was made with {field.upper()}={old}, but the stream now runs with "
            f"{field.upper()}={new}. Resuming would mix windows of both. Either set {field.upper()}={old} "
            f"again, or start a fresh stream with another CHECKPOINT_NAME (or delete {path}): it resumes "
            "from the Kafka offsets the store recorded, so nothing is counted twice"
            + (" (a new WINDOW_SECONDS also needs a new store: DUCKDB_PATH)." if field == "window_seconds" else ".")
        )


class CheckpointBusyError(StreamError):
    """Another stream query already runs on this checkpoint; two would corrupt it."""

    def __init__(self, path: str, holder: str):
        self.path, self.holder = path, holder
        super().__init__(
            f"checkpoint {path} is in use by {holder}: a continuous stream (`make demo` or `obslab stream`) "
            "already runs on it, and two queries must never share a checkpoint. Stop that stream "
            "(`obslab demo-stop`), or let it do the streaming and run only detection and narration."
        )


class StoreWindowMismatchError(StreamError):
    """The store holds windows of another WINDOW_SECONDS; windows of different lengths must never merge."""

    def __init__(self, path: str, stored: list[int], wanted: int):
        self.path, self.stored, self.wanted = path, stored, wanted
        had = ", ".join(str(w) for w in stored)
        super().__init__(
            f"the store {path} holds windows of WINDOW_SECONDS={had}, but the stream now runs with "
            f"WINDOW_SECONDS={wanted}: windows of both lengths would end up in one table and be read as one "
            f"series. Either set WINDOW_SECONDS={stored[0]} again, or give the new length its own store and "
            "checkpoint (DUCKDB_PATH=<new file>, CHECKPOINT_NAME=<new name>), which count the topic from its start."
        )


class OffsetsMismatchError(StreamError):
    """The Kafka offsets the store recorded do not fit the topic or the checkpoint: resuming would lose or recount events."""

    def __init__(self, path: str, topic: str, problem: str, remedy: str):
        self.path, self.topic, self.problem, self.remedy = path, topic, problem, remedy
        super().__init__(f"cannot resume the stream of topic {topic} into the store {path}: {problem}. {remedy}")


class NotebookTaskError(ObslabError):
    """A scheduled notebook failed in one of its cells; the kept notebook shows where."""

    def __init__(self, notebook: str, output: object, cell: int | None, error: str):
        self.notebook, self.output, self.cell, self.error = notebook, output, cell, error
        where = f"cell {cell}" if cell is not None else "a cell"
        super().__init__(f"notebook {notebook} failed in {where}: {error.rstrip('.')}. The executed notebook, with the "
                         f"error under the failing cell, is kept at {output} (open it with `jupyter lab`).")


class NotebookParameterError(ConfigError):
    """A notebook was given a parameter value it cannot use; names the parameter, the value and what to pass."""

    def __init__(self, notebook: str, name: str, value: object, expected: str, default: object):
        self.notebook, self.name, self.value, self.expected = notebook, name, value, expected
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        super().__init__(f"notebook {notebook}: parameter {name}={shown} ({type(value).__name__}) cannot be used: "
                         f"{name} must be {expected}. Pass another value (papermill -p {name} <value>) or leave it "
                         f"out for its default {default!r}.")


class DataQualityError(ObslabError):
    """The store breaks data-quality rules; names each failed rule, its violations and what to do."""

    def __init__(self, failed: list):
        self.failed = failed  # the failed obslab.quality.QualityCheck objects
        lines = "\n".join(f"  - {c.name}, {c.violations} violation(s): {c.message}" for c in failed)
        super().__init__(f"{len(failed)} data-quality rule(s) failed:\n{lines}\nFix the cause each rule names, "
                         "then check again with `obslab quality --no-retention` (or re-run notebook 08).")


class HealthCheckFailed(ObslabError):
    """Monitoring checks failed; names each one's measured value, its bound and what to do."""

    def __init__(self, failed: list):
        self.failed = failed  # the failed obslab.health.Check objects

        def num(x) -> str:
            return "n/a" if x is None else f"{int(x):,}" if float(x).is_integer() else f"{x:.4g}"

        # The first line names them all: a scheduled task's record keeps only the first line.
        summary = ", ".join(f"{c.name} {num(c.value)} (bound {num(c.bound)})" for c in failed)
        lines = "\n".join(f"  - {c.message}" for c in failed)
        super().__init__(f"{len(failed)} health check(s) failed: {summary}\n{lines}\nFix the cause each "
                         "check names, then check again with `obslab health` (or re-run notebook 07).")


class BookError(ObslabError):
    """Sphinx could not render the book's pages (`make book`); the message holds its output."""
