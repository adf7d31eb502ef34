"""What names an order update in Kafka: its record id, its origin, and the record the outbox produces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = [
    "ORIGINS",
    "ORIGIN_HEADER",
    "ORIGIN_RECONCILIATION",
    "ORIGIN_WEBSOCKET",
    "RECORD_ID_HEADER",
    "OrderRecord",
    "record_id",
]

RECORD_ID_HEADER = "kite.record_id"
ORIGIN_HEADER = "kite.origin"
ORIGIN_WEBSOCKET = "websocket"
ORIGIN_RECONCILIATION = "reconciliation"
ORIGINS = (ORIGIN_WEBSOCKET, ORIGIN_RECONCILIATION)


def record_id(raw: bytes) -> str:
    """A stable id for an order update: SHA-256 of the text it arrived as, 32 hex digits.

    For a WebSocket update that is its frame; for one from Kite's order book, the order as a canonical
    (sorted-keys) frame, so the same state fetched again, after a restart too, keeps its id. 128 bits
    leave no practical chance of two different updates sharing an id.
    """
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One order update as it is logged and produced: Kafka key, Avro value, timestamp, identity."""

    key: bytes
    value: bytes
    timestamp_ms: int
    record_id: str
    origin: str = ORIGIN_WEBSOCKET

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, not {self.origin!r}")

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers naming this record: ``kite.record_id`` and ``kite.origin``."""
        return [(RECORD_ID_HEADER, self.record_id.encode()), (ORIGIN_HEADER, self.origin.encode())]
