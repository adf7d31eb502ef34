"""An Avro encoder for :class:`Tick`, byte-identical to fastavro's ``schemaless_writer``.

It is written from the record declared in ``connector/kite/_layout.py`` (whose field order
``tests/unit/test_layout.py`` holds equal to ``schemas/tick.avsc``): at import, as Python source compiled
once, so it runs as straight-line code. ``tests/unit/test_serde.py`` proves byte equality on random ticks.

Both encoders (this one and the C one in ``_speedups.c``) reject a tick that does not fit the schema with
``ValueError``, ``TypeError``, ``OverflowError`` or ``struct.error``; :func:`tick_fault` then says which
field is at fault, in the same words whichever encoder ran.
"""

from __future__ import annotations

import reprlib
import struct
from collections.abc import Callable
from typing import Any

from connector.kite import Mode, Tick, price_divisor
from connector.kite._layout import DEPTH_LEVEL, MODES, RECORD, TICK_FIELDS, Column, Kind, segment

__all__ = ["NATIVE", "encode_tick", "encode_tick_py", "native_encode_tick", "tick_fault"]

_double = struct.Struct("<d").pack
_MODES = frozenset(MODES)
_LEVEL = len(DEPTH_LEVEL)  # items of Tick.depth a level


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


# The fields written from the token alone, which lead the record: cached per token (tokens are few).
_FROM_TOKEN: dict[str, Callable[[int], bytes]] = {
    "instrument_token": _varint,
    "exchange": lambda token: _string(segment(token & 0xFF).exchange),
    "segment": lambda token: _varint(token & 0xFF),
}
_HEAD = RECORD[: next(i for i, c in enumerate(RECORD) if c.name not in _FROM_TOKEN)]
_HEAD_CACHE: dict[int, bytes] = {}


def _head(token: int) -> bytes:
    head = _HEAD_CACHE.get(token)
    if head is None:
        head = b"".join(_FROM_TOKEN[c.name](token) for c in _HEAD)
        if len(_HEAD_CACHE) < 100_000:
            _HEAD_CACHE[token] = head
    return head


def _opt_long(v: int | None) -> bytes:
    return b"\x00" if v is None else b"\x02" + _varint(v)


def _opt_double(v: float | None) -> bytes:
    return b"\x00" if v is None else b"\x02" + _double(v)


def _joined(items: list[tuple[str, str]], namespace: dict[str, Any]) -> str:
    """The expressions as one tuple's items; a run of doubles (struct code ``d``, or ``Bd`` for a union
    holding one) is packed by one struct, whose ``pack`` goes into ``namespace``."""
    out: list[str] = []
    code, args = "", list[str]()
    for kind, expr in [*items, ("", "")]:
        if kind:
            code, args = code + kind, [*args, *(["2"] if kind == "Bd" else []), expr]
            continue
        if code:
            namespace[f"pack_{code}"] = struct.Struct("<" + code).pack
            out.append(f"pack_{code}({', '.join(args)})")
            code, args = "", []
        if expr:
            out.append(expr)
    return ", ".join(out)


def _column(c: Column, full: bool, index: dict[str, int], sides: list[str]) -> tuple[str, str]:
    """(struct code or "", expression) writing column ``c`` of the Tick ``t``; ``full``: all optional
    fields are known to be present, which takes fewer calls for the same bytes."""
    value = f"t.{c.tick}" if not full or c.tick is None else f"t[{index[c.tick]}]"
    if c.name == "price_divisor":
        return "d", "d"
    if c.name == "received_at":
        return "", "varint(received_at_ms)"
    if c.type == "Mode":
        return "", f"modes[{value}]"
    if c.type == "boolean":
        return "", f'b"\\x01" if {value} else b"\\x00"'
    if c.type == "double":
        return "d", value
    if c.type == "double?":
        return ("Bd", value) if full else ("", f"opt_double({value})")
    if c.type in ("long?", "timestamp-millis?"):
        return "", f'b"\\x02", varint({value})' if full else f"opt_long({value})"
    if c.type == "DepthLevel[]?":  # depth_buy, then depth_sell: the halves of Tick.depth (null: no call)
        sides.append(c.name)
        return "", f'b"\\x00" if t.depth is None else depth_side(t.depth, {len(sides) - 1}, d)'
    raise ValueError(f"no Avro writer for {c}")


def _depth_source() -> str:
    """``depth_side(raw, side, d)``: one side of Tick.depth as an Avro array of DepthLevel, null for None."""
    item = {Kind.U32: "last[q << 1] if 0 <= (q := raw[i + {k}]) < 0x2000 else varint(q)",
            Kind.U16: "last[q << 1] if 0 <= (q := raw[i + {k}]) < 0x2000 else varint(q)",
            Kind.PRICE: "double(raw[i + {k}] / d)"}  # fmt: skip
    level = "\n        ".join(f"append({item[f.kind].format(k=k)})" for k, f in enumerate(DEPTH_LEVEL))
    return f"""
def depth_side(raw, side, d):
    if raw is None:
        return b"\\x00"
    if not isinstance(raw, tuple):  # as the C encoder requires
        raise TypeError("depth must be a tuple")
    levels = len(raw) // {2 * _LEVEL}
    if not levels:
        return b"\\x02\\x00"
    parts = [b"\\x02", varint(levels)]
    append = parts.append
    for i in range(side * {_LEVEL} * levels, (side + 1) * {_LEVEL} * levels, {_LEVEL}):
        {level}
    append(b"\\x00")
    return b"".join(parts)
"""


