"""``kite-connector consume``: the example downstream reader of the connector's topics.

Reads as a consumer group, detects each message's framing, decodes it with the schemas, and prints JSON
lines or a live per-instrument view.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from confluent_kafka import Consumer, Message

from connector.config import ConsumeSettings
from connector.errors import RegistryError, SerializationError
from connector.serde import AvroReader, check_registry, registry_client
from connector.sink import Access, Cluster, KafkaAccessError, kind_of

__all__ = ["LiveView", "consume", "record_json"]

IST = timezone(timedelta(hours=5, minutes=30), "IST")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def record_json(msg: Message, kind: str, value: dict[str, Any]) -> str:
    key = msg.key()
    return json.dumps(
        {
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": key.decode(errors="replace") if key else None,
            "type": kind,
            "value": _plain(value),
        }
    )


@dataclass
class _Row:
    last_price: float = 0.0
    net_change: float | None = None
    volume: int | None = None
    count: int = 0
    window: list[float] = field(default_factory=list)


class LiveView:
    """Per instrument: last price, change, volume, ticks/s; the latest bar of each instrument and interval;
    plus totals and exchange→consume lag."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.rows: dict[int, _Row] = {}
        self.bars: dict[tuple[int, str], dict[str, Any]] = {}
        self.totals: dict[str, int] = {}
        self.lags: list[float] = []
        self.clock = clock

    def add(self, kind: str, value: dict[str, Any]) -> None:
        self.totals[kind] = self.totals.get(kind, 0) + 1
        if kind == "Candle":
            self.bars[(value["instrument_token"], value["interval"])] = value
            return
        if kind != "Tick":
            return
        now = self.clock()
        row = self.rows.setdefault(value["instrument_token"], _Row())
        row.last_price, row.net_change, row.volume = (
            value["last_price"],
            value["net_change"],
            value["volume_traded"],
        )
        row.count += 1
        row.window = [t for t in row.window if now - t < 5] + [now]
        stamp = value.get("exchange_timestamp")
        if isinstance(stamp, datetime):
            self.lags = [*self.lags[-999:], now - stamp.timestamp()]

    def render(self, limit: int = 30) -> str:
        lines = [f"{'token':>10} {'last':>12} {'change':>10} {'volume':>12} {'ticks/s':>8}"]
        for token, row in sorted(self.rows.items(), key=lambda kv: -kv[1].count)[:limit]:
            change = "" if row.net_change is None else f"{row.net_change:+.2f}"
            volume = "" if row.volume is None else str(row.volume)
            lines.append(
                f"{token:>10} {row.last_price:>12.2f} {change:>10} {volume:>12} {len(row.window) / 5:>8.1f}"
            )
        if self.bars:
            lines.append(
                f"{'token':>10} {'bar':>4} {'start (IST)':>16} {'open':>10} {'high':>10} {'low':>10} "
                f"{'close':>10} {'volume':>10} {'ticks':>6}"
            )
        latest = sorted(self.bars.items(), key=lambda kv: kv[1]["start"], reverse=True)[:limit]
        for (token, interval), bar in sorted(latest, key=lambda kv: kv[0]):
            start = bar["start"].astimezone(IST).strftime("%m-%d %H:%M:%S")
            volume = "" if bar["volume"] is None else str(bar["volume"])
            lines.append(
                f"{token:>10} {interval:>4} {start:>16} {bar['open']:>10.2f} {bar['high']:>10.2f} "
                f"{bar['low']:>10.2f} {bar['close']:>10.2f} {volume:>10} {bar['ticks']:>6}"
            )
        totals = "  ".join(f"{k}: {v}" for k, v in sorted(self.totals.items()))
        lag = f"{sorted(self.lags)[len(self.lags) // 2]:.3f} s" if self.lags else "-"
        lines.append(f"instruments: {len(self.rows)}  {totals}  median lag exchange→consume: {lag}")
        return "\n".join(lines)


def consume(v: ConsumeSettings, out: TextIO, err: TextIO) -> int:
    """Run the reader; returns how many records it printed. Kafka (and the registry, if any) are checked
    first: a refusal stops it naming the cause, before anything is read."""
    group = v.consume_group or f"kite-consume-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(v.kafka.client_config())
    cluster.metadata()
    cluster.check(Access(read=v.topics, groups=[group]))
    registry = registry_client(v.registry.client_config()) if v.registry.url else None
    if registry is not None:
        check_registry(registry, v.registry.url or "", v.registry.timeout_seconds)
    reader = AvroReader(registry_client=registry)
    wanted = v.instruments
    consumer = Consumer(
        {
            **v.kafka.client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest" if v.consume_from_beginning else "latest",
        }
    )
    consumer.subscribe(v.topics)
    view = LiveView() if v.consume_view == "live" else None
    printed, last_seen, last_draw = 0, time.monotonic(), 0.0
    limit, idle = v.consume_max_records, v.consume_idle_exit_seconds
    try:
        while not (limit and printed >= limit):
            msg = consumer.poll(0.5)
            now = time.monotonic()
            if view is not None and now - last_draw >= 1:
                out.write("\x1b[H\x1b[2J" + view.render() + "\n")
                out.flush()
                last_draw = now
            if msg is None:
                if idle and now - last_seen > idle:
                    break
                continue
            last_seen = now
            error = msg.error()
            if error is not None:
                if kind_of(error) in ("authentication", "authorization"):  # retrying cannot fix it
                    raise KafkaAccessError(str(kind_of(error)), f"Kafka refused the consumer: {error.str()}")
                err.write(f"kafka: {error}\n")
                continue
            key = msg.key()
            if wanted and (key or b"").decode(errors="replace") not in wanted:
                continue
            try:
                kind, value = reader.read(msg.value() or b"")
            except (SerializationError, RegistryError) as exc:  # shown; the reader goes on
                err.write(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}\n")
                continue
            printed += 1
            if view is None:
                out.write(record_json(msg, kind, value) + "\n")
            else:
                view.add(kind, value)
        if view is not None:
            out.write("\x1b[H\x1b[2J" + view.render() + "\n")
    finally:
        consumer.close()
    return printed
