"""Records ↔ the plain dicts that Avro libraries take and give (the generic, slower path)."""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from connector.kite import OrderUpdate, Tick

__all__ = ["DeadLetter", "dead_letter_dict", "order_update_dict", "tick_dict"]


class DeadLetter(NamedTuple):
    """Input that could not be decoded or serialized, kept whole for inspection and replay."""

    raw: bytes
    error: str
    source: str  # ws-binary, ws-text, serializer or sink
    offset: int | None = None
    raw_length: int | None = None  # of the whole input, when ``raw`` is cut
    raw_sha256: str | None = None

    def capped(self, limit: int) -> DeadLetter:
        """The same letter with ``raw`` cut to ``limit`` bytes, so it always fits in a Kafka message."""
        if len(self.raw) <= limit:
            return self
        digest = hashlib.sha256(self.raw).hexdigest()
        return self._replace(raw=self.raw[:limit], raw_length=len(self.raw), raw_sha256=digest)


def tick_dict(t: Tick, received_at_ms: int) -> dict[str, Any]:
    d = t._asdict()
    del d["depth"]
    d["depth_buy"] = None if t.depth is None else [lvl._asdict() for lvl in t.depth_buy or ()]
    d["depth_sell"] = None if t.depth is None else [lvl._asdict() for lvl in t.depth_sell or ()]
    d["mode"] = str(t.mode)
    d["exchange"] = t.exchange
    d["segment"] = t.segment
    d["price_divisor"] = t.divisor
    d["last_trade_time"] = d.pop("last_trade_time_ms")
    d["exchange_timestamp"] = d.pop("exchange_timestamp_ms")
    d["received_at"] = received_at_ms
    return d


def order_update_dict(u: OrderUpdate, received_at_ms: int) -> dict[str, Any]:
    d = u._asdict()
    for key in ("order_timestamp", "exchange_update_timestamp", "exchange_timestamp"):
        d[key] = d.pop(f"{key}_ms")
    d["received_at"] = received_at_ms
    return d


def dead_letter_dict(letter: DeadLetter, received_at_ms: int) -> dict[str, Any]:
    return {**letter._asdict(), "received_at": received_at_ms}
