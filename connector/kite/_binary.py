"""Binary tick messages: decode and encode, both derived from the layout declared in ``_layout.py``.

Each packet kind's decoder and encoder is Python source written from the layout at import time and
compiled once (as ``collections.namedtuple`` does): straight-line code, as fast as written by hand, that
cannot disagree with the table.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from connector.errors import MalformedFrame
from connector.kite._layout import (
    DEPTH_LEVEL,
    DEPTH_LEVEL_SIZE,
    DEPTH_LEVELS,
    MODES,
    PACKETS,
    TICK_FIELDS,
    Kind,
    Packet,
    carried,
)
from connector.kite._records import _DIVISORS, _TRADABLE, Mode, Tick

__all__ = [
    "NATIVE_DECODER",
    "encode_message",
    "encode_packet",
    "packet_struct",
    "parse_binary",
    "parse_binary_py",
]

_U16 = struct.Struct(">H")
_CODES = {Kind.U32: "I", Kind.PRICE: "I", Kind.TIME: "I", Kind.I32: "i", Kind.U16: "H"}
_DEPTH_ITEMS = 2 * DEPTH_LEVELS * len(DEPTH_LEVEL)


def _level_format() -> str:
    fmt, at = "", 0
    for f in DEPTH_LEVEL:
        fmt += f"{f.offset - at}x" * (f.offset > at) + _CODES[f.kind]
        at = f.offset + f.kind.width
    return fmt + f"{DEPTH_LEVEL_SIZE - at}x" * (at < DEPTH_LEVEL_SIZE)


def packet_struct(packet: Packet) -> struct.Struct:
    """The packet's fields in byte order (a depth as its levels' fields), gaps and tail skipped."""
    fmt, at = ">", 0
    for off, f in carried(packet):
        fmt += f"{off - at}x" * (off > at)
        fmt += _level_format() * 2 * DEPTH_LEVELS if f.kind is Kind.DEPTH else _CODES[f.kind]
        at = off + f.kind.width
    return struct.Struct(fmt + f"{packet.length - at}x" * (packet.length > at))


def _compiled(source: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    exec(source, namespace)  # source built from the layout only, never from input
    function: Callable[..., Any] = namespace["function"]
    return function


def _decoder(packet: Packet) -> Callable[[bytes, int], Tick]:
    """``decode(data, offset) -> Tick`` for one packet kind: ``unpack_from`` and one tuple, no loop."""
    values, i = {"mode": "mode", "tradable": "tradable[s]"}, 0
    for _, f in carried(packet):
        width = _DEPTH_ITEMS if f.kind is Kind.DEPTH else 1
        reads = {Kind.U32: f"v[{i}]", Kind.PRICE: f"v[{i}] / d", Kind.TIME: f"v[{i}] * 1000",
                 Kind.DEPTH: f"v[{i}:{i + width}]"}  # fmt: skip
        if f.kind in reads:  # the i32 change of index packets is not read
            values[f.tick] = reads[f.kind]
        i += width
    lines = [f"s = {values['instrument_token']} & 0xFF", "d = divisors[s]"]
    if "close" in values:  # the two fields computed from the last price and the close
        lines.append(f"last, close = {values['last_price']}, {values['close']}")
        values.update(last_price="last", close="close", net_change="last - close",
                      change_percent="(last - close) * 100 / close if close != 0 else 0.0")  # fmt: skip
    fields = ", ".join(values.get(name, "None") for name in TICK_FIELDS)
    source = "\n    ".join(["def function(data, off):", "v = unpack_from(data, off)", *lines,
                            f"return tuple_new(Tick, ({fields},))"])  # fmt: skip
    namespace = {
        "unpack_from": packet_struct(packet).unpack_from,
        "divisors": _DIVISORS,
        "tradable": _TRADABLE,
        "mode": Mode(packet.mode),
        "tuple_new": tuple.__new__,
        "Tick": Tick,
    }
    return _compiled(source, namespace)


def _scaled(price: float | None, divisor: float) -> int:
    return 0 if price is None else round(price * divisor)


def _seconds(ms: int | None) -> int:
    return 0 if ms is None else ms // 1000


def _i32(n: int) -> int:
    return min(max(n, -(2**31)), 2**31 - 1)


def _encoder(packet: Packet) -> Callable[[Tick], bytes]:
    """``encode(tick) -> bytes`` for one packet kind: ``pack`` of every field in byte order."""
    writes = {Kind.U32: "t.{} or 0", Kind.PRICE: "scaled(t.{}, d)", Kind.TIME: "seconds(t.{})",
              Kind.I32: "i32(scaled(t.{}, d))",  # the index packets' change: informational, never decoded
              Kind.DEPTH: "*(t.{} or no_depth)"}  # fmt: skip
    fields = ", ".join(writes[f.kind].format(f.tick) for _, f in carried(packet))
    source = f"def function(t):\n    d = divisors[t.instrument_token & 0xFF]\n    return pack({fields})"
    namespace = {"pack": packet_struct(packet).pack, "divisors": _DIVISORS, "scaled": _scaled,
                 "seconds": _seconds, "i32": _i32, "no_depth": (0,) * _DEPTH_ITEMS}  # fmt: skip
    return _compiled(source, namespace)


def _load_native() -> Callable[[bytes, type[Tick], tuple[Mode, ...]], list[Tick] | None] | None:
    """The same decoder in C, where it was built at install time (hatch_build.py)."""
    try:
        from connector.kite._native import decode
    except ImportError:
        return None
    return decode


_native_decode = _load_native()
NATIVE_DECODER = _native_decode is not None
_MODES = tuple(Mode(m) for m in MODES)  # the decoders' arguments, in the layout's order
_DECODERS = {p.length: _decoder(p) for p in PACKETS}


def _encoders() -> dict[tuple[str, bool], Callable[[Tick], bytes]]:
    """(mode, has trade fields) → the encoder of the packet kind a tick is sent as: that of its mode which
    carries the trade fields (last_traded_quantity ...) when it has them, index packets lacking them."""
    out: dict[tuple[str, bool], Callable[[Tick], bytes]] = {}
    for packet in PACKETS:
        trades = any(f.tick == "last_traded_quantity" for _, f in carried(packet))
        out[packet.mode, trades] = _encoder(packet)
    for mode, trades in list(out):
        out.setdefault((mode, not trades), out[mode, trades])  # a mode with one kind (ltp) takes any tick
    return out


_ENCODERS = _encoders()


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


def encode_packet(tick: Tick) -> bytes:
    """The packet (without its length prefix) that decodes to ``tick``.

    Its mode and whether it carries trade fields (indices do not) pick the layout.
    """
    encode = _ENCODERS.get((tick.mode, tick.last_traded_quantity is not None))
    if encode is None:
        raise ValueError(f"mode must be ltp, quote or full, not {tick.mode!r}")
    return encode(tick)


def encode_message(packets: Iterable[Tick | bytes]) -> bytes:
    """A binary message holding the packets: ticks are encoded, bytes are taken as encoded packets."""
    parts = [encode_packet(p) if isinstance(p, Tick) else p for p in packets]
    out = bytearray(_U16.pack(len(parts)))
    for part in parts:
        out += _U16.pack(len(part))
        out += part
    return bytes(out)
