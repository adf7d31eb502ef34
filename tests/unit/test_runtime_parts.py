"""Runtime pieces without services: configuration, subscriptions, backoff, tokens, sink policies, metrics."""

from __future__ import annotations

import argparse
import itertools
import urllib.request
from pathlib import Path

import pytest

from connector.app import parse_subscriptions, shard
from connector.config import RUN_SETTINGS, add_arguments, resolve
from connector.errors import ConfigError
from connector.instruments import Instruments, read_instruments
from connector.kite import Mode
from connector.metrics import Metrics, MetricsServer
from connector.sink import KafkaSink, SinkConfig
from connector.source import TokenSource, backoff, redact
from connector.spool import Entry, OrderLog
from connector.stats import Stats
from tests.conftest import FIXTURES


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, RUN_SETTINGS)
    return parser.parse_args(list(argv))


def test_flags_and_environment_share_names_and_flags_win() -> None:
    env = {"KAFKA_LINGER_MS": "20", "KITE_MODE": "ltp"}
    values = resolve(RUN_SETTINGS, _args("--kafka-linger-ms", "7"), env)
    assert values["KAFKA_LINGER_MS"] == 7
    assert values["KITE_MODE"] == "ltp"
    assert values["MAX_IN_FLIGHT"] == 50_000


def test_bad_values_name_the_variable_and_hide_secrets() -> None:
    with pytest.raises(ConfigError, match="BACKPRESSURE_POLICY='drop': must be one of block, conflate"):
        resolve(RUN_SETTINGS, environ={"BACKPRESSURE_POLICY": "drop"})
    with pytest.raises(ConfigError, match="KAFKA_LINGER_MS"):
        resolve(RUN_SETTINGS, environ={"KAFKA_LINGER_MS": "soon"})
    with pytest.raises(ConfigError, match="KITE_ACCESS_TOKEN"):
        TokenSource(None, None)


def test_subscriptions_by_token_and_symbol_with_modes() -> None:
    instruments = Instruments(read_instruments(FIXTURES / "instruments_all.csv"))
    subs = parse_subscriptions("256265@ltp, NSE:EMMBI-BL ,3813889@quote", "full", instruments)
    assert subs == {256265: Mode.LTP, 4645121: Mode.FULL, 3813889: Mode.QUOTE}
    with pytest.raises(ConfigError, match="not in the instruments file"):
        parse_subscriptions("NSE:NOSUCH", "full", instruments)
    with pytest.raises(ConfigError, match="needs KITE_INSTRUMENTS_FILE"):
        parse_subscriptions("NSE:INFY", "full", None)
    with pytest.raises(ConfigError, match="mode must be"):
        parse_subscriptions("1@turbo", "full", None)
    with pytest.raises(ConfigError, match="empty"):
        parse_subscriptions(" ", "full", None)


def test_more_than_3000_instruments_are_sharded_and_9000_is_the_limit() -> None:
    assert [len(s) for s in shard({t: Mode.FULL for t in range(7000)})] == [3000, 3000, 1000]
    with pytest.raises(ConfigError, match="9000 per api_key"):
        shard({t: Mode.FULL for t in range(9001)})


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    delays = list(itertools.islice(backoff(0.5, 8.0), 12))
    assert 0.25 <= delays[0] <= 0.5
    assert all(4.0 <= d <= 8.0 for d in delays[6:])
    assert len(set(delays)) == len(delays)


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    tokens = TokenSource(None, path)
    assert tokens.get() == "one"
    path.write_text("second\n")
    assert tokens.get() == "second"
    assert redact("url?access_token=second", "second") == "url?access_token=***"


def _mock_sink(policy: str, bound: int) -> KafkaSink:
    config = SinkConfig(
        "unused:9092", max_in_flight=bound, policy=policy, producer_overrides={"test.mock.num.brokers": "1"}
    )
    return KafkaSink(config, Stats())


def test_conflate_holds_only_the_newest_tick_per_instrument() -> None:
    sink = _mock_sink("conflate", 10)
    for i in range(100):
        sink.produce_ticks([(f"{i % 5}".encode(), f"v{i}".encode(), 1_700_000_000_000)], 0.0)
    assert sink.stats.in_flight == 10
    assert sink.stats.held == 5
    assert sink.stats.conflated == 100 - 10 - 5
    assert sink.close(10) == 0
    assert sink.stats.delivered.total() == 15
    assert sink.stats.failed.total() == 0


def test_while_ticks_are_held_newer_ones_are_held_too_so_none_overtakes() -> None:
    sink = _mock_sink("conflate", 10)
    sink.produce_ticks([(f"{i}".encode(), b"first", 1_700_000_000_000) for i in range(10)], 0.0)
    sink.produce_ticks([(b"a", b"older", 1_700_000_000_000)], 0.0)
    assert sink.stats.held == 1
    sink.producer.flush(10)  # acknowledgements return, but held ticks are produced only by service()
    assert sink.stats.in_flight == 0
    sink.produce_ticks([(b"a", b"newer", 1_700_000_000_000)], 0.0)
    assert (sink.stats.held, sink.stats.conflated, sink.stats.in_flight) == (1, 1, 0)
    sink.service()
    assert (sink.stats.held, sink.stats.in_flight) == (0, 1)
    assert sink.close(10) == 0


