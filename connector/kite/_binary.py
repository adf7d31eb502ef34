"""Binary tick messages: decode and encode. Layout in ``docs/protocol.md``."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from connector.errors import MalformedFrame
from connector.kite._records import _DIVISORS, DEPTH_LEVELS, INDICES_SEGMENT, Mode, Tick

__all__ = ["NATIVE_DECODER", "encode_message", "encode_packet", "parse_binary", "parse_binary_py"]

LTP_LENGTH, INDEX_QUOTE_LENGTH, INDEX_FULL_LENGTH, QUOTE_LENGTH, FULL_LENGTH = 8, 28, 32, 44, 184

# Both official clients read every field as unsigned 32-bit, depth order counts as unsigned 16-bit.
_LTP = struct.Struct(">2I")
_INDEX_QUOTE = struct.Struct(">6Ii")
_INDEX_FULL = struct.Struct(">6IiI")
_QUOTE = struct.Struct(">11I")
_FULL = struct.Struct(">16I" + "IIH2x" * 2 * DEPTH_LEVELS)
_U16 = struct.Struct(">H")

_tuple_new = tuple.__new__  # builds NamedTuples without their argument parsing: this is the hot path
_LTP_MODE, _QUOTE_MODE, _FULL_MODE = Mode.LTP, Mode.QUOTE, Mode.FULL  # enum attribute look-ups are slow
_MODES = (_LTP_MODE, _QUOTE_MODE, _FULL_MODE)


def _load_native() -> Callable[[bytes, type[Tick], tuple[Mode, Mode, Mode]], list[Tick] | None] | None:
    """The same decoder in C, where it was built at install time (hatch_build.py)."""
    try:
        from connector.kite._native import decode
    except ImportError:
        return None
    return decode


_native_decode = _load_native()


def _decode_ltp(data: bytes, off: int) -> Tick:
    token, ltp = _LTP.unpack_from(data, off)
    return Tick(token, _LTP_MODE, token & 0xFF != INDICES_SEGMENT, ltp / _DIVISORS[token & 0xFF])


def _decode_index(data: bytes, off: int, full: bool) -> Tick:
    if full:
        token, ltp, high, low, opn, close, _, ts = _INDEX_FULL.unpack_from(data, off)
        ts_ms: int | None = ts * 1000
    else:
        token, ltp, high, low, opn, close, _ = _INDEX_QUOTE.unpack_from(data, off)
        ts_ms = None
    d = _DIVISORS[token & 0xFF]
    last, closed = ltp / d, close / d
    pct = (last - closed) * 100 / closed if closed != 0 else 0
    return _tuple_new(Tick, (
        token, _FULL_MODE if full else _QUOTE_MODE, token & 0xFF != INDICES_SEGMENT, last,
        None, None, None, None, None, opn / d, high / d, low / d, closed, last - closed, pct,
        None, None, None, None, ts_ms, None,
    ))  # fmt: skip


def _decode_quote(data: bytes, off: int) -> Tick:
    token, ltp, ltq, atp, vol, tbq, tsq, opn, high, low, close = _QUOTE.unpack_from(data, off)
    d = _DIVISORS[token & 0xFF]
    last, closed = ltp / d, close / d
    pct = (last - closed) * 100 / closed if closed != 0 else 0
    return _tuple_new(Tick, (
        token, _QUOTE_MODE, token & 0xFF != INDICES_SEGMENT, last, ltq, atp / d, vol, tbq, tsq,
        opn / d, high / d, low / d, closed, last - closed, pct,
        None, None, None, None, None, None,
    ))  # fmt: skip


def _decode_full(data: bytes, off: int) -> Tick:
    v = _FULL.unpack_from(data, off)
    token = v[0]
    d = _DIVISORS[token & 0xFF]
    last, closed = v[1] / d, v[10] / d
    pct = (last - closed) * 100 / closed if closed != 0 else 0
    return _tuple_new(Tick, (
        token, _FULL_MODE, token & 0xFF != INDICES_SEGMENT, last, v[2], v[3] / d, v[4], v[5], v[6],
        v[7] / d, v[8] / d, v[9] / d, closed, last - closed, pct,
        v[11] * 1000, v[12], v[13], v[14], v[15] * 1000,
        v[16:],
    ))  # fmt: skip


NATIVE_DECODER = _native_decode is not None

_DECODERS: dict[int, Callable[[bytes, int], Tick]] = {
    LTP_LENGTH: _decode_ltp,
    INDEX_QUOTE_LENGTH: lambda data, off: _decode_index(data, off, False),
    INDEX_FULL_LENGTH: lambda data, off: _decode_index(data, off, True),
    QUOTE_LENGTH: _decode_quote,
    FULL_LENGTH: _decode_full,
}


def parse_binary(data: bytes) -> tuple[list[Tick], list[MalformedFrame]]:
    """Decode one binary WebSocket message into ticks.

    Never raises: a packet that cannot be decoded is returned as a :class:`MalformedFrame` beside the
    packets that could. A message shorter than two bytes is a heartbeat and yields nothing.
    """
    if _native_decode is not None and isinstance(data, bytes):  # it refuses mutable buffers
        ticks = _native_decode(data, Tick, _MODES)
        if ticks is not None:
            return ticks, []
    return parse_binary_py(data)


def parse_binary_py(data: bytes) -> tuple[list[Tick], list[MalformedFrame]]:
    """The decoder in Python: the reference, and the one that reports what is malformed."""
    size = len(data)
    if size < 2:
        return [], []
    ticks: list[Tick] = []
    errors: list[MalformedFrame] = []
    decoders = _DECODERS
    off = 2
    for _ in range(_U16.unpack_from(data)[0]):
        if off + 2 > size:
            errors.append(MalformedFrame("message ends before its packet count is reached", data, off))
            return ticks, errors
        length = data[off] << 8 | data[off + 1]
        off += 2
        if off + length > size:
            errors.append(MalformedFrame(f"packet of {length} bytes runs past the end", data, off))
            return ticks, errors
        decode = decoders.get(length)
        if decode is None:
            errors.append(MalformedFrame(f"unknown packet length {length}", data, off))
        else:
            ticks.append(decode(data, off))
        off += length
    if off != size:
        errors.append(MalformedFrame(f"{size - off} bytes after the last packet", data, off))
    return ticks, errors


def _ms_to_s(ms: int | None) -> int:
    return 0 if ms is None else ms // 1000


def _scaled(price: float | None, divisor: float) -> int:
    return 0 if price is None else round(price * divisor)


def encode_packet(tick: Tick) -> bytes:
    """The packet (without its length prefix) that decodes to ``tick``.

    Its mode and whether it carries trade fields (indices do not) pick the layout.
    """
    d = tick.divisor
    head = (tick.instrument_token, _scaled(tick.last_price, d))
    ohlc = tuple(_scaled(p, d) for p in (tick.open, tick.high, tick.low, tick.close))
    if tick.mode == Mode.LTP:
        return _LTP.pack(*head)
    if tick.last_traded_quantity is None:  # index packets carry no trade fields
        change = min(max(_scaled(tick.net_change, d), -(2**31)), 2**31 - 1)  # informational, never decoded
        index = (*head, ohlc[1], ohlc[2], ohlc[0], ohlc[3], change)
        if tick.mode == Mode.QUOTE:
            return _INDEX_QUOTE.pack(*index)
        return _INDEX_FULL.pack(*index, _ms_to_s(tick.exchange_timestamp_ms))
    quote = (
        *head,
        tick.last_traded_quantity or 0,
        _scaled(tick.average_traded_price, d),
        tick.volume_traded or 0,
        tick.total_buy_quantity or 0,
        tick.total_sell_quantity or 0,
        *ohlc,
    )
    if tick.mode == Mode.QUOTE:
        return _QUOTE.pack(*quote)
    depth = tick.depth or (0,) * (6 * DEPTH_LEVELS)
    return _FULL.pack(
        *quote,
        _ms_to_s(tick.last_trade_time_ms),
        tick.oi or 0,
        tick.oi_day_high or 0,
        tick.oi_day_low or 0,
        _ms_to_s(tick.exchange_timestamp_ms),
        *depth,
    )


def encode_message(packets: Iterable[Tick | bytes]) -> bytes:
    """A binary message holding the packets: ticks are encoded, bytes are taken as encoded packets."""
    parts = [encode_packet(p) if isinstance(p, Tick) else p for p in packets]
    out = bytearray(_U16.pack(len(parts)))
    for part in parts:
        out += _U16.pack(len(part))
        out += part
    return bytes(out)
