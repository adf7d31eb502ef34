"""The order book's decisions (what reconciliation publishes), and the identity of a fetched order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.kite import OrderUpdate
from connector.orders import OrderBook, parse_orders, record_id

DAY1 = 1_764_300_000_000  # 2025-11-28 08:50 IST
DAY2 = DAY1 + 86_400_000
TOKEN = "s3cr3t-access-token"


def order(
    order_id: str = "1",
    status: str = "OPEN",
    filled: int = 0,
    updated_ms: int | None = None,
    price: float = 100.0,
    placed_ms: int = DAY1,
) -> OrderUpdate:
    return OrderUpdate(
        order_id=order_id,
        status=status,
        instrument_token=779521,
        tradingsymbol="SBIN",
        exchange="NSE",
        order_timestamp_ms=placed_ms,
        exchange_update_timestamp_ms=updated_ms,
        quantity=10,
        price=price,
        trigger_price=0.0,
        average_price=price if filled else 0.0,
        filled_quantity=filled,
        pending_quantity=10 - filled,
        cancelled_quantity=10 - filled if status == "CANCELLED" else 0,
    )


# -- OrderBook -----------------------------------------------------------------------------------------------
def test_orders_the_socket_missed_are_returned_once() -> None:
    book = OrderBook()
    book.seen(order("1"))
    rest = [order("1"), order("2"), order("3", "COMPLETE", 10)]
    assert book.reconcile(rest) == rest[1:]
    assert book.reconcile(rest) == []
    filled = order("2", filled=4)
    assert book.reconcile([order("1"), filled, order("3", "COMPLETE", 10)]) == [filled]


def test_a_state_seen_on_the_socket_is_not_published_again() -> None:
    book = OrderBook()
    book.seen(order("1", "UPDATE", 4, updated_ms=DAY1 + 5000))  # the socket's word for a partly filled order
    book.seen(order("2", "COMPLETE", 10, updated_ms=DAY1))
    # The order book says OPEN and carries its own timestamp: the same state.
    assert book.reconcile([order("1", "OPEN", 4, updated_ms=DAY1 + 6000)]) == []
    assert book.reconcile([order("2", "COMPLETE", 10)]) == []


def test_a_lagging_order_book_does_not_move_an_order_back() -> None:
    book = OrderBook()
    book.seen(order("1", "COMPLETE", 10, updated_ms=DAY1 + 9000))
    book.seen(order("2", "OPEN", 5, updated_ms=DAY1 + 9000))
    book.seen(order("3", "OPEN", 0, updated_ms=DAY1 + 9000))
    assert book.reconcile([order("1", "OPEN", 0, updated_ms=DAY1 + 1000)]) == []  # behind: terminal
    assert book.reconcile([order("2", "OPEN", 3, updated_ms=DAY1 + 9500)]) == []  # behind: fewer filled
    stale = order("3", "OPEN", 0, updated_ms=DAY1 + 8000, price=99.0)
    assert book.reconcile([stale]) == []  # behind: older exchange update
    modified = order("3", "OPEN", 0, updated_ms=DAY1 + 9900, price=101.0)
    assert book.reconcile([modified]) == [modified]  # a modification the socket missed


def test_a_socket_update_out_of_order_does_not_lower_what_was_seen() -> None:
    book = OrderBook()
    book.seen(order("1", "COMPLETE", 10))
    book.seen(order("1", "UPDATE", 4))  # Kite's OMS events can arrive late
    assert book.reconcile([order("1", "OPEN", 6)]) == []


def test_a_new_trading_day_starts_an_empty_book() -> None:
    book = OrderBook()
    for n in range(5):
        book.seen(order(str(n)))
    assert len(book) == 5
    book.seen(order("9", placed_ms=DAY2))
    assert len(book) == 1
    book.seen(order("8", placed_ms=DAY1))  # an older day's order does not clear today's
    assert len(book) == 2
    assert book.reconcile([order("9", placed_ms=DAY2), order("7", placed_ms=DAY2)]) == [
        order("7", placed_ms=DAY2)
    ]


def test_an_update_without_a_time_does_not_make_an_older_timed_state_new_again() -> None:
    book = OrderBook()
    assert book.reconcile([order("2", "CANCELLED", 3, updated_ms=DAY1 + 1)])
    fetched = [order("2", "COMPLETE", 3, updated_ms=DAY1, price=2.0), order("2", "COMPLETE", 3, price=1.0)]
    assert book.reconcile(fetched) == [fetched[1]], "the timed one is behind what was seen"
    assert book.reconcile(fetched) == [], "and stays behind once an untimed state was recorded"


def test_memory_is_capped_by_evicting_the_least_recently_changed_order() -> None:
    book = OrderBook(max_orders=3)
    for n in range(3):
        book.seen(order(str(n)))
    book.seen(order("0", filled=1))  # "1" is now the least recently changed
    book.seen(order("3"))
    assert len(book) == 3
    assert book.reconcile([order("3"), order("0", filled=1), order("2")]) == []  # still known
    assert book.reconcile([order("1")]) == [order("1")]  # evicted: comes back once, a duplicate
    with pytest.raises(ValueError, match="max_orders"):
        OrderBook(0)


@dataclass
class _Model:
    """What was seen per order: its states, and its most advanced (terminal, filled, time)."""

    states: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)
    best: dict[str, OrderUpdate] = field(default_factory=dict)  # with the latest time known for the order

    @staticmethod
    def state(u: OrderUpdate) -> tuple[Any, ...]:
        status = "OPEN" if u.status == "UPDATE" else u.status
        return (status, u.quantity, u.price, u.trigger_price, u.filled_quantity, u.pending_quantity,
                u.cancelled_quantity, u.average_price)  # fmt: skip

    @staticmethod
    def behind(a: OrderUpdate, b: OrderUpdate) -> bool:
        terminal = ("COMPLETE", "CANCELLED", "REJECTED")
        if (a.status in terminal) != (b.status in terminal):
            return b.status in terminal
        if a.filled_quantity != b.filled_quantity:
            return (a.filled_quantity or 0) < (b.filled_quantity or 0)
        a_ms, b_ms = a.exchange_update_timestamp_ms, b.exchange_update_timestamp_ms
        return a_ms is not None and b_ms is not None and a_ms < b_ms

    def record(self, u: OrderUpdate) -> None:
        self.states.setdefault(u.order_id, set()).add(self.state(u))
        best = self.best.get(u.order_id)
        if best is None or not self.behind(u, best):
            known_ms = best.exchange_update_timestamp_ms if best is not None else None
            self.best[u.order_id] = u._replace(
                exchange_update_timestamp_ms=u.exchange_update_timestamp_ms or known_ms
            )

    def missed(self, u: OrderUpdate) -> bool:
        best = self.best.get(u.order_id)
        return best is None or (self.state(u) not in self.states[u.order_id] and not self.behind(u, best))


updates = st.builds(
    order,
    order_id=st.sampled_from("123"),
    status=st.sampled_from(["OPEN", "UPDATE", "TRIGGER PENDING", "COMPLETE", "CANCELLED"]),
    filled=st.integers(0, 3),
    updated_ms=st.one_of(st.none(), st.integers(DAY1, DAY1 + 3)),
    price=st.sampled_from([1.0, 2.0]),
)
events = st.lists(st.one_of(updates, st.lists(updates, max_size=5)), max_size=30)


@given(events)
@settings(max_examples=300, deadline=None)
def test_reconcile_against_a_model(script: list[OrderUpdate | list[OrderUpdate]]) -> None:
    book, model = OrderBook(), _Model()
    for event in script:
        if isinstance(event, OrderUpdate):
            book.seen(event)
            model.record(event)
            continue
        expected = []
        for u in event:
            if model.missed(u):
                expected.append(u)
                model.record(u)
        assert book.reconcile(event) == expected
        assert book.reconcile(event) == []  # published once, not again


def test_a_reconciled_state_keeps_its_record_id_across_runs(postback: dict[str, Any]) -> None:
    def fetched(order: dict[str, Any]) -> str:
        (one,) = parse_orders(json.dumps({"status": "success", "data": [order]}).encode()).orders
        return record_id(one.frame)

    first = fetched(postback)
    assert first == fetched(dict(reversed(postback.items()))), "the same state, however Kite orders its keys"
    assert len(first) == 32
    assert first != fetched({**postback, "filled_quantity": 0}), "another state, another id"
