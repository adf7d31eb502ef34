"""Metrics and health, read the way Prometheus and the healthcheck read them (no HTTP needed)."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import generate_latest

from connector.ha import HaCollector, HaStats
from connector.metrics import Metrics
from connector.orders import OrderDesk, OrderLog, OrderRecord
from connector.stats import ConnectionStats, ShardStats
from connector.supervise import Supervisor


def _scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_per_connection_series_carry_the_connection_index(tmp_path: Path) -> None:
    a, b = ConnectionStats(), ConnectionStats()
    a.ticks["full"] += 3
    b.ticks["full"] += 4
    b.connected = True
    a.last_tick["NSE"] = time.monotonic() - 5
    shard = ShardStats()
    shard.in_flight = 7
    metrics = Metrics([a, b], [shard], lines=2)
    desk = OrderDesk(None, "t", [], OrderLog(tmp_path / "wal"))
    assert desk.order_log is not None
    desk.order_log.append([OrderRecord(b"k", b"v", 1, "id")])
    metrics.watch(OrderDesk(None, "t", [], None), Supervisor())
    metrics.watch(desk, Supervisor())  # watching again replaces, it does not register twice
    body = _scrape(metrics)
    assert 'kite_ticks_received_total{connection="0",line="0",mode="full"} 3.0' in body
    assert 'kite_ticks_received_total{connection="1",line="1",mode="full"} 4.0' in body
    assert 'kite_connection_up{connection="0",line="0"} 0.0' in body
    assert 'kite_connection_up{connection="1",line="1"} 1.0' in body
    assert 'records_in_flight{shard="0"} 7.0' in body
    assert "order_log_pending 0.0" in body, "pending counts what the desk tracks, loaded at its start"
    assert "order_log_bytes " in body and "order_log_disk_free_bytes " in body
    line = next(
        x for x in body.splitlines() if x.startswith('kite_last_tick_timestamp_seconds{exchange="NSE"}')
    )
    assert abs(float(line.split()[-1]) - (time.time() - 5)) < 1, "a wall-clock time, five seconds ago"
    desk.close()


def test_health_names_what_is_wrong() -> None:
    stats, shard = ConnectionStats(), ShardStats()
    metrics = Metrics([stats], [shard])
    supervisor = Supervisor()
    metrics.watch(OrderDesk(None, "t", []), supervisor)
    assert metrics.healthy() == (False, "connection 0 is down")
    stats.token_refused = True
    assert metrics.healthy() == (False, "connection 0 is down (Kite refuses the access token)")
    stats.connected, stats.token_refused = True, False
    assert metrics.healthy() == (True, "ok")
    shard.in_flight = 10
    metrics.healthy()
    assert metrics.healthy(stall_seconds=0)[1].startswith("shard 0: Kafka acknowledged nothing for")
    shard.in_flight = 0

    class Dead:
        name = "kite-reconciler"

        def up(self) -> bool:
            return False

        def failure(self) -> str:
            return "thread kite-reconciler ended"

    supervisor.watch(Dead())
    assert metrics.healthy() == (False, "thread kite-reconciler ended")
    assert 'thread_up{thread="kite-reconciler"} 0.0' in _scrape(metrics)


def test_with_two_lines_one_down_is_degraded_but_healthy() -> None:
    a, b = ConnectionStats(), ConnectionStats()
    metrics = Metrics([a, b], [ShardStats()], lines=2)
    metrics.watch(OrderDesk(None, "t", []), Supervisor())
    a.connected, b.last_failure = True, "OSError: gone"
    assert metrics.healthy() == (True, "ok, degraded: connection 1 is down (last failure: OSError: gone)")
    a.connected = False
    assert metrics.healthy() == (False, "connection 1 is down (last failure: OSError: gone)")


def test_an_ha_set_member_says_its_role_and_exports_its_series() -> None:
    stats = ConnectionStats()
    stats.connected = True
    metrics = Metrics([stats], [ShardStats()])
    metrics.watch(OrderDesk(None, "t", []), Supervisor())
    ha = HaStats(takeovers=2, replayed=7, fenced=1)
    metrics.registry.register(HaCollector(ha, []))
    metrics.role = lambda: "active" if ha.active else "standby"
    assert metrics.healthy() == (True, "ok (standby)"), "a standby is healthy"
    ha.active = True
    assert metrics.healthy() == (True, "ok (active)")
    body = _scrape(metrics)
    for series in ("ha_active 1.0", "ha_takeovers_total 2.0", "ha_replayed_total 7.0", "ha_fenced_total 1.0",
                   "ha_buffer_records 0.0"):  # fmt: skip
        assert series in body


def test_kafka_refusals_are_counted_by_kind_and_shown_until_a_record_is_delivered() -> None:
    a, b = ShardStats(), ShardStats()
    line_a, line_b = ConnectionStats(connected=True), ConnectionStats(connected=True)
    a.kafka_errors["transport"] += 2
    b.kafka_errors["transport"] += 1
    b.kafka_errors["authorization"] += 1
    b.kafka_refused = (
        "Kafka authorization: User:connector may not write to topic t (missing ACL: WRITE on Topic:t)"
    )
    b.kafka_refused_topic, b.kafka_refused_delivered = "t", 0
    b.delivered["other"] += 1  # records to the topics it may still write to do not end it
    metrics = Metrics([line_a, line_b], [a, b])
    metrics.watch(OrderDesk(None, "t", []), Supervisor())
    body = _scrape(metrics)
    for kind, count in (("authentication", 0), ("authorization", 1), ("tls", 0), ("transport", 3)):
        assert f'kafka_errors_total{{kind="{kind}"}} {count}.0' in body  # every kind, for rate() from 0
    assert metrics.healthy() == (False, f"shard 1: Kafka refuses the producer: {b.kafka_refused}")
    b.delivered["t"] += 1  # the ACL is back
    assert metrics.healthy() == (True, "ok")
