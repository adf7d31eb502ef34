"""No silent stop: each known way a connection used to die, injected for real, then counted against Kafka."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.app import EXIT_FAILED
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator, synthetic_instruments
from connector.sink import _producer
from tests.integration.faults import producer_failing_at
from tests.integration.helpers import (
    connector_env,
    connector_settings,
    read_topic,
    running_connector,
    sent_log,
    wait_until,
)
from tests.integration.kite_stub import fresh_ticks_message, scripted_kite

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTS = bundled_instruments() + synthetic_instruments(50)
TOKENS = [i.instrument_token for i in INSTRUMENTS if i.instrument_token & 0xFF != 9][:20]
TWENTY_MB = 20 * 1024 * 1024


def test_a_message_larger_than_kafka_takes_is_a_dead_letter_that_fits(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    junk_text = "x" * TWENTY_MB
    junk_binary = b"\xff\xff" + bytes(TWENTY_MB)
    ticks = fresh_ticks_message(TOKENS)
    script: list[bytes | str] = [ticks, junk_text, ticks, junk_binary, *[ticks] * 8]
    with scripted_kite(script) as port:
        values = connector_settings(kafka_bootstrap, port, ",".join(map(str, TOKENS)), tmp_path)
        with running_connector(values) as connector:
            line, stats = connector.stats[0], connector.shard_stats[0]
            wait_until(lambda: stats.delivered.total() == 10 * len(TOKENS) + 2, 60, "ticks and dead letters")
    assert line.failures.total() == 0 and line.reconnects == 0, "the connection never broke"
    assert stats.failed.total() == 0
    letters = read_topic(kafka_bootstrap, values.kafka_topic_dead_letters, expect=2)
    cap = values.dead_letter_max_bytes
    by_source = {r.value["source"]: r.value for r in letters}
    assert set(by_source) == {"ws-text", "ws-binary"}
    for source, whole in (("ws-text", junk_text.encode()), ("ws-binary", junk_binary)):
        letter = by_source[source]
        assert letter["raw"] == whole[:cap], "the raw bytes are cut to DEAD_LETTER_MAX_BYTES"
        assert letter["raw_length"] == len(whole)
        assert letter["raw_sha256"] == hashlib.sha256(whole).hexdigest()
    assert len(read_topic(kafka_bootstrap, values.kafka_topic_ticks, expect=10 * len(TOKENS))) == 200


def test_produce_raising_rebuilds_the_connection_and_loses_no_order_update(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_producer, "Producer", producer_failing_at(50))
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(port=0, rate=5, order_rate=4, seed=31, sent_log=str(log))
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(kafka_bootstrap, sim.port, ",".join(map(str, TOKENS)), tmp_path)
        with running_connector(values) as connector:
            line, stats = connector.stats[0], connector.shard_stats[0]
            wait_until(lambda: line.failures["KafkaException"] == 1, 60, "the injected failure")
            health = connector.metrics.healthy()
            wait_until(lambda: line.connected and stats.delivered.total() > 400, 60, "streaming again")
            sim.paused = True
            wait_until(lambda: stats.in_flight == 0, 30, "the stream to drain")
        sim.flush_log()
    assert "KafkaException" in (line.last_failure or "")
    assert health[0] or "last failure: KafkaException" in health[1]
    orders = sent_log(log, "order")
    got = read_topic(kafka_bootstrap, values.kafka_topic_order_updates, expect=len(orders))
    assert {(o["order_id"], o["status"]) for o in orders} <= {
        (r.value["order_id"], r.value["status"]) for r in got
    }, "no order update is lost across the rebuild"
    ticks = read_topic(kafka_bootstrap, values.kafka_topic_ticks)
    delivered = stats.delivered[values.kafka_topic_ticks]
    assert len(ticks) == delivered, "what was acknowledged is in Kafka"
    assert delivered + stats.abandoned + stats.failed[values.kafka_topic_ticks] == line.ticks.total(), (
        "every tick read is in Kafka, or counted as not delivered"
    )
    assert stats.failed[values.kafka_topic_ticks] > 0, "the message whose produce raised is counted"


def test_a_missing_token_file_is_waited_for_with_one_log_line(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    with running_simulator(SimulatorConfig(port=0, rate=5), INSTRUMENTS) as sim:
        values = connector_settings(
            kafka_bootstrap,
            sim.port,
            str(TOKENS[0]),
            tmp_path,
            KITE_ACCESS_TOKEN="",
            KITE_ACCESS_TOKEN_FILE=str(token_file),
        )
        with caplog.at_level(logging.INFO), running_connector(values) as connector:
            time.sleep(5)
            waiting = [r for r in caplog.records if "KITE_ACCESS_TOKEN_FILE" in r.getMessage()]
            assert len(waiting) == 1, "one clear line, not one per retry"
            assert connector.stats[0].failures.total() == 0
            token_file.write_text("simulator-token\n")
            wait_until(
                lambda: connector.shard_stats[0].delivered.total() > 0, 15, "ticks once the file exists"
            )


def test_delivery_reports_are_served_while_the_websocket_is_down(
    kafka_container: tuple[str, str | None], tmp_path: Path
) -> None:
    bootstrap, container = kafka_container
    if container is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an outside broker: it cannot be paused")
    with contextlib.ExitStack() as stack:
        simulator = contextlib.ExitStack()
        sim = simulator.enter_context(running_simulator(SimulatorConfig(port=0, rate=20), INSTRUMENTS))
        values = connector_settings(bootstrap, sim.port, ",".join(map(str, TOKENS)), tmp_path)
        connector = stack.enter_context(running_connector(values))
        line, stats = connector.stats[0], connector.shard_stats[0]
        stack.callback(subprocess.run, ["docker", "unpause", container], capture_output=True)
        wait_until(lambda: stats.delivered.total() > 200, 30, "a steady stream")
        subprocess.run(["docker", "pause", container], check=True)
        wait_until(lambda: stats.in_flight > 50, 30, "records waiting for the paused broker")
        simulator.close()  # the WebSocket side goes away: the connector retries with backoff
        wait_until(lambda: not line.connected, 15, "the connection to drop")
        subprocess.run(["docker", "unpause", container], check=True)
        wait_until(lambda: stats.in_flight == 0, 30, "acknowledgements counted while disconnected")
        assert not line.connected and line.reconnects > 0
    assert stats.failed.total() == 0


FAULTY_RUN = """
import sys
from connector.sink import KafkaSink
def broken(self, batch, received):
    raise RuntimeError("injected: produce_ticks is broken")
