"""Typed records the Kite protocol carries: ticks, order updates, errors and messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple

from connector.kite._layout import DEPTH_LEVEL, DEPTH_LEVELS, SEGMENTS, segment

__all__ = [
    "EXCHANGES",
    "INDICES_SEGMENT",
    "DepthLevel",
    "KiteError",
    "KiteMessage",
    "Mode",
    "OrderUpdate",
    "Tick",
    "exchanges_of",
    "pack_depth",
    "price_divisor",
]

# Segment (low byte of the instrument token) → exchange segment name, as Kite numbers them (_layout.py).
EXCHANGES: dict[int, str] = {s.code: s.exchange for s in SEGMENTS}
INDICES_SEGMENT = next(s.code for s in SEGMENTS if s.exchange == "INDICES")
# Kite writes order times as IST wall-clock strings with no offset.
IST = timezone(timedelta(hours=5, minutes=30), "IST")
KITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# By segment code, for the decoders' look-ups: the name (known or not), the divisor, tradable.
_EXCHANGE_NAMES = tuple(segment(code).exchange for code in range(256))
_DIVISORS = tuple(segment(code).divisor for code in range(256))
_TRADABLE = tuple(segment(code).tradable for code in range(256))
_SIDE = len(DEPTH_LEVEL) * DEPTH_LEVELS  # items of Tick.depth a side: (quantity, price, orders) a level


@lru_cache(maxsize=1024)
def exchanges_of(segments: int) -> tuple[str, ...]:
    """The exchanges of a segment mask (bit ``s`` set: a tick of segment ``s``), as transcoders return it."""
    return tuple(_EXCHANGE_NAMES[s] for s in range(256) if segments >> s & 1)


def price_divisor(instrument_token: int) -> float:
    """What the integer prices of this instrument's packets are divided by to give rupees."""
    return _DIVISORS[instrument_token & 0xFF]


class Mode(StrEnum):
    LTP = "ltp"
    QUOTE = "quote"
    FULL = "full"


class DepthLevel(NamedTuple):
    """One level of the order book: ``quantity`` in units, ``price`` in rupees, ``orders`` count."""

    quantity: int
    price: float
    orders: int


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


