"""The lab's one retry policy: call again after errors that pass by themselves, waiting longer each time.

    call --error it names--> wait (first_wait_s, doubling, capped at max_wait_s; jittered or not) --> call
         --other error, or out of attempts / time--> the last error, raised as it was

Built on tenacity. Its users: the store opening a DuckDB file another process holds, the Kafka
sinks reaching the brokers, and a repeated stage of `obslab detect`/`narrate` waiting out an outage.
Each turns the error it finally gets into its own typed error (obslab.errors).

`repeat_stage` is the one polling loop: `obslab detect` and `obslab narrate` (until a stop signal)
and `detect_for` (notebook 03, for some seconds) run their step through it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

log = logging.getLogger(__name__)
T = TypeVar("T")

Errors = type[BaseException] | tuple[type[BaseException], ...]


def call_with_retries(call: Callable[[], T], retry_on: Errors | Callable[[BaseException], bool], *,
                      first_wait_s: float, max_wait_s: float | None = None, attempts: int | None = None,
                      within_s: float | None = None, jitter: bool = False,
                      sleep: Callable[[float], object] = time.sleep,
                      on_retry: Callable[[BaseException, int, float], None] | None = None) -> T:
    """`call()`, retried on the errors `retry_on` names (classes, or a predicate) with exponential backoff.

    The n-th wait is `first_wait_s * 2**(n-1)`, at most `max_wait_s`; with `jitter`, a uniform draw
    below that ("full jitter", so processes waiting for one resource do not retry in lock-step).
    Gives up after `attempts` calls or once `within_s` seconds have passed (no wait runs past that
    bound), raising the last error unchanged; any other error is raised at once. `sleep` does the
    waiting (a stop event's `wait` ends it early); `on_retry(error, failed_calls, wait_s)` runs
    before each wait.
    """
    retry = (tenacity.retry_if_exception_type(retry_on) if isinstance(retry_on, (type, tuple))
             else tenacity.retry_if_exception(retry_on))
    cap = {} if max_wait_s is None else {"max": max_wait_s}
    backoff = (tenacity.wait_random_exponential(multiplier=first_wait_s, **cap) if jitter
               else tenacity.wait_exponential(multiplier=first_wait_s, **cap))
    stop = tenacity.stop_never
    if attempts is not None:
        stop = stop | tenacity.stop_after_attempt(attempts)
    wait = backoff
    if within_s is not None:
        stop = stop | tenacity.stop_after_delay(within_s)

        def wait(state: tenacity.RetryCallState) -> float:
            return min(backoff(state), max(within_s - (state.seconds_since_start or 0.0), 0.0))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.outcome.exception(), state.attempt_number, state.next_action.sleep)

    retrying = tenacity.Retrying(retry=retry, stop=stop, wait=wait, sleep=sleep, before_sleep=before_sleep,
                                 reraise=True)
    return retrying(call)


# Errors a long-running stage waits out: another process releases the store, the broker comes back.
def transient(err: BaseException) -> bool:
    """True for errors that pass by themselves (store locked, broker unreachable)."""
    from kafka.errors import KafkaError

    from obslab.errors import BrokerError, StoreLockedError

    return isinstance(err, (StoreLockedError, BrokerError, KafkaError))


RETRY_MAX_SECONDS = 60.0  # the longest pause between retries of a stage that keeps failing


def repeat_stage(step: Callable[[], object], stage: str, settings, once: bool, poll_seconds: float,
                 stop: threading.Event, max_backoff_s: float = RETRY_MAX_SECONDS) -> None:
    """Run `step` once, or every `poll_seconds` until `stop` is set, retrying transient errors with
    backoff; each failure is written to the stage's heartbeat (`obslab status`, `obslab health`)."""
    from obslab.health import beat

    def run() -> None:
        if stop.is_set():  # stopped while waiting to retry
            return
        try:
            step()
        except Exception as err:
            try:
                beat(settings, stage, ok=False, detail=_detail(err))
            except OSError as beat_err:
                log.warning("%s: could not write its heartbeat: %s", stage, beat_err)
            raise

    def retrying(err: BaseException, failed: int, delay: float) -> None:
        log.warning("%s: %s; retrying in %.1f s (%d failed run(s) in a row)", stage, _detail(err), delay, failed)

    while True:
        # Backoff, so a long outage costs few attempts; capped, so recovery is noticed soon.
        call_with_retries(run, transient, first_wait_s=poll_seconds, max_wait_s=max(max_backoff_s, poll_seconds),
                          attempts=1 if once else None, sleep=stop.wait, on_retry=retrying)
        if once or stop.wait(poll_seconds):
            break


def _detail(err: BaseException) -> str:
    return (f"{type(err).__name__}: {err}".splitlines() or [""])[0][:400]