def test_service_says_when_the_next_acknowledgement_may_come() -> None:
    sink = _mock_sink("block", 100)
    assert sink.service() is None  # nothing in flight: the listener may wait as long as it likes
    sink.produce_ticks([(b"1", b"x", 1_700_000_000_000)], 0.0)
    due = sink.service()
    assert due is not None and 0 <= due <= sink.config.linger_ms / 1000  # not before the batch lingered
    sink.producer.flush(10)
    assert sink.service() is None


def test_a_full_librdkafka_queue_is_waited_out_not_waited_on_forever() -> None:
    probes: list[float] = []
    config = SinkConfig(
        "unused:9092",
        max_in_flight=100,
        producer_overrides={"test.mock.num.brokers": "1", "queue.buffering.max.messages": "3"},
    )
    sink = KafkaSink(config, Stats(), observe_latency=probes.append)
    sink.produce_ticks([(f"{i}".encode(), b"x", 1_700_000_000_000) for i in range(10)], 0.0)
    assert sink.close(10) == 0
    assert sink.stats.delivered.total() == 10
    assert len(probes) == 1  # one latency probe per message, also when its records went two ways


def test_block_backlogs_ticks_in_order_and_never_exceeds_the_bound() -> None:
    config = SinkConfig(
        "unused:9092", max_in_flight=50, tick_backlog=1000, producer_overrides={"test.mock.num.brokers": "1"}
    )
    sink = KafkaSink(config, Stats())
    peak = 0
    for i in range(2000):
        if not sink.saturated():
            sink.produce_ticks([(f"{i % 7}".encode(), f"{i}".encode(), 1_700_000_000_000)], 0.0)
        peak = max(peak, sink.stats.in_flight)
    assert peak == 50 and sink.saturated() and sink.stats.held == 1000
    produced = 50 + 1000
    while sink.stats.delivered.total() < produced:
        sink.service()
        peak = max(peak, sink.stats.in_flight)
    assert peak == 50
    assert sink.stats.held == 0 and not sink.saturated()
    assert sink.stats.backpressure_events == 1 and sink.stats.backpressure_seconds > 0
    assert sink.close(10) == 0


def test_undelivered_order_updates_stay_in_the_order_log_and_are_replayed(tmp_path: Path) -> None:
    path = tmp_path / "orders.wal"
    order_log = OrderLog(path)
    dead = SinkConfig("127.0.0.1:1", producer_overrides={"log_level": "0"})
    sink = KafkaSink(dead, Stats(), order_log=order_log)
    sink.produce_order_update(Entry(b"779521", b"order-1", 1_700_000_000_000, "id-1"))
    sink.close(0.5)
    order_log.close()
    assert sink.stats.spooled == 1
    order_log = OrderLog(path)  # as the next process opens it
    assert [e.value for _, e in order_log.pending()] == [b"order-1"]
    alive = SinkConfig("unused:9092", producer_overrides={"test.mock.num.brokers": "1"})
    again = KafkaSink(alive, Stats(), order_log=order_log)
    assert again.replay_order_log() == 1
    assert again.close(10) == 0
    assert again.stats.delivered.total() == 1
    order_log.close()
    with OrderLog(path) as reopened:
        assert reopened.pending() == []


def test_metrics_and_health_endpoint() -> None:
    stats = Stats()
    stats.ticks["full"] += 3
    metrics = Metrics([stats])
    server = MetricsServer(metrics, "127.0.0.1", 0)
    server.start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
        assert 'kite_ticks_received_total{mode="full"} 3.0' in body
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz")
        assert info.value.code == 503
        stats.connected = True
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz").status == 200
    finally:
        server.close()


def test_an_order_update_that_cannot_be_queued_at_close_stays_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "orders.wal"
    full = SinkConfig(
        "127.0.0.1:1", producer_overrides={"log_level": "0", "queue.buffering.max.messages": "1"}
    )
    with OrderLog(path) as order_log:
        sink = KafkaSink(full, Stats(), order_log=order_log)
        sink.produce_ticks([(b"1", b"tick", 1_700_000_000_000)], 0.0)  # librdkafka's queue is now full
        sink.produce_order_update(Entry(b"779521", b"order-1", 1_700_000_000_000, "id-1"))
        sink.close(0.2)  # does not raise: the update is made durable, then cannot be queued
        assert sink.stats.spooled == 1
    with OrderLog(path) as reopened:
        assert [e.record_id for _, e in reopened.pending()] == ["id-1"]
