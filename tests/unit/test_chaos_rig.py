"""The chaos rig's one allowance for missing order updates is as narrow as the README says."""

from __future__ import annotations

from tests.chaos.rig import lost_at_kill

# (order id, status) → (connection, sequence in the sent log); connection 1 belonged to a SIGKILLed run.
SENT = {
    ("A", "OPEN"): (1, 0),
    ("A", "COMPLETE"): (1, 1),
    ("B", "OPEN"): (1, 2),
    ("B", "CANCELLED"): (2, 3),
    ("C", "OPEN"): (2, 4),
    ("C", "COMPLETE"): (2, 5),
    ("D", "OPEN"): (1, 6),
}


def killed(conn: int) -> bool:
    return conn == 1


def test_an_intermediate_state_lost_at_a_kill_is_allowed_when_a_later_state_is_in_kafka() -> None:
    in_kafka = {("A", "COMPLETE"), ("B", "CANCELLED"), ("C", "COMPLETE")}
    missing = [("A", "OPEN"), ("B", "OPEN"), ("C", "OPEN"), ("D", "OPEN")]
    # C was not sent to a killed run; D's later state never reached Kafka (nor was there one).
    assert lost_at_kill(missing, SENT, in_kafka, killed) == [("A", "OPEN"), ("B", "OPEN")]


def test_a_final_state_missing_is_never_allowed() -> None:
    in_kafka = {("A", "OPEN"), ("B", "OPEN")}
    missing = [("A", "COMPLETE"), ("B", "CANCELLED")]
    assert lost_at_kill(missing, SENT, in_kafka, killed) == []


def test_without_a_kill_nothing_is_allowed() -> None:
    in_kafka = {("A", "COMPLETE")}
    assert lost_at_kill([("A", "OPEN")], SENT, in_kafka, lambda conn: False) == []
