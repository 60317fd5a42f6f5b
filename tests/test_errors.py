"""Typed errors: one base class, a docstring each, and messages that carry the context and say what to do."""

import inspect

import pytest

from obslab import errors
from obslab.errors import (CheckpointMismatchError, NotebookTaskError, ObslabError, PortInUseError, ScenarioError,
                           StoreLockedError, StoreWindowMismatchError)


def test_every_error_is_an_obslab_error_with_a_docstring():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, ObslabError), cls
        assert cls.__doc__ and cls.__doc__.strip(), f"{cls.__name__} has no docstring"


@pytest.mark.parametrize("error, says", [
    # the port, the setting that moves it, and how to find the process in the way
    (PortInUseError(9092, "KAFKA_PORT"), ["port 9092", "KAFKA_PORT=<port>", "ss -ltnp 'sport = :9092'"]),
    # the file, who holds it, how long we waited, and the setting that waits longer
    (StoreLockedError("/d/s.duckdb", 2.5, "PID 42 (obslab stream)"),
     ["/d/s.duckdb is held by PID 42 (obslab stream)", "after 2.5 s", "STORE_LOCK_TIMEOUT_SECONDS"]),
    (StoreLockedError("/d/s.duckdb", 1.0, None), ["held by another process"]),
    # both values, so either can be chosen
    (CheckpointMismatchError("/c", "window_seconds", 60, 30),
     ["WINDOW_SECONDS=60, but the stream now runs with WINDOW_SECONDS=30", "CHECKPOINT_NAME"]),
    (StoreWindowMismatchError("/d/s.duckdb", [60], 30), ["WINDOW_SECONDS=60", "WINDOW_SECONDS=30"]),
    (ScenarioError("x.yaml", "faults[0].type", "unknown"), ["x.yaml: faults[0].type: unknown"]),
    (NotebookTaskError("02_stream", "/runs/x.ipynb", 7, "ValueError: boom."),
     ["notebook 02_stream failed in cell 7: ValueError: boom. The executed", "/runs/x.ipynb"]),
])
def test_a_message_names_what_went_wrong_and_what_to_do(error, says):
    for part in says:
        assert part in str(error)
