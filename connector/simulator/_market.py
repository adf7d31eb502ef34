"""A deterministic market: random-walk ticks and order lifecycles, no I/O (the server drives it)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources

from connector.instruments import Instrument, read_instruments
from connector.kite import EXCHANGES, INDICES_SEGMENT, Mode, OrderUpdate, Tick, price_divisor

__all__ = ["Market", "bundled_instruments", "in_mode", "synthetic_instruments"]

# Segment codes for synthetic instruments, so every packet layout and price divisor is exercised.
_SYNTHETIC_SEGMENTS = (
    ("NSE", 1, 0.05),
    ("NFO", 2, 0.05),
    ("CDS", 3, 0.0025),
    ("BSE", 4, 0.01),
    ("MCX", 7, 1.0),
)
# Tick size of an instrument the simulator has no row for, by segment (the common one of each).
_SEGMENT_TICK_SIZE = {3: 0.0025, 4: 0.01, 5: 0.05, 6: 0.0025, 7: 1.0, 8: 0.0025, 12: 1.0}
_MAX_TOKEN = 2**32 - 1  # tokens travel as unsigned 32-bit integers


def in_mode(tick: Tick, mode: Mode) -> Tick:
    """A full-mode ``tick`` as a packet of ``mode`` carries it (LTP: the price; quote: all but depth,
    open interest and times)."""
    if mode == Mode.FULL:
        return tick
    if mode == Mode.LTP:
        return Tick(tick.instrument_token, Mode.LTP, tick.tradable, tick.last_price)
    if not tick.tradable:
        return tick._replace(mode=Mode.QUOTE, exchange_timestamp_ms=None)
    return tick._replace(mode=Mode.QUOTE, last_trade_time_ms=None, oi=None, oi_day_high=None,
                         oi_day_low=None, exchange_timestamp_ms=None, depth=None)  # fmt: skip


def bundled_instruments() -> list[Instrument]:
    """Real instruments from Kite's dump (NSE, BSE, NFO) shipped with the simulator."""
    with resources.as_file(resources.files(__package__) / "instruments.csv") as path:
        return read_instruments(path)


def synthetic_instruments(count: int) -> list[Instrument]:
    """``count`` made-up instruments over several segments, plus two indices, for load tests."""
    out = [
        Instrument(256265, "NIFTY 50", "NSE", "INDICES", "EQ", 0.05, 1, 24000.0),
        Instrument(265, "SENSEX", "BSE", "INDICES", "EQ", 0.01, 1, 80000.0),
    ]
    for i in range(count):
        exchange, seg, tick_size = _SYNTHETIC_SEGMENTS[i % len(_SYNTHETIC_SEGMENTS)]
        token = (0x200000 + i) << 8 | seg
        out.append(Instrument(token, f"SIM{i:05d}", exchange, exchange, "EQ", tick_size, 1, 0.0))
    return out


@dataclass(slots=True)
class _State:
    instrument: Instrument
    price: float
    close: float
    open: float
    high: float
    low: float
    volume: int = 0
    oi: int = 0
    last_ms: int = 0  # exchange time of the last tick: never goes backwards


@dataclass(slots=True)
class _Order:
    update: OrderUpdate
    final_status: str
    due: float