def _encoder() -> Callable[[Tick, int], bytes]:
    """The encoder of the declared record: every field in order, with a shorter path for a tick that has
    every optional field (a full packet of a tradable instrument)."""
    index = {name: i for i, name in enumerate(TICK_FIELDS)}
    namespace: dict[str, Any] = {
        "head": _head, "modes": {Mode(m): _varint(i) for i, m in enumerate(MODES)}, "varint": _varint,
        "divisors": tuple(segment(code).divisor for code in range(256)), "last": _LAST, "double": _double,
        "opt_long": _opt_long, "opt_double": _opt_double,
    }  # fmt: skip
    rest = RECORD[len(_HEAD) :]
    generic_sides: list[str] = []
    full_sides: list[str] = []
    generic = _joined([_column(c, False, index, generic_sides) for c in rest], namespace)
    full = _joined([_column(c, True, index, full_sides) for c in rest], namespace)
    # Whether every optional field is there: the depth first, the one most ticks lack, by identity.
    optional = sorted({index[c.tick] for c in rest if c.type.endswith("?") and c.tick and c.tick != "depth"})
    if optional != list(range(optional[0], optional[-1] + 1)):
        raise ValueError("the optional fields of Tick must be contiguous")
    source = (
        _depth_source()
        + f"""
def function(t, received_at_ms):
    d = divisors[t.instrument_token & 0xFF]
    if t.depth is not None and None not in t[{optional[0]}:{optional[-1] + 1}]:
        return b"".join((head(t.instrument_token), {full}))
    return b"".join((head(t.instrument_token), {generic}))
"""
    )
    exec(source, namespace)  # source built from the layout only, never from input
    encode: Callable[[Tick, int], bytes] = namespace["function"]
    return encode


_encode = _encoder()


def encode_tick_py(t: Tick, received_at_ms: int) -> bytes:
    """Avro binary of ``t`` under ``schemas/tick.avsc`` (no framing)."""
    try:
        return _encode(t, received_at_ms)
    except KeyError:  # raised by the mode look-up only; the C encoder's error, word for word
        raise ValueError("mode must be ltp, quote or full") from None
    except AttributeError:  # not a Tick
        raise TypeError("expected a connector.kite.Tick") from None


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


def _mode_fault(v: object) -> str | None:
    return None if isinstance(v, str) and v in _MODES else f"{reprlib.repr(v)} is not ltp, quote or full"


def _bool_fault(v: object) -> str | None:
    try:
        bool(v)
    except Exception:  # any error of the value's __bool__ is the fault being described
        return f"{reprlib.repr(v)} has no truth value"
    return None


_FAULTS: dict[str, Callable[[object], str | None]] = {
    "long": _long_fault, "double": _double_fault, "Mode": _mode_fault, "boolean": _bool_fault,
    "long?": _long_fault, "timestamp-millis?": _long_fault, "double?": _double_fault,
}  # fmt: skip
# Tick field → (may it be None, what is wrong with a value), from the declared record; depth is checked
# apart, as its prices are divided first.
_CHECKS = {c.tick: (c.type.endswith("?"), _FAULTS[c.type]) for c in RECORD if c.tick and c.type in _FAULTS}


def _depth_fault(raw: object, d: float) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, tuple):
        return f"a {type(raw).__name__}, not a tuple"
    for i in range(len(raw) // (2 * _LEVEL) * 2 * _LEVEL):
        if DEPTH_LEVEL[i % _LEVEL].kind is not Kind.PRICE:
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
    if not isinstance(t, tuple) or len(t) != len(TICK_FIELDS):
        return f"expected a connector.kite.Tick, not {type(t).__name__}"
    for name, v in zip(TICK_FIELDS, t, strict=True):
        if name in _CHECKS:
            optional, fault_of = _CHECKS[name]
            if not (optional and v is None) and (fault := fault_of(v)):
                return f"{name}: {fault}"
    if fault := _depth_fault(t[TICK_FIELDS.index("depth")], price_divisor(t[0])):
        return f"depth: {fault}"
    if fault := _long_fault(received_at_ms):
        return f"received_at_ms: {fault}"
    return None


def _load_native() -> Callable[[Tick, int], bytes] | None:
    """The encoder in C, built at install time where a compiler exists (hatch_build.py)."""
    try:
        from connector.serde._speedups import encode_tick
    except ImportError:
        return None
    return encode_tick


native_encode_tick = _load_native()
NATIVE = native_encode_tick is not None
encode_tick: Callable[[Tick, int], bytes] = native_encode_tick or encode_tick_py
