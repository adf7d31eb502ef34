"""Order reconciliation: what Kite's order book (REST ``GET /orders``) knows that the socket did not say.

The WebSocket drops order updates while it is disconnected and Kite does not replay them. After every
reconnect, at start and on an interval, the caller fetches the day's orders (:func:`fetch_orders`) and
:meth:`OrderBook.reconcile` returns those whose current state the socket never delivered; the caller
publishes them marked ``kite.origin: reconciliation``. :class:`OrderBook` is sans-I/O.

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

import http.client
import json
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from typing import NamedTuple, cast

from connector.errors import AuthError, KiteApiError, MalformedFrame
from connector.kite import OrderUpdate, parse_text
from connector.source import redact
from connector.spool import record_id

__all__ = ["MAX_ORDERS_BODY", "OrderBook", "OrderList", "fetch_orders", "order_record_id", "parse_orders"]

MAX_ORDERS_BODY = 64 << 20  # far above a day's order book; a larger answer is not Kite's
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
                known.progress = progress
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


def order_record_id(update: OrderUpdate) -> str:
    """The ``kite.record_id`` of a reconciled update: a hash of its content, so the same state published
    again (by a later reconciliation, after a restart) carries the same id and consumers can drop it."""
    return record_id(json.dumps(update.to_kiteconnect(), sort_keys=True).encode())


class OrderList(NamedTuple):
    """``GET /orders`` parsed: the orders, and those that could not be read (for the dead-letter topic).

    Each :class:`MalformedFrame` carries the order as an order-update text frame, which the
    connector's own decoder reads, and the reason.
    """

    orders: list[OrderUpdate]
    malformed: list[MalformedFrame]


def parse_orders(body: bytes) -> OrderList:
    """Kite's ``{"status": "success", "data": [order, ...]}``; each order has the postback's fields."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KiteApiError(f"GET /orders answered with something that is not JSON ({exc})") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("status") != "success" or not isinstance(data, list):
        raise KiteApiError(
            'GET /orders answered without Kite\'s {"status": "success", "data": [...]}: '
            "check KITE_API_URL points at Kite's REST API"
        )
    orders: list[OrderUpdate] = []
    malformed: list[MalformedFrame] = []
    for element in data:
        # The same shape as a socket update's data: read by the same parser, kept whole if it fails.
        frame = json.dumps({"type": "order", "data": element}, sort_keys=True).encode()
        if not isinstance(element, dict):
            malformed.append(MalformedFrame("an order in GET /orders is not a JSON object", frame))
            continue
        try:
            # type "order" with an object always parses to an OrderUpdate, or raises
            orders.append(cast(OrderUpdate, parse_text(frame)))
        except MalformedFrame as exc:
            malformed.append(exc)
    return OrderList(orders, malformed)


def fetch_orders(base_url: str, api_key: str, access_token: str, timeout: float = 10.0) -> OrderList:
    """The day's orders from ``{base_url}/orders``.

    Raises :class:`AuthError` when Kite refuses the token, :class:`KiteApiError` for any other failure
    (unreachable, timeout, HTTP error, an answer that is not Kite's). No message carries the token.
    """
    url = f"{base_url.rstrip('/')}/orders"
    try:
        request = urllib.request.Request(
            url, headers={"X-Kite-Version": "3", "Authorization": f"token {api_key}:{access_token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_ORDERS_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise _refused(url, exc, access_token, api_key) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, timed out, cut
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise KiteApiError(
            f"cannot reach {url}: {redact(str(reason), access_token, api_key) or type(reason).__name__}"
        ) from None
    except ValueError as exc:  # urllib's word for a URL it cannot use
        raise KiteApiError(f"cannot fetch orders from {url!r}: {exc}; check KITE_API_URL") from None
    if len(body) > MAX_ORDERS_BODY:
        raise KiteApiError(f"GET {url} answered more than {MAX_ORDERS_BODY >> 20} MiB: not Kite's order book")
    return parse_orders(body)


def _refused(url: str, exc: urllib.error.HTTPError, *secrets: str) -> KiteApiError | AuthError:
    try:
        answer = json.loads(exc.read(1 << 16))
    except (ValueError, OSError):
        answer = None
    answer = answer if isinstance(answer, dict) else {}
    kind = str(answer.get("error_type") or "")
    message = redact(str(answer.get("message") or exc.reason), *secrets)
    if exc.code == 403 or kind == "TokenException":
        return AuthError(
            f"Kite refused the access token for GET {url} (HTTP {exc.code} {kind}: {message}): it has "
            "expired or was revoked; run `kite-connector login` for today's token"
        )
    return KiteApiError(f"GET {url} failed: HTTP {exc.code} {kind or exc.reason}: {message}")