KafkaSink.produce_ticks = broken
from connector.cli import main
sys.exit(main(["run"]))
"""


def test_a_connection_that_keeps_failing_makes_run_exit_non_zero(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with running_simulator(SimulatorConfig(port=0, rate=5), INSTRUMENTS) as sim:
        env = connector_env(
            kafka_bootstrap,
            sim.port,
            ",".join(map(str, TOKENS)),
            tmp_path,
            CONNECTION_FAILURE_LIMIT="2",
            CONNECTION_FAILURE_WINDOW_SECONDS="60",
        )
        run = subprocess.run(
            [sys.executable, "-c", FAULTY_RUN],
            env={**os.environ, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert run.returncode == EXIT_FAILED, run.stderr[-3000:]
    errors = run.stderr
    assert errors.count("injected: produce_ticks is broken") >= 3, "each failure is logged"
    assert errors.count("Traceback") >= 3, "with its traceback"
    assert "giving up" in errors and "exiting so that the process is restarted" in errors
    assert "simulator-token" not in errors


def test_a_storm_of_malformed_frames_is_counted_logged_as_a_sample_and_the_stream_goes_on(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(
        port=0, rate=100, packets_per_message=1, malformed_probability=0.3, seed=61, sent_log=str(log)
    )
    with running_simulator(config, INSTRUMENTS) as sim:
        values = connector_settings(kafka_bootstrap, sim.port, ",".join(map(str, TOKENS)), tmp_path)
        with caplog.at_level(logging.WARNING, "connector.pipeline"), running_connector(values) as connector:
            line, stats = connector.stats[0], connector.shard_stats[0]
            wait_until(lambda: stats.dead_letters.total() >= 1000, 60, "a storm of malformed frames")
            sim.config.malformed_probability = 0.0  # the storm ends; the stream goes on
            delivered = stats.delivered[values.kafka_topic_ticks]
            wait_until(lambda: stats.delivered[values.kafka_topic_ticks] > delivered + 500, 30, "ticks again")
            sim.paused = True
            wait_until(lambda: stats.in_flight == 0, 30, "the stream to drain")
        sim.flush_log()
    lines = [r for r in caplog.records if r.getMessage().startswith("dead letter")]
    assert 1 <= len(lines) <= 10, f"{len(lines)} lines for {stats.dead_letters.total()} dead letters"
    assert line.failures.total() == 0 and line.reconnects == 0
    malformed = len(sent_log(log, "malformed"))
    assert stats.dead_letters.total() == malformed, "every malformed frame is one counted dead letter"
    assert len(read_topic(kafka_bootstrap, values.kafka_topic_dead_letters, expect=malformed)) == malformed
    assert len(read_topic(kafka_bootstrap, values.kafka_topic_ticks)) == len(sent_log(log, "tick"))


def test_a_wild_exchange_time_fails_neither_its_record_nor_the_records_around_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Kafka refuses a record stamped more than an hour ahead, and its whole batch with it: junk that
    decodes as a tick with such a time must not take the ticks of other instruments down with it."""
    now = time.time_ns() // 1_000_000 // 1000 * 1000
    wild = fresh_ticks_message(TOKENS[:1], exchange_ms=now + 3 * 3_600_000)
    script: list[bytes | str] = [m for _ in range(5) for m in (fresh_ticks_message(TOKENS[1:]), wild)]
    with scripted_kite(script) as port:
        values = connector_settings(kafka_bootstrap, port, ",".join(map(str, TOKENS)), tmp_path)
        with running_connector(values) as connector:
            stats = connector.shard_stats[0]
            wait_until(lambda: stats.delivered.total() + stats.failed.total() >= 5 * len(TOKENS), 60, "all")
    assert stats.failed.total() == 0, "no record, nor its batch, refused"
    ticks = read_topic(kafka_bootstrap, values.kafka_topic_ticks, expect=5 * len(TOKENS))
    assert len(ticks) == 5 * len(TOKENS)
    wild_ones = [r for r in ticks if r.key == str(TOKENS[0])]
    assert len(wild_ones) == 5
    for r in wild_ones:  # the Kafka timestamp is the receive time; the record keeps the exchange time
        assert r.timestamp == int(r.value["received_at"].timestamp() * 1000)
        assert r.value["exchange_timestamp"].timestamp() * 1000 == now + 3 * 3_600_000
