"""A hand-written Avro encoder for :class:`Tick`, byte-identical to fastavro's ``schemaless_writer``.

It follows ``schemas/tick.avsc`` field by field; ``tests/unit/test_serde.py`` proves byte equality on
random ticks, so a change to the schema that is not mirrored here fails the tests.

Both encoders (this one and the C one in ``_speedups.c``) reject a tick that does not fit the schema with
``ValueError``, ``TypeError``, ``OverflowError`` or ``struct.error``; :func:`tick_fault` then says which
field is at fault, in the same words whichever encoder ran.
"""

from __future__ import annotations

import reprlib
import struct
from collections.abc import Callable
from typing import Protocol

from connector.kite import EXCHANGES, Mode, Tick, price_divisor

__all__ = ["NATIVE", "encode_tick", "encode_tick_py", "native_encode_tick", "native_transcode", "tick_fault"]

_double = struct.Struct("<d").pack
_doubles2 = struct.Struct("<dd").pack
_MODE_INDEX = {Mode.LTP: b"\x00", Mode.QUOTE: b"\x02", Mode.FULL: b"\x04"}
_MODES = frozenset(m.value for m in Mode)


def _varint_slow(z: int) -> bytes:
    if not 0 <= z < 1 << 64:
        raise OverflowError(f"{z} does not fit an Avro long")
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# Varints by table look-up, 14 bits at a time: _LAST[x] is the whole varint of x < 2**14, _MORE[x] the
# two bytes of x's low 14 bits when more bytes follow. Timestamps in ms (41 bits) take three look-ups.
_LAST = tuple(_varint_slow(x) for x in range(1 << 14))
_MORE = tuple(bytes((x & 0x7F | 0x80, x >> 7 | 0x80)) for x in range(1 << 14))


