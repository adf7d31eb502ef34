"""The HA set's series on ``/metrics`` (registered beside the runtime's own when HA_GROUP is set)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from connector.ha._sink import HaSink
from connector.ha._stats import HaStats
from connector.metrics import counter, gauge

__all__ = ["HaCollector"]


class HaCollector(Collector):
    def __init__(self, stats: HaStats, sinks: Sequence[HaSink]) -> None:
        self.stats, self.sinks = stats, sinks

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        records = sum(len(sink.buffer) for sink in self.sinks)
        size = sum(sink.buffer.bytes for sink in self.sinks)
        for name, doc, value in (
            ("ha_active", "1 while this instance holds the HA lease and produces", float(s.active)),
            ("ha_buffer_records", "Records buffered (standby: the window; active: uncommitted)", records),
            ("ha_buffer_bytes", "Bytes those records take, roughly", size),
        ):
            yield gauge(name, doc, value)
        yield gauge(
            "ha_takeover_seconds", "The last takeover: lease acquired to producing", s.last_takeover_seconds
        )
        for name, doc, value in (
            ("ha_takeovers", "Times this instance became active (its first start included)", s.takeovers),
            ("ha_replayed", "Records written from the standby's buffer and log at takeover", s.replayed),
            ("ha_fenced", "Producers fenced by another instance's takeover", s.fenced),
            ("ha_transaction_commits", "Transactions committed", s.commits),
            ("ha_transaction_aborts", "Transactions aborted (their records produced again)", s.aborts),
            ("ha_records_refused", "Records Kafka refused for good, left out of the stream", s.refused),
        ):
            yield counter(name, doc, value)
