"""The order book: which order states were seen, so reconciliation publishes only what the socket missed.

The WebSocket drops order updates while it is disconnected and Kite does not replay them. After every
reconnect, at start and on an interval, the reconciler fetches the day's orders (``GET /orders``) and
:meth:`OrderBook.reconcile` returns those whose current state the socket never delivered; they are
published marked ``kite.origin: reconciliation``. Sans-I/O.

An order's *state* is what a consumer acts on: status, the fill (filled, pending and cancelled quantity,
average price) and the terms a modification changes (quantity, price, trigger price). Timestamps, texts
and checksums are left out: they change with no new state, or differ between the two feeds. The socket
reports an open order that was modified or partly filled as ``UPDATE`` where the order book says
``OPEN``, so the two count as the same status.

The order book can lag the socket. A state is not published if it is behind one already seen for the
order: a terminal status (COMPLETE, CANCELLED, REJECTED) is ahead of any other, a larger filled quantity
is ahead, and then a later exchange update time. Memory holds one day's orders: the book is cleared when
an order placed on a later (IST) day arrives, and is capped with least-recently-changed eviction. An
evicted or cleared order can at worst be published once more, never missed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from typing import NamedTuple

from connector.kite import OrderUpdate

__all__ = ["OrderBook"]

_TERMINAL = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
_SAME_STATUS = {"UPDATE": "OPEN"}
_STATES_PER_ORDER = 64  # an order's distinct states kept (partial fills add one each)
_IST = timezone(timedelta(hours=5, minutes=30))  # Kite's order book is per Indian trading day

State = tuple[str, int | None, float | None, float | None, int | None, int | None, int | None, float | None]


class _Progress(NamedTuple):
    terminal: bool
    filled: int
    updated_ms: int | None

    def behind(self, other: _Progress) -> bool:
        if self.terminal != other.terminal:
            return other.terminal
        if self.filled != other.filled:
            return self.filled < other.filled
        if self.updated_ms is not None and other.updated_ms is not None:
            return self.updated_ms < other.updated_ms
        return False


class _Order:
    __slots__ = ("progress", "states")

    def __init__(self, progress: _Progress) -> None:
        self.progress = progress
        self.states: OrderedDict[State, None] = OrderedDict()  # an ordered set, oldest first


def _state(u: OrderUpdate) -> State:
    return (
        _SAME_STATUS.get(u.status, u.status),
        u.quantity,
        u.price,
        u.trigger_price,
        u.filled_quantity,
        u.pending_quantity,
        u.cancelled_quantity,
        u.average_price,
    )


def _progress(u: OrderUpdate) -> _Progress:
    return _Progress(u.status in _TERMINAL, u.filled_quantity or 0, u.exchange_update_timestamp_ms)


def _day(u: OrderUpdate) -> date | None:
    ms = u.order_timestamp_ms
    return None if ms is None else datetime.fromtimestamp(ms / 1000, _IST).date()


class OrderBook:
    """The order states seen so far today, per order id. Safe to share between threads."""

    def __init__(self, max_orders: int = 50_000) -> None:
        if max_orders < 1:
            raise ValueError("max_orders must be at least 1")
        self._max = max_orders
        self._orders: OrderedDict[str, _Order] = OrderedDict()  # least recently changed first
        self._day: date | None = None
        self._mutex = threading.Lock()

    def __len__(self) -> int:
        return len(self._orders)

    def seen(self, update: OrderUpdate) -> None:
        """An update the socket delivered (and the caller published)."""
        with self._mutex:
            self._record(update)

    def reconcile(self, rest_orders: Iterable[OrderUpdate]) -> list[OrderUpdate]:
        """The orders of ``rest_orders`` whose state was not seen and is not behind one that was.

        They count as seen from now on, so the next reconciliation does not return them again.
        """
        missed: list[OrderUpdate] = []
        with self._mutex:
            for update in rest_orders:
                self._new_day(update)
                known = self._orders.get(update.order_id)
                if known is not None and (
                    _state(update) in known.states or _progress(update).behind(known.progress)
                ):
                    continue
                self._record(update)
                missed.append(update)
        return missed

    def _record(self, update: OrderUpdate) -> None:
        self._new_day(update)
        orders, progress = self._orders, _progress(update)
        known = orders.get(update.order_id)
        if known is None:
            known = orders[update.order_id] = _Order(progress)
            if len(orders) > self._max:
                orders.popitem(last=False)
        else:
            orders.move_to_end(update.order_id)
            if not progress.behind(known.progress):
                # An update without a time does not forget the time already known for the order
                # (else an older timed state fetched again would no longer look behind).
                known.progress = progress._replace(
                    updated_ms=progress.updated_ms or known.progress.updated_ms
                )
        known.states[_state(update)] = None
        known.states.move_to_end(_state(update))
        if len(known.states) > _STATES_PER_ORDER:
            known.states.popitem(last=False)

    def _new_day(self, update: OrderUpdate) -> None:
        day = _day(update)
        if day is not None and (self._day is None or day > self._day):
            if self._day is not None:
                self._orders.clear()  # Kite's order book starts empty each day
            self._day = day
