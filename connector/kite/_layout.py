"""The tick layout, declared once: Kite's binary packets, the exchange segments and the Avro Tick record.

Everything that reads or writes tick bytes is derived from these tables:
- ``_binary.py`` builds its struct formats, decoders and encoders from them, ``_records.py`` its
  exchange names and price divisors; ``connector/serde/_tick.py`` its Avro encoder and
  ``connector/candles/_decode.py`` its field-reading expression;
- ``_layout_gen.py`` renders ``_layout.h`` (the tables of the C decoder, encoder and transcoder; the build
  renders it again before compiling) and the layout tables of ``docs/protocol.md``.
``tests/unit/test_layout.py`` fails on any drift: a stale header or document, a schema whose fields differ.

Data only, importing nothing of the project: the build renders the header from it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "DEPTH_LEVEL",
    "DEPTH_LEVELS",
    "DEPTH_LEVEL_SIZE",
    "FIELDS",
    "MODES",
    "PACKETS",
    "RECORD",
    "SEGMENTS",
    "TICK_FIELDS",
    "Column",
    "Field",
    "Kind",
    "LevelField",
    "Packet",
    "Segment",
    "carried",
    "segment",
]


class Segment(NamedTuple):
    """An exchange segment: the low byte of an instrument token names it."""

    code: int
    exchange: str
    divisor: float  # a packet's prices are integers of 1/divisor rupee
    tradable: bool = True


SEGMENTS = (
    Segment(1, "NSE", 100.0),
    Segment(2, "NFO", 100.0),
    Segment(3, "CDS", 1e7),
    Segment(4, "BSE", 100.0),
    Segment(5, "BFO", 100.0),
    Segment(6, "BCD", 1e4),
    Segment(7, "MCX", 100.0),
    Segment(8, "MCXSX", 100.0),
    Segment(9, "INDICES", 100.0, tradable=False),
    Segment(12, "NCO", 1e4),
)
_KNOWN = {s.code: s for s in SEGMENTS}


def segment(code: int) -> Segment:
    """The segment of ``code`` (0-255); one Kite does not list is tradable, in paise, named by its code."""
    return _KNOWN.get(code) or Segment(code, f"SEGMENT_{code}", 100.0)


MODES = ("ltp", "quote", "full")  # connector.kite.Mode, and the symbols of the Avro enum, in this order


class Packet(NamedTuple):
    """A kind of tick packet; its length alone tells it from the others."""

    name: str
    length: int
    mode: str


PACKETS = (
    Packet("ltp", 8, "ltp"),
    Packet("index_quote", 28, "quote"),
    Packet("index_full", 32, "full"),
    Packet("quote", 44, "quote"),
    Packet("full", 184, "full"),
)


class Kind(StrEnum):
    """How a packet field is stored (big-endian, as everything in the protocol) and read."""

    U32 = "u32"  # unsigned 32-bit integer, read as is
    PRICE = "price"  # unsigned 32-bit integer of 1/divisor rupee, read as rupees
    TIME = "time"  # unsigned 32-bit epoch seconds, read as epoch milliseconds
    I32 = "i32"  # signed 32-bit: the index packets' change, which neither official client reads, nor we
    U16 = "u16"  # unsigned 16-bit (a depth level's order count)
    DEPTH = "depth"  # the order book: DEPTH_LEVELS buy levels, then as many sell levels

    @property
    def width(self) -> int:
        return 2 * DEPTH_LEVELS * DEPTH_LEVEL_SIZE if self is Kind.DEPTH else 2 if self is Kind.U16 else 4


class Field(NamedTuple):
    """A field of the packets that carry it: its byte offset in each kind of :data:`PACKETS`."""

    name: str  # as in schemas/tick.avsc (the i32 change is in no record)
    kind: Kind
    offsets: tuple[int | None, ...]  # in the order of PACKETS; None where the packet does not carry it
    tick: str  # the connector.kite.Tick field it is read into and written from


class LevelField(NamedTuple):
    """A field of one depth level (the Tick keeps levels raw, the price as an integer)."""

    name: str
    kind: Kind
    offset: int


U32, PRICE, TIME, I32, U16, DEPTH = Kind.U32, Kind.PRICE, Kind.TIME, Kind.I32, Kind.U16, Kind.DEPTH
DEPTH_LEVELS = 5  # a side
DEPTH_LEVEL_SIZE = 12  # two bytes of padding follow the order count
DEPTH_LEVEL = (LevelField("quantity", U32, 0), LevelField("price", PRICE, 4), LevelField("orders", U16, 8))


def _field(name: str, kind: Kind, *offsets: int | None, tick: str = "") -> Field:
    return Field(name, kind, offsets, tick or name)


NO = None  # not carried
# fmt: off
# byte offset in each packet kind:
#                                         ltp   index_q  index_f quote  full
FIELDS = (
    _field("instrument_token",     U32,     0,        0,       0,    0,    0),
    _field("last_price",           PRICE,   4,        4,       4,    4,    4),
    _field("last_traded_quantity", U32,    NO,       NO,      NO,    8,    8),
    _field("average_traded_price", PRICE,  NO,       NO,      NO,   12,   12),
    _field("volume_traded",        U32,    NO,       NO,      NO,   16,   16),
    _field("total_buy_quantity",   U32,    NO,       NO,      NO,   20,   20),
    _field("total_sell_quantity",  U32,    NO,       NO,      NO,   24,   24),
    _field("open",                 PRICE,  NO,       16,      16,   28,   28),
    _field("high",                 PRICE,  NO,        8,       8,   32,   32),
    _field("low",                  PRICE,  NO,       12,      12,   36,   36),
    _field("close",                PRICE,  NO,       20,      20,   40,   40),
    _field("change",               I32,    NO,       24,      24,   NO,   NO, tick="net_change"),
    _field("last_trade_time",      TIME,   NO,       NO,      NO,   NO,   44, tick="last_trade_time_ms"),
    _field("oi",                   U32,    NO,       NO,      NO,   NO,   48),
    _field("oi_day_high",          U32,    NO,       NO,      NO,   NO,   52),
    _field("oi_day_low",           U32,    NO,       NO,      NO,   NO,   56),
    _field("exchange_timestamp",   TIME,   NO,       NO,      28,   NO,   60, tick="exchange_timestamp_ms"),
    _field("depth",                DEPTH,  NO,       NO,      NO,   NO,   64),
)
# fmt: on


def carried(packet: Packet) -> list[tuple[int, Field]]:
    """(offset, field) of each field ``packet`` carries, in byte order."""
    at = PACKETS.index(packet)
    return sorted(((off, f) for f in FIELDS if (off := f.offsets[at]) is not None), key=lambda pair: pair[0])


class Column(NamedTuple):
    """A field of schemas/tick.avsc, in order, with its type in short (``?``: a union with null)."""

    name: str
    type: str  # long, int, string, boolean, double, Mode, timestamp-millis, DepthLevel[], each maybe with ?
    tick: str | None  # the Tick field written; None: from the token's segment (exchange, segment,
    # price_divisor) or the time the message was received (received_at)


RECORD = (
    Column("instrument_token", "long", "instrument_token"),
    Column("exchange", "string", None),
    Column("segment", "int", None),
    Column("mode", "Mode", "mode"),
    Column("tradable", "boolean", "tradable"),
    Column("price_divisor", "double", None),
    Column("last_price", "double", "last_price"),
    Column("last_traded_quantity", "long?", "last_traded_quantity"),
    Column("average_traded_price", "double?", "average_traded_price"),
    Column("volume_traded", "long?", "volume_traded"),
    Column("total_buy_quantity", "long?", "total_buy_quantity"),
    Column("total_sell_quantity", "long?", "total_sell_quantity"),
    Column("open", "double?", "open"),
    Column("high", "double?", "high"),
    Column("low", "double?", "low"),
    Column("close", "double?", "close"),
    Column("net_change", "double?", "net_change"),
    Column("change_percent", "double?", "change_percent"),
    Column("last_trade_time", "timestamp-millis?", "last_trade_time_ms"),
    Column("oi", "long?", "oi"),
    Column("oi_day_high", "long?", "oi_day_high"),
    Column("oi_day_low", "long?", "oi_day_low"),
    Column("exchange_timestamp", "timestamp-millis?", "exchange_timestamp_ms"),
    Column("depth_buy", "DepthLevel[]?", "depth"),  # the first half of Tick.depth
    Column("depth_sell", "DepthLevel[]?", "depth"),  # the second half
    Column("received_at", "timestamp-millis", None),
)

# The fields of connector.kite.Tick, in order. A decoder reads them from the packet, except four it
# computes: mode (the packet's), tradable (the segment's), and where the packet carries the close,
# net_change = last_price - close and change_percent = net_change * 100 / close (0.0 when close is 0).
TICK_FIELDS = tuple(dict.fromkeys(c.tick for c in RECORD if c.tick is not None))
