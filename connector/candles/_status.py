"""What the candle processor knows about itself, sans I/O: counters, gauges, and whether it is healthy.

The processor's thread writes these plain fields; the metrics thread only reads them when scraped, so the
hot path takes no lock. :class:`BlindWatch` decides when the input has become unreadable as a whole, as
opposed to the odd bad record that goes to the dead-letter topic.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from connector.errors import ConnectorError

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

__all__ = ["BlindWatch", "Counts", "ProcessorFailed", "Status"]


class ProcessorFailed(ConnectorError):
    """The processor kept failing at run time (blind input, transactions that keep failing, a fatal Kafka
    error): ``kite-connector candles`` logs it in one line and exits 3, for the restart policy. ``error``
    is the Kafka error behind it, if any (a refusal at start is named instead: exit 2)."""

    def __init__(self, message: str, error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass(slots=True)
class Counts:
    ticks: int = 0  # read, again after a rewind
    bars: Counter[str] = field(default_factory=Counter)  # committed, by interval
    late: int = 0  # committed
    dead_letters: int = 0  # committed
    commits: int = 0
    aborts: int = 0
    restores: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # by transaction call
    gap_markers: int = 0  # read as they came (not again after a restore)
    gap_late: int = 0  # of those, instrument-intervals a later bar had closed for
    gap_undecodable: int = 0  # markers read again after a restore that did not decode
    amended: int = 0  # bars written again flagged, committed

    def add(self, cycle: Counts) -> None:
        """Folds in what a committed cycle wrote."""
        self.bars.update(cycle.bars)
        self.late += cycle.late
        self.dead_letters += cycle.dead_letters
        self.amended += cycle.amended


class BlindWatch:
    """Blind: every record read for ``seconds`` (and at least ``min_records`` of them) was undecodable.

    One decodable record ends the streak; a record that cannot be read in an otherwise readable stream is
    a dead letter, not blindness.
    """

    def __init__(self, seconds: float, min_records: int) -> None:
        self.seconds = seconds
        self.min_records = min_records
        self.count = 0  # undecodable records in a row
        self.since = 0.0  # when the first of them was read
        self.last_error = ""

    def undecodable(self, now: float, error: str) -> None:
        if not self.count:
            self.since = now
        self.count += 1
        self.last_error = error

    def decoded(self) -> None:
        self.count = 0

    def blind(self, now: float) -> bool:
        return bool(self.seconds) and self.count >= self.min_records and now - self.since >= self.seconds

    def reason(self, now: float) -> str:
        return (
            f"blind: none of the last {self.count} ticks read (over {now - self.since:.0f} s) decoded; "
            f"last error: {self.last_error}"
        )


@dataclass(slots=True)
class Status:
    """Counters, gauges and the facts behind ``/healthz``."""

    counts: Counts = field(default_factory=Counts)
    running: bool = False  # the processing loop is up
    lag_records: int | None = None  # ticks not yet read, summed over the partitions held
    watermark_lag_seconds: float | None = None  # wall clock minus the oldest partition watermark
    blind: str | None = None  # why the input is unreadable, once it is
    unassigned_since: float | None = None  # monotonic time since when no partition is held
    retrying: str | None = None  # a transaction call being retried, and why
    aborted: str | None = None  # why the last transaction was aborted, until one commits

    def verdict(self, now: float, unassigned_limit: float) -> tuple[bool, str]:
        """(healthy, reason) as ``/healthz`` reports it."""
        if self.blind:
            return False, self.blind
        failing = self.retrying or self.aborted
        if failing:
            return False, f"transactions failing: {failing}"
        if self.unassigned_since is not None and now - self.unassigned_since > unassigned_limit:
            return False, f"no partition of the ticks topic assigned for {now - self.unassigned_since:.0f} s"
        if not self.running:
            return False, "not running"
        return True, "ok"
