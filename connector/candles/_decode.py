"""The few fields of a Tick a bar needs, read straight from its Avro bytes.

A whole-record decode (fastavro) costs ~20 µs per full-mode tick, more than the processor's budget.
A bar needs five fields, all before the order book except ``received_at``; one compiled regular
expression walks the fixed layout of ``schemas/tick.avsc`` to them. Anything it does not recognise
(another schema version, an unknown exchange name, a tick with depth but no exchange time) goes
through :class:`connector.serde.AvroReader`, which reads every version the project ever wrote.
"""

from __future__ import annotations

import re
import struct
from typing import Any, NamedTuple

from connector.errors import SerializationError
from connector.kite._layout import MODES, RECORD, SEGMENTS
from connector.serde import AvroReader, load_schema

__all__ = ["TickDecoder", "TickFacts"]


class TickFacts(NamedTuple):
    """What a candle takes from one tick."""

    token: int
    time_ms: int  # event time: exchange timestamp, else the connector's receive time
    price: float  # last traded price
    volume: int | None  # cumulative volume traded today
    oi: int | None


_VARINT = rb"[\x80-\xff]*[\x00-\x7f]"
# An Avro string: its length (zigzag, one byte under 64), then its bytes.
_EXCHANGES = b"|".join(re.escape(bytes([2 * len(s.exchange)]) + s.exchange.encode()) for s in SEGMENTS)
# The Avro form of each field type of the record (_layout.RECORD), as a pattern; ? marks a union with null.
_PATTERNS = {
    "long": _VARINT,
    "int": _VARINT,
    "string": b"(?:" + _EXCHANGES + b")",  # the only string: a known exchange's name
    "Mode": b"[" + b"".join(re.escape(bytes([2 * i])) for i in range(len(MODES))) + b"]",
    "boolean": rb"[\x00\x01]",
    "double": b".{8}",
    "long?": _VARINT,
    "timestamp-millis?": _VARINT,
    "double?": b".{8}",
}  # fmt: skip
_FACTS = ("instrument_token", "last_price", "volume_traded", "oi", "exchange_timestamp")  # groups, by name
_LAST = max(i for i, c in enumerate(RECORD) if c.name in _FACTS)


def _field(name: str, kind: str) -> bytes:
    value = _PATTERNS[kind]
    if name in _FACTS:
        value = b"(?P<" + name.encode() + b">" + value + b")"
    return rb"(?:\x00|\x02" + value + b")" if kind.endswith("?") else value


# The record's fields in order up to the last one a bar needs: a known exchange name, and a null or a
# value for each union. A field not matched here (another exchange, another layout) takes the slow path.
_PREFIX = re.compile(b"".join(_field(c.name, c.type) for c in RECORD[: _LAST + 1]), re.DOTALL)
# received_at, where every field between the prefix and it is null (a tick with no exchange time, no depth)
_RECEIVED_AFTER_NULLS = re.compile(b"\x00" * (len(RECORD) - _LAST - 2) + b"(" + _VARINT + b")")
_DOUBLE = struct.Struct("<d").unpack


def _long(raw: bytes) -> int:
    """Avro long from its zigzag varint bytes."""
    n = shift = 0
    for b in raw:
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1)


class TickDecoder:
    """Framed Tick bytes (single-object or Confluent) → :class:`TickFacts`."""

    def __init__(self, reader: AvroReader) -> None:
        self._reader = reader
        self._fingerprint = load_schema("tick").fingerprint
        self._fast_ids: dict[int, bool] = {}  # registry schema id → is it the current Tick schema
        self.slow = 0  # ticks that took the general path

    def _body_start(self, data: bytes) -> int:
        """Where the Avro body starts if the current Tick schema wrote it, else -1."""
        if data[:2] == b"\xc3\x01":
            return 10 if data[2:10] == self._fingerprint else -1
        if data[:1] == b"\x00" and len(data) >= 5:
            schema_id = int.from_bytes(data[1:5], "big")
            fast = self._fast_ids.get(schema_id)
            if fast is None:
                fast = self._writer_fingerprint(schema_id) == self._fingerprint
                self._fast_ids[schema_id] = fast
            return 5 if fast else -1
        return -1

    def _writer_fingerprint(self, schema_id: int) -> bytes:
        """The fingerprint of the schema behind a registry id (looked up once per id, then cached by the
        reader). An id the registry does not know is a bad record; a registry that does not answer is not."""
        try:
            return self._reader.writer_schema(schema_id).fingerprint
        except ValueError as exc:  # the registry's schema under that id is not one of ours
            raise SerializationError(f"schema id {schema_id}: {exc}") from exc

    def decode(self, data: bytes) -> TickFacts:
        """Raises :class:`connector.errors.SerializationError` for bytes that are not a Tick."""
        start = self._body_start(data)
        m = _PREFIX.match(data, start) if start >= 0 else None
        if m is not None:
            token, price, volume, oi, stamp = m.group(*_FACTS)
            if stamp is not None:
                time_ms = _long(stamp)
            else:
                rest = _RECEIVED_AFTER_NULLS.match(data, m.end())
                if rest is None:
                    return self._slow(data)
                time_ms = _long(rest.group(1))
            return TickFacts(
                _long(token),
                time_ms,
                _DOUBLE(price)[0],
                None if volume is None else _long(volume),
                None if oi is None else _long(oi),
            )
        return self._slow(data)

    def _slow(self, data: bytes) -> TickFacts:
        self.slow += 1
        kind, v = self._reader.read(data)
        if kind != "Tick":
            raise SerializationError(f"a {kind} record, not a Tick")
        return facts_of(v)


def facts_of(v: dict[str, Any]) -> TickFacts:
    """The facts of a tick decoded as a dict (datetimes for timestamps, as fastavro gives them)."""
    stamp = v["exchange_timestamp"] or v["received_at"]
    return TickFacts(
        v["instrument_token"], round(stamp.timestamp() * 1000), v["last_price"], v["volume_traded"], v["oi"]
    )
