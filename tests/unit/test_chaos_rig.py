"""The chaos rig's one allowance for missing order updates is as narrow as the README says."""

from __future__ import annotations

from tests.chaos.rig import OrderKey, SentOrders

KILLED, LIVE = 1, 2  # connection 1 belonged to a SIGKILLed run


def killed(conn: int) -> bool:
    return conn == KILLED


def sent(*updates: tuple[str, str, int]) -> SentOrders:
    orders = SentOrders()
    for order_id, status, conn in updates:
        orders.add((order_id, status), conn)
    return orders


def allowed(orders: SentOrders, in_kafka: set[OrderKey]) -> list[OrderKey]:
    missing = sorted(orders.seq.keys() - in_kafka, key=orders.seq.__getitem__)
    return orders.lost_at_kill(missing, in_kafka, killed)


def test_an_update_unread_at_the_kill_is_allowed_when_its_orders_later_state_is_in_kafka() -> None:
    orders = sent(("A", "OPEN", KILLED), ("B", "OPEN", KILLED), ("A", "COMPLETE", LIVE))
    # A's OPEN and B's OPEN were the killed connection's last updates, neither delivered; only A's order
    # has a later state in Kafka (B's final state never came).
    assert allowed(orders, {("A", "COMPLETE")}) == [("A", "OPEN")]


def test_an_update_followed_by_a_delivered_one_on_the_same_connection_is_a_loss() -> None:
    """TCP keeps order: what the killed connection carried before an update that reached Kafka was read."""
    orders = sent(("A", "OPEN", KILLED), ("A", "COMPLETE", KILLED))
    assert allowed(orders, {("A", "COMPLETE")}) == []


def test_a_final_state_missing_is_never_allowed() -> None:
    orders = sent(("A", "OPEN", LIVE), ("A", "COMPLETE", KILLED))
    assert allowed(orders, {("A", "OPEN")}) == []


def test_an_update_a_live_connection_also_carried_is_a_loss() -> None:
    orders = sent(("A", "OPEN", KILLED), ("A", "OPEN", LIVE), ("A", "COMPLETE", LIVE))
    assert allowed(orders, {("A", "COMPLETE")}) == []


def test_without_a_kill_nothing_is_allowed() -> None:
    orders = sent(("A", "OPEN", LIVE), ("A", "COMPLETE", LIVE))
    missing = [("A", "OPEN")]
    assert orders.lost_at_kill(missing, {("A", "COMPLETE")}, lambda conn: False) == []
