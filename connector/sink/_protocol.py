"""What the pipeline, the order desk and the runtime ask of a shard's Kafka side.

:class:`~connector.sink.KafkaSink` is the one a lone instance uses; an HA set's shards use
:class:`~connector.ha.HaSink` (a buffer while standby, a transactional producer while active).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Sink"]

Headers = list[tuple[str, str | bytes | None]]


class Sink(Protocol):
    stopping: bool
    producer: Any  # the confluent_kafka Producer

    def ready(self) -> bool:
        """A record produced now is not held back waiting for a producer id."""
        ...

    def takes_orders(self) -> bool:
        """Order updates may be produced here now (else they wait in the order log for one that does)."""
        ...

    def produce_ticks(self, batch: list[tuple[bytes, bytes, int]], received: float) -> None:
        """(key, value, timestamp) of each tick of one message."""
        ...

    def produce_named_ticks(self, batch: list[tuple[bytes, bytes, int, int]], received: float) -> None:
        """As :meth:`produce_ticks`, each with its tick id (the ``kite.tick_id`` header)."""
        ...

    def produce_dead_letter(self, key: bytes, value: bytes, timestamp_ms: int) -> None: ...

    def produce_gap(self, key: bytes, value: bytes, timestamp_ms: int) -> None: ...

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        timestamp_ms: int,
        headers: Headers | None,
        on_done: Callable[[bool], None],
    ) -> None: ...

    def service(self) -> float | None:
        """Serve what is due; seconds until an acknowledgement may arrive, or None."""
        ...

    def saturated(self) -> bool: ...

    def stop(self) -> None: ...

    def close(self, timeout: float) -> int:
        """Flush (bounded); the records left unacknowledged."""
        ...