def _varint(n: int) -> bytes:
    """Zigzag + base-128 varint, Avro's encoding of int and long."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x4000:
        return _LAST[z]
    if z < 0x10000000:
        return _MORE[z & 0x3FFF] + _LAST[z >> 14]
    if z < 0x40000000000:
        return _MORE[z & 0x3FFF] + _MORE[z >> 14 & 0x3FFF] + _LAST[z >> 28]
    return _varint_slow(z)


def _string(s: str) -> bytes:
    b = s.encode()
    return _varint(len(b)) + b


# Token → the bytes that never change for it: token, exchange, segment (cached, tokens are few).
_HEAD_CACHE: dict[int, bytes] = {}


def _head(token: int) -> bytes:
    head = _HEAD_CACHE.get(token)
    if head is None:
        seg = token & 0xFF
        head = _varint(token) + _string(EXCHANGES.get(seg, f"SEGMENT_{seg}")) + _varint(seg)
        if len(_HEAD_CACHE) < 100_000:
            _HEAD_CACHE[token] = head
    return head


def _opt_long(v: int | None) -> bytes:
    return b"\x00" if v is None else b"\x02" + _varint(v)


def _opt_double(v: float | None) -> bytes:
    return b"\x00" if v is None else b"\x02" + _double(v)


def _depth_side(raw: tuple[int, ...], start: int, levels: int, d: float) -> bytes:
    if not levels:
        return b"\x02\x00"
    parts = [b"\x02", _varint(levels)]
    append, last, varint, double = parts.append, _LAST, _varint, _double
    for i in range(start, start + 3 * levels, 3):
        q, o = raw[i], raw[i + 2]
        append(last[q << 1] if 0 <= q < 0x2000 else varint(q))
        append(double(raw[i + 1] / d))
        append(last[o << 1] if 0 <= o < 0x2000 else varint(o))
    append(b"\x00")
    return b"".join(parts)


def _depth(raw: tuple[int, ...] | None, d: float) -> bytes:
    if raw is None:
        return b"\x00\x00"  # both sides null
    if not isinstance(raw, tuple):  # as the C encoder requires
        raise TypeError("depth must be a tuple")
    levels = len(raw) // 6
    return _depth_side(raw, 0, levels, d) + _depth_side(raw, 3 * levels, levels, d)


_SOME_DOUBLE = struct.Struct("<Bd").pack
_SOME_6_DOUBLES = struct.Struct("<" + "Bd" * 6).pack


def _encode_full(t: Tick, d: float, received_at_ms: int) -> bytes:
    """Every optional field present (a full packet of a tradable instrument): fewer calls, same bytes."""
    v = _varint
    return b"".join((
        _head(t.instrument_token), _MODE_INDEX[t.mode], b"\x01" if t.tradable else b"\x00",
        _doubles2(d, t.last_price),
        b"\x02", v(t[4]), _SOME_DOUBLE(2, t[5]), b"\x02", v(t[6]), b"\x02", v(t[7]), b"\x02", v(t[8]),  # type: ignore[arg-type]
        _SOME_6_DOUBLES(2, t[9], 2, t[10], 2, t[11], 2, t[12], 2, t[13], 2, t[14]),
        b"\x02", v(t[15]), b"\x02", v(t[16]), b"\x02", v(t[17]), b"\x02", v(t[18]), b"\x02", v(t[19]),  # type: ignore[arg-type]
        _depth(t.depth, d), v(received_at_ms),
    ))  # fmt: skip


def encode_tick_py(t: Tick, received_at_ms: int) -> bytes:
    """Avro binary of ``t`` under ``schemas/tick.avsc`` (no framing)."""
    try:
        d = price_divisor(t.instrument_token)
        if t.depth is not None and None not in t[4:20]:
            return _encode_full(t, d, received_at_ms)
        return b"".join((
            _head(t.instrument_token), _MODE_INDEX[t.mode], b"\x01" if t.tradable else b"\x00",
            _doubles2(d, t.last_price),
            _opt_long(t.last_traded_quantity), _opt_double(t.average_traded_price),
            _opt_long(t.volume_traded), _opt_long(t.total_buy_quantity), _opt_long(t.total_sell_quantity),
            _opt_double(t.open), _opt_double(t.high), _opt_double(t.low), _opt_double(t.close),
            _opt_double(t.net_change), _opt_double(t.change_percent), _opt_long(t.last_trade_time_ms),
            _opt_long(t.oi), _opt_long(t.oi_day_high), _opt_long(t.oi_day_low),
            _opt_long(t.exchange_timestamp_ms), _depth(t.depth, d), _varint(received_at_ms),
        ))  # fmt: skip
    except KeyError:  # raised by _MODE_INDEX only; the C encoder's error, word for word
        raise ValueError("mode must be ltp, quote or full") from None
    except AttributeError:  # not a Tick
        raise TypeError("expected a connector.kite.Tick") from None


_OPTIONAL_LONG_FIELDS = frozenset({4, 6, 7, 8, 15, 16, 17, 18, 19})
_OPTIONAL_DOUBLE_FIELDS = frozenset({5, 9, 10, 11, 12, 13, 14})


def _long_fault(v: object) -> str | None:
    if isinstance(v, int) and -(1 << 63) <= v < 1 << 63:
        return None
    return f"{reprlib.repr(v)} is not a 64-bit integer"


def _double_fault(v: object) -> str | None:
    try:
        _double(v)
    except (TypeError, OverflowError, struct.error):
        return f"{reprlib.repr(v)} is not a number that fits a double"
    return None


def _field_fault(i: int, v: object) -> str | None:
    if i == 0:
        return _long_fault(v)
    if i == 1:
        return None if isinstance(v, str) and v in _MODES else f"{reprlib.repr(v)} is not ltp, quote or full"
    if i == 2:
        try:
            bool(v)
        except Exception:  # any error of the value's __bool__ is the fault being described
            return f"{reprlib.repr(v)} has no truth value"
        return None
    if i == 3:
        return _double_fault(v)
    if v is None:
        return None
    if i in _OPTIONAL_LONG_FIELDS:
        return _long_fault(v)
    return _double_fault(v) if i in _OPTIONAL_DOUBLE_FIELDS else None


def _depth_fault(raw: object, d: float) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, tuple):
        return f"a {type(raw).__name__}, not a tuple"
    for i in range(len(raw) // 6 * 6):
        if i % 3 != 1:
            fault = _long_fault(raw[i])
        else:
            try:
                fault = _double_fault(raw[i] / d)
            except (TypeError, OverflowError):
                fault = f"{reprlib.repr(raw[i])} is not a number that fits a double"
        if fault:
            return f"item {i}: {fault}"
    return None


def tick_fault(t: object, received_at_ms: object) -> str | None:
    """Why the Tick encoders reject ``t``: its first field that does not fit ``schemas/tick.avsc``, or None.

    The serializer puts this in its :class:`~connector.errors.SerializationError`, so a bad tick is
    dead-lettered with the same message whether the C or the Python encoder ran.
    """
    if not isinstance(t, tuple) or len(t) != len(Tick._fields):
        return f"expected a connector.kite.Tick, not {type(t).__name__}"
    for i, name in enumerate(Tick._fields[:-1]):
        if fault := _field_fault(i, t[i]):
            return f"{name}: {fault}"
    if fault := _depth_fault(t[-1], price_divisor(t[0])):
        return f"depth: {fault}"
    if fault := _long_fault(received_at_ms):
        return f"received_at_ms: {fault}"
    return None


class Transcoder(Protocol):
    def __call__(
        self,
        message: bytes,
        received_at_ms: int,
        prefix: bytes,
        window_ms: int = -1,
        tokens: set[int] | None = None,
        /,
    ) -> tuple[list[tuple[bytes, bytes, int]], int, int, int] | None: ...


def _load_native() -> tuple[Callable[[Tick, int], bytes] | None, Transcoder | None]:
    """The encoder in C, built at install time where a compiler exists (hatch_build.py), and its
    ``transcode``: a whole binary message to framed values (what decode + encode_tick give), no Tick."""
    try:
        from connector.serde._speedups import encode_tick, transcode
    except ImportError:
        return None, None
    return encode_tick, transcode


native_encode_tick, native_transcode = _load_native()
NATIVE = native_encode_tick is not None
encode_tick: Callable[[Tick, int], bytes] = native_encode_tick or encode_tick_py
