"""The lab's one retry policy: call again after errors that pass by themselves, waiting longer each time.

    call --error it names--> wait (first_wait_s, doubling, capped at max_wait_s; jittered or not) --> call
         --other error, or out of attempts / time--> the last error, raised as it was

Built on tenacity. Its users: the store opening a DuckDB file another process holds, the Kafka
sinks reaching the brokers, and a repeated stage of `obslab detect`/`narrate` waiting out an outage.
Each turns the error it finally gets into its own typed error (obslab.errors).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

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
