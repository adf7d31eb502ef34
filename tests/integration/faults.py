"""Faults injected at a real seam: a real librdkafka producer that fails once, as a fatal error would, or
that pauses the real broker's container just before one of its transactional calls."""

from __future__ import annotations

import subprocess
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

__all__ = ["producer_failing_at", "producer_pausing_broker"]


def producer_failing_at(call: int) -> type[Producer]:
    """A Producer class whose ``call``-th produce() (counted over all its instances) raises ``_FATAL``."""

    class FailingOnce(Producer):
        calls = 0

        def produce(self, *args: Any, **kwargs: Any) -> None:
            FailingOnce.calls += 1
            if FailingOnce.calls == call:
                raise KafkaException(KafkaError(KafkaError._FATAL, "injected fatal error", fatal=True))
            super().produce(*args, **kwargs)

    return FailingOnce


def producer_pausing_broker(
    container: str, call: str, nth: int, seconds: float
) -> tuple[type[Producer], threading.Event]:
    """A Producer class that ``docker pause``s the broker ``container`` for ``seconds`` just before its
    ``nth`` ``call`` (commit_transaction or abort_transaction), which then meets a broker that does not
    answer; and an event set once the pause started."""
    paused = threading.Event()

    class Pausing(Producer):
        calls = 0

        def _maybe_pause(self, name: str) -> None:
            if name != call:
                return
            Pausing.calls += 1
            if Pausing.calls == nth:
                subprocess.run(["docker", "pause", container], check=True)
                unpause = ["docker", "unpause", container]
                timer = threading.Timer(seconds, subprocess.run, (unpause,), {"capture_output": True})
                timer.start()
                paused.set()

        def commit_transaction(self, *args: Any) -> None:
            self._maybe_pause("commit_transaction")
            super().commit_transaction(*args)

        def abort_transaction(self, *args: Any) -> None:
            self._maybe_pause("abort_transaction")
            super().abort_transaction(*args)

    return Pausing, paused
