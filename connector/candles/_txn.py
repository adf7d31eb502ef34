"""Every transactional producer call, with librdkafka's documented error handling in one place.

librdkafka (rdkafka.h, "Transactional producer API") sorts each error of these calls into one of three:

- ``retriable()``: call the same function again. ``init_transactions``, ``commit_transaction`` and
  ``abort_transaction`` are resumable (a timed-out call goes on in the background, and calling again picks
  it up); ``send_offsets_to_transaction`` is retried with the same offsets and group metadata.
- ``txn_requires_abort()``: the transaction cannot commit; abort it and start again from the last
  committed state (:class:`AbortRequired`, for the caller to do so).
- anything else, ``fatal()`` or not: the producer is unusable (fenced, unauthorised, ...).

Retries back off and are bounded in time; past the bound, and for the third kind, :class:`ProcessorFailed`
ends the process in one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

from connector.candles._status import ProcessorFailed, Status
from connector.logs import sample

__all__ = ["AbortRequired", "TransactionCalls", "describe", "kafka_error"]

log = sample(logging.getLogger("connector.candles.transactions"))
T = TypeVar("T")
_FIRST_DELAY = 0.1
_MAX_DELAY = 2.0
# A call that works within this long after a retry is routine (init_transactions while the coordinator
# loads or aborts a crashed predecessor's transaction): logged at INFO; past it, at WARNING.
_ROUTINE_SECONDS = 2.0


class AbortRequired(Exception):
    """The open transaction failed and must be aborted (librdkafka's ``txn_requires_abort``)."""

    def __init__(self, call: str, error: str) -> None:
        super().__init__(f"{call}: {error}")


def kafka_error(exc: KafkaException) -> KafkaError | None:
    """The :class:`KafkaError` a :class:`KafkaException` carries (None if it carries none)."""
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


def describe(err: KafkaError) -> str:
    return f"{err.name()} ({err.str()})"


class TransactionCalls:
    """Runs transactional calls, retrying the retriable errors for up to ``budget`` seconds each."""

    def __init__(
        self,
        budget: float,
        status: Status,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.status = status  # counts retries by call; says what is being retried, for /healthz
        self.sleep = sleep
        self.clock = clock

    def __call__(self, name: str, call: Callable[[], T]) -> T:
        """``call()``'s result; raises :class:`AbortRequired` or :class:`ProcessorFailed`."""
        started = self.clock()
        first_failure: float | None = None
        delay = _FIRST_DELAY
        while True:
            try:
                result = call()
            except KafkaException as exc:
                err = kafka_error(exc)
                if err is None or err.fatal() or not (err.retriable() or err.txn_requires_abort()):
                    shown = str(exc) if err is None else describe(err)
                    kind = "fatal Kafka error" if err is not None and err.fatal() else "Kafka error"
                    raise ProcessorFailed(f"{name}: {kind} {shown}", err) from None
                if err.txn_requires_abort():
                    self.status.retrying = None  # the call is over: the abort path reports from here
                    raise AbortRequired(name, describe(err)) from None
                now = self.clock()
                if first_failure is None:
                    first_failure = now
                waited = now - first_failure
                if waited >= self.budget:
                    raise ProcessorFailed(
                        f"{name} kept failing for {waited:.0f} s ({describe(err)}): "
                        "CANDLES_TRANSACTION_RETRY_SECONDS bounds how long a retriable error is retried"
                    ) from None
                self.status.counts.retries[name] += 1
                self.status.retrying = f"{name} retried for {waited:.0f} s: {describe(err)}"
                level = logging.INFO if now - started < _ROUTINE_SECONDS else logging.WARNING
                log.log(level, "%s failed with a retriable error, retrying: %s", name, describe(err))
                self.sleep(min(delay, self.budget - waited))
                delay = min(delay * 2, _MAX_DELAY)
                continue
            if first_failure is not None:
                self.status.retrying = None
                log.info("%s succeeded after %.1f s of retries", name, self.clock() - first_failure)
            return result