@dataclass
class Market:
    """Prices that walk on each instrument's tick size; the same seed gives the same ticks."""

    instruments: list[Instrument]
    seed: int = 0
    rng: random.Random = field(init=False)
    states: dict[int, _State] = field(init=False)
    _orders: list[_Order] = field(init=False, default_factory=list)
    _order_seq: int = field(init=False, default=0)
    # The day's orders in their latest state, as Kite's order book (GET /orders) shows them.
    order_book: dict[str, OrderUpdate] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.states = {}
        for ins in self.instruments:
            base = ins.last_price if ins.last_price > 0 else self._start_price(ins)
            base = self._on_grid(base, ins)
            self.states[ins.instrument_token] = _State(ins, base, base, base, base, base)

    def _start_price(self, ins: Instrument) -> float:
        return self.rng.uniform(*self._start_range(ins))

    @staticmethod
    def _start_range(ins: Instrument) -> tuple[float, float]:
        return (70, 95) if ins.segment in ("CDS", "BCD") else (50, 5000)

    def _on_grid(self, price: float, ins: Instrument) -> float:
        # Prices travel as integers of the segment's divisor: keep them exactly representable.
        step = max(ins.tick_size, 1 / price_divisor(ins.instrument_token))
        div = price_divisor(ins.instrument_token)
        return round(round(price / step) * step * div) / div

    def knows(self, token: int) -> bool:
        return token in self.states

    def ensure(self, token: int) -> bool:
        """Make ``token`` tradable here even without a row in the instruments: Kite encodes the exchange
        segment in its low byte, which gives the exchange, the price divisor and a usual tick size.
        False for what cannot be a Kite token (not a 32-bit number, or an unknown segment)."""
        if token in self.states:
            return True
        segment = token & 0xFF
        if not 0 < token <= _MAX_TOKEN or segment not in EXCHANGES:
            return False
        exchange = EXCHANGES[segment]
        ins = Instrument(token, f"TOKEN{token}", exchange, exchange, "EQ",
                         _SEGMENT_TICK_SIZE.get(segment, 0.05), 1, 0.0)  # fmt: skip
        # Its own random stream, so subscribing to it changes no other instrument's prices.
        start = random.Random(self.seed * 1_000_003 + token).uniform(*self._start_range(ins))
        base = self._on_grid(start, ins)
        self.states[token] = _State(ins, base, base, base, base, base)
        return True

    def tick(self, token: int, mode: Mode, now: float | None = None) -> Tick:
        """Advance the instrument one step and return its tick in ``mode``."""
        return in_mode(self.advance(token, now), mode)

    def advance(self, token: int, now: float | None = None, depth: bool = True) -> Tick:
        """Advance the instrument one step and return its tick in full mode, which holds every other
        mode's fields: one step of the market, whatever mode each connection asked for. ``depth=False``
        leaves out the order book (the costly part) when no connection wants full mode."""
        s = self.states[token]
        ins, rng = s.instrument, self.rng
        s.price = max(self._on_grid(s.price + rng.randint(-3, 3) * ins.tick_size, ins), ins.tick_size)
        s.high, s.low = max(s.high, s.price), min(s.low, s.price)
        traded = rng.randint(1, 50) * ins.lot_size
        s.volume += traded
        s.oi = max(0, s.oi + rng.randint(-5, 5) * ins.lot_size) if ins.exchange in ("NFO", "MCX") else 0
        s.last_ms = ms = max(s.last_ms, int(time.time() if now is None else now) * 1000)
        change = s.price - s.close
        pct = change * 100 / s.close if s.close else 0
        if token & 0xFF == INDICES_SEGMENT:
            return Tick(token, Mode.FULL, False, s.price, open=s.open, high=s.high, low=s.low, close=s.close,
                        net_change=change, change_percent=pct, exchange_timestamp_ms=ms)  # fmt: skip
        return Tick(
            token, Mode.FULL, True, s.price,
            last_traded_quantity=traded, average_traded_price=self._on_grid((s.high + s.low) / 2, ins),
            volume_traded=s.volume, total_buy_quantity=rng.randint(0, 500_000),
            total_sell_quantity=rng.randint(0, 500_000),
            open=s.open, high=s.high, low=s.low, close=s.close, net_change=change, change_percent=pct,
            last_trade_time_ms=ms, oi=s.oi, oi_day_high=s.oi, oi_day_low=0, exchange_timestamp_ms=ms,
            depth=self._depth(s) if depth else None,
        )  # fmt: skip

    def _depth(self, s: _State) -> tuple[int, ...]:
        # Integer prices of the packet and random() rather than randint(): a third of the cost.
        ins, rnd = s.instrument, self.rng.random
        div = price_divisor(ins.instrument_token)
        step = round(max(ins.tick_size, 1 / div) * div)
        price = round(s.price * div)
        raw: list[int] = []
        for side in (-step, step):
            for i in range(1, 6):
                raw += (1 + int(rnd() * 2000), max(price + side * i, step), 1 + int(rnd() * 40))
        return tuple(raw)

    def place_order(self, now: float) -> OrderUpdate:
        """A new OPEN order on a random tradable instrument; :meth:`due_orders` gives its final update."""
        self._order_seq += 1
        s = self.states[self.rng.choice([t for t in self.states if t & 0xFF != INDICES_SEGMENT])]
        ins = s.instrument
        qty = self.rng.randint(1, 10) * ins.lot_size
        ms = int(now) * 1000
        update = OrderUpdate(
            order_id=f"{int(now)}{self._order_seq:06d}", status="OPEN",
            instrument_token=ins.instrument_token, tradingsymbol=ins.tradingsymbol, exchange=ins.exchange,
            user_id="SIM001", placed_by="SIM001", app_id=1, checksum="", exchange_order_id=None,
            order_timestamp_ms=ms, exchange_update_timestamp_ms=ms, exchange_timestamp_ms=ms,
            variety="regular", order_type="LIMIT", transaction_type=self.rng.choice(("BUY", "SELL")),
            validity="DAY", product="CNC", quantity=qty, disclosed_quantity=0, price=s.price,
            trigger_price=0.0, average_price=0.0, filled_quantity=0, pending_quantity=qty,
            cancelled_quantity=0, unfilled_quantity=qty, market_protection=0.0, meta_json="{}",
            guid=f"sim-{self._order_seq}",
        )  # fmt: skip
        final = self.rng.choices(("COMPLETE", "REJECTED", "CANCELLED"), (6, 2, 2))[0]
        self._orders.append(_Order(update, final, now + self.rng.uniform(0.05, 0.5)))
        self.order_book[update.order_id] = update
        return update

    def due_orders(self, now: float) -> Iterator[OrderUpdate]:
        """Final updates (COMPLETE / REJECTED / CANCELLED) of orders whose time has come."""
        keep: list[_Order] = []
        for order in self._orders:
            if order.due > now:
                keep.append(order)
                continue
            u, qty = order.update, order.update.quantity or 0
            done = order.final_status == "COMPLETE"
            final = u._replace(
                status=order.final_status,
                exchange_order_id=f"1{u.order_id}",
                exchange_update_timestamp_ms=int(now) * 1000,
                filled_quantity=qty if done else 0,
                pending_quantity=0,
                cancelled_quantity=qty if order.final_status == "CANCELLED" else 0,
                average_price=u.price if done else 0.0,
                status_message="RMS: margin exceeds" if order.final_status == "REJECTED" else None,
            )
            self.order_book[u.order_id] = final
            yield final
        self._orders = keep
