"""Faults injected at a real seam: a real librdkafka producer that fails once, as a fatal error would."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

__all__ = ["producer_failing_at"]


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
