"""obslab.retry: the one retry policy (no real waiting: `sleep` records the waits instead)."""

from __future__ import annotations

import pytest

from obslab.retry import call_with_retries


class Flaky:
    """Raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_retries_the_given_errors_until_the_call_succeeds():
    waits = []
    call = Flaky(ConnectionError("a"), ConnectionError("b"), ConnectionError("c"))
    assert call_with_retries(call, ConnectionError, first_wait_s=1.0, sleep=waits.append) == "done"
    assert call.calls == 4  # three failures, then the success
    assert waits == [1.0, 2.0, 4.0]  # doubling from first_wait_s


def test_gives_up_after_the_attempts_with_the_original_error():
    last = ConnectionError("third")
    call = Flaky(ConnectionError("first"), ConnectionError("second"), last, ConnectionError("never reached"))
    with pytest.raises(ConnectionError) as raised:
        call_with_retries(call, ConnectionError, first_wait_s=0.5, attempts=3, sleep=lambda _: None)
    assert raised.value is last  # the error itself, not a wrapper
    assert call.calls == 3


def test_other_errors_are_raised_at_once():
    call = Flaky(ValueError("not transient"))
    with pytest.raises(ValueError, match="not transient"):
        call_with_retries(call, ConnectionError, first_wait_s=1.0, sleep=lambda _: None)
    assert call.calls == 1


@pytest.mark.parametrize("retry_on, retried", [
    ((KeyError, ConnectionError), True),  # a tuple of classes
    (lambda err: "transient" in str(err), True),  # a predicate
    (lambda err: False, False),  # a predicate that declines
])
def test_errors_can_be_named_by_classes_or_a_predicate(retry_on, retried):
    call = Flaky(ConnectionError("transient"))
    if retried:
        assert call_with_retries(call, retry_on, first_wait_s=0.0, sleep=lambda _: None) == "done"
    else:
        with pytest.raises(ConnectionError):
            call_with_retries(call, retry_on, first_wait_s=0.0, sleep=lambda _: None)


def test_waits_are_capped():
    waits = []
    call = Flaky(*[OSError()] * 6)
    call_with_retries(call, OSError, first_wait_s=1.0, max_wait_s=5.0, sleep=waits.append)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_jittered_waits_stay_below_the_backoff():
    waits = []
    call = Flaky(*[OSError()] * 8)
    call_with_retries(call, OSError, first_wait_s=0.01, max_wait_s=0.05, jitter=True, sleep=waits.append)
    bounds = [0.01, 0.02, 0.04, 0.05, 0.05, 0.05, 0.05, 0.05]  # full jitter: uniform below each
    assert all(0.0 <= w <= b for w, b in zip(waits, bounds, strict=True)), waits


def test_a_time_bound_gives_up_with_the_original_error_and_no_wait_passes_it():
    waits = []
    call = Flaky(*[OSError("held")] * 1000)
    with pytest.raises(OSError, match="held"):
        # Recorded waits take no time, so the bound (0 s) is already reached after the first call.
        call_with_retries(call, OSError, first_wait_s=1.0, within_s=0.0, sleep=waits.append)
    assert (call.calls, waits) == (1, [])


def test_on_retry_sees_each_error_the_failed_calls_and_the_wait():
    seen = []
    first, second = ConnectionError("first"), ConnectionError("second")
    call_with_retries(Flaky(first, second), ConnectionError, first_wait_s=3.0, sleep=lambda _: None,
                      on_retry=lambda err, failed, wait: seen.append((err, failed, wait)))
    assert seen == [(first, 1, 3.0), (second, 2, 6.0)]
