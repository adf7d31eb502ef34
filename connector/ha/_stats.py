"""Counters of the HA set as this process sees it, read by the metrics collector at scrape time."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HaStats"]


@dataclass(slots=True)
class HaStats:
    active: bool = False  # this instance holds the lease and produces
    takeovers: int = 0  # times it became active (the first start included)
    replayed: int = 0  # records produced from the buffer at takeover (flagged kite.replayed)
    present: int = 0  # buffered records found already in Kafka at takeover (not produced again)
    fenced: int = 0  # producers fenced by another instance's takeover
    commits: int = 0
    aborts: int = 0  # transactions aborted (their records produced again from the buffer)
    refused: int = 0  # records Kafka refused for good, left out (order updates stay in the order log)
    last_takeover_seconds: float | None = None  # lease acquired → producing live