class Tick(NamedTuple):
    """One decoded tick packet. Fields a mode or an index packet does not carry are ``None``.

    Prices are rupees (the packet's integer divided by :attr:`divisor`); ``net_change`` is the absolute
    change from the previous close (what Kite's JSON and the Go client report), ``change_percent`` the
    percent change (what the official Python client calls ``change``). Times are UTC epoch milliseconds.

    ``depth`` is the order book as the packet carries it, 5 buy then 5 sell levels of (quantity, price
    as an integer of the divisor, orders): building level objects for every tick costs more than most
    consumers need, so :attr:`depth_buy` / :attr:`depth_sell` give them in rupees on demand.
    """

    instrument_token: int
    mode: Mode
    tradable: bool
    last_price: float
    last_traded_quantity: int | None = None
    average_traded_price: float | None = None
    volume_traded: int | None = None
    total_buy_quantity: int | None = None
    total_sell_quantity: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    net_change: float | None = None
    change_percent: float | None = None
    last_trade_time_ms: int | None = None
    oi: int | None = None
    oi_day_high: int | None = None
    oi_day_low: int | None = None
    exchange_timestamp_ms: int | None = None
    depth: tuple[int, ...] | None = None

    @property
    def depth_buy(self) -> tuple[DepthLevel, ...] | None:
        """The five best bids, best first (full mode only)."""
        return self._levels(0)

    @property
    def depth_sell(self) -> tuple[DepthLevel, ...] | None:
        """The five best offers, best first (full mode only)."""
        return self._levels(_SIDE)

    def _levels(self, start: int) -> tuple[DepthLevel, ...] | None:
        raw = self.depth
        if raw is None:
            return None
        d = _DIVISORS[self.instrument_token & 0xFF]
        return tuple(DepthLevel(raw[i], raw[i + 1] / d, raw[i + 2]) for i in range(start, start + _SIDE, 3))

    @property
    def segment(self) -> int:
        return self.instrument_token & 0xFF

    @property
    def exchange(self) -> str:
        return _EXCHANGE_NAMES[self.instrument_token & 0xFF]

    @property
    def divisor(self) -> float:
        return _DIVISORS[self.instrument_token & 0xFF]

    @property
    def is_index(self) -> bool:
        return self.segment == INDICES_SEGMENT

    @property
    def exchange_timestamp(self) -> datetime | None:
        return _utc(self.exchange_timestamp_ms)

    @property
    def last_trade_time(self) -> datetime | None:
        return _utc(self.last_trade_time_ms)

    def to_kiteconnect(self) -> dict[str, Any]:
        """The dict the official ``kiteconnect`` client builds for this packet, key for key.

        One deliberate difference: its datetimes are naive local time, these are timezone-aware UTC.
        """
        d: dict[str, Any] = {
            "tradable": self.tradable,
            "mode": str(self.mode),
            "instrument_token": self.instrument_token,
            "last_price": self.last_price,
        }
        if self.mode == Mode.LTP:
            return d
        if self.last_traded_quantity is not None:
            d["last_traded_quantity"] = self.last_traded_quantity
            d["average_traded_price"] = self.average_traded_price
            d["volume_traded"] = self.volume_traded
            d["total_buy_quantity"] = self.total_buy_quantity
            d["total_sell_quantity"] = self.total_sell_quantity
        d["ohlc"] = {"open": self.open, "high": self.high, "low": self.low, "close": self.close}
        d["change"] = self.change_percent
        if self.mode == Mode.FULL:
            if self.last_traded_quantity is not None:
                d["last_trade_time"] = self.last_trade_time
                d["oi"] = self.oi
                d["oi_day_high"] = self.oi_day_high
                d["oi_day_low"] = self.oi_day_low
            d["exchange_timestamp"] = self.exchange_timestamp
            if self.depth_buy is not None and self.depth_sell is not None:
                d["depth"] = {
                    "buy": [lvl._asdict() for lvl in self.depth_buy],
                    "sell": [lvl._asdict() for lvl in self.depth_sell],
                }
        return d

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every field, ISO-8601 UTC times, plus exchange and segment."""
        d: dict[str, Any] = {k: v for k, v in self._asdict().items() if v is not None}
        d.pop("depth", None)
        if self.depth is not None:
            d["depth_buy"] = [lvl._asdict() for lvl in self.depth_buy or ()]
            d["depth_sell"] = [lvl._asdict() for lvl in self.depth_sell or ()]
        d["mode"] = str(self.mode)
        d["exchange"] = self.exchange
        for key in ("exchange_timestamp_ms", "last_trade_time_ms"):
            if key in d:
                d[key.removesuffix("_ms")] = _iso(d.pop(key))
        return d


def pack_depth(buy: Iterable[DepthLevel], sell: Iterable[DepthLevel], divisor: float) -> tuple[int, ...]:
    """The raw form of :attr:`Tick.depth` for up to five levels a side (missing levels are zero)."""
    raw: list[int] = []
    for side in (list(buy), list(sell)):
        if len(side) > DEPTH_LEVELS:
            raise ValueError(f"a packet carries {DEPTH_LEVELS} depth levels a side, not {len(side)}")
        for lvl in side + [DepthLevel(0, 0.0, 0)] * (DEPTH_LEVELS - len(side)):
            raw += (lvl.quantity, round(lvl.price * divisor), lvl.orders)
    return tuple(raw)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class OrderUpdate(NamedTuple):
    """An order update (Kite's ``{"type": "order"}`` text message, same shape as a postback).

    Times are UTC epoch milliseconds (Kite sends IST wall-clock strings). Fields Kite adds that this
    record does not model are kept in ``extra`` as JSON text, so nothing is lost.
    """

    order_id: str
    status: str
    instrument_token: int | None
    tradingsymbol: str | None
    exchange: str | None
    user_id: str | None = None
    placed_by: str | None = None
    app_id: int | None = None
    checksum: str | None = None
    exchange_order_id: str | None = None
    parent_order_id: str | None = None
    status_message: str | None = None
    status_message_raw: str | None = None
    order_timestamp_ms: int | None = None
    exchange_update_timestamp_ms: int | None = None
    exchange_timestamp_ms: int | None = None
    variety: str | None = None
    order_type: str | None = None
    transaction_type: str | None = None
    validity: str | None = None
    product: str | None = None
    quantity: int | None = None
    disclosed_quantity: int | None = None
    price: float | None = None
    trigger_price: float | None = None
    average_price: float | None = None
    filled_quantity: int | None = None
    pending_quantity: int | None = None
    cancelled_quantity: int | None = None
    unfilled_quantity: int | None = None
    market_protection: float | None = None
    meta_json: str | None = None
    tag: str | None = None
    guid: str | None = None
    extra: dict[str, str] = {}  # noqa: RUF012 - NamedTuple defaults are shared and never mutated here

    def to_kiteconnect(self) -> dict[str, Any]:
        """The ``data`` dict as Kite sends it (IST time strings, ``meta`` object, extra fields inline)."""
        d: dict[str, Any] = self._asdict()
        for key in ("order_timestamp_ms", "exchange_update_timestamp_ms", "exchange_timestamp_ms"):
            ms = d.pop(key)
            d[key.removesuffix("_ms")] = (
                None if ms is None else datetime.fromtimestamp(ms / 1000, IST).strftime(KITE_TIME_FORMAT)
            )
        meta = d.pop("meta_json")
        d["meta"] = None if meta is None else json.loads(meta)
        d.update({k: json.loads(v) for k, v in d.pop("extra").items()})
        return d

    def to_json_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = self._asdict()
        for key in ("order_timestamp_ms", "exchange_update_timestamp_ms", "exchange_timestamp_ms"):
            ms = d.pop(key)
            d[key.removesuffix("_ms")] = None if ms is None else _iso(ms)
        meta = d.pop("meta_json")
        d["meta"] = None if meta is None else json.loads(meta)
        extra = d.pop("extra")
        d.update({k: json.loads(v) for k, v in extra.items()})
        return d


class KiteError(NamedTuple):
    """An ``{"type": "error"}`` text message from Kite."""

    message: str


class KiteMessage(NamedTuple):
    """An ``{"type": "message"}`` text message from Kite (broadcast notices)."""

    message: str
