"""``/metrics`` and ``/healthz`` of ``kite-connector candles``, read from its :class:`Status` when scraped."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from connector.candles._status import Status
from connector.metrics import counter, gauge, labelled_counter

__all__ = ["UNASSIGNED_LIMIT_SECONDS", "CandleMetrics"]

# An instance that holds no partition for this long is reported: the group never gave it work (or more
# instances run than the ticks topic has partitions).
UNASSIGNED_LIMIT_SECONDS = 60.0


class _Collector(Collector):
    def __init__(self, status: Status) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s, c = self.status, self.status.counts
        yield counter("candles_ticks_read", "Ticks read from the ticks topic (again after a rewind)", c.ticks)
        yield labelled_counter(
            "candles_bars_written", "Bars written in committed transactions", "interval", dict(c.bars)
        )
        yield counter("candles_late_ticks", "Ticks that came after their bar closed (committed)", c.late)
        yield counter(
            "candles_dead_letters",
            "Undecodable ticks sent to the dead-letter topic (committed)",
            c.dead_letters,
        )
        yield counter("candles_gap_markers_read", "Gap markers read as they came", c.gap_markers)
        yield counter(
            "candles_gap_markers_late",
            "Instrument-intervals a gap marker came for after a later bar had closed: a bar before that "
            "one may overlap the gap unflagged",
            c.gap_late,
        )
        yield counter(
            "candles_gap_markers_undecodable",
            "Gap markers read again after a restore that did not decode (skipped; read live, they are "
            "dead letters)",
            c.gap_undecodable,
        )
        yield counter(
            "candles_bars_amended",
            "Closed bars written again with gap true (revision 1), committed",
            c.amended,
        )
        yield counter("candles_commits", "Transactions committed", c.commits)
        yield counter(
            "candles_aborts", "Transactions aborted (and rewound to the last committed state)", c.aborts
        )
        yield labelled_counter(
            "candles_transaction_retries",
            "Transactional calls retried after a retriable error",
            "call",
            dict(c.retries),
        )
        yield gauge(
            "candles_undecodable_window",
            "1 while every tick of a whole window was undecodable (blind)",
            int(bool(s.blind)),
        )
        yield gauge(
            "candles_consumer_lag_records",
            "Ticks not yet read, summed over the partitions held",
            s.lag_records,
        )
        yield gauge(
            "candles_watermark_lag_seconds",
            "Wall clock minus the oldest partition watermark",
            s.watermark_lag_seconds,
        )
        yield gauge("thread_up", "1 while the thread runs", int(s.running), {"thread": "processor"})


class CandleMetrics:
    """What :class:`connector.metrics.MetricsServer` serves for the candle processor."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(status))

    def healthy(self) -> tuple[bool, str]:
        return self.status.verdict(time.monotonic(), UNASSIGNED_LIMIT_SECONDS)
