"""Deployment: the whole docker-compose file, every service judged by its output (ticks and order updates
in Kafka, Confluent-framed through the registry, printed by the consumer, counted into bars by the candle
processor), and the consume CLI against a real broker."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from connector.config import ConsumeSettings
from connector.consume import LiveView, consume
from connector.kite import encode_message, parse_binary
from connector.serde import AvroReader, build_serializers
from tests.conftest import fixture_packet
from tests.harness import (
    DEFAULT_ALERTMANAGER_IMAGE,
    DEFAULT_PROMETHEUS_IMAGE,
    DEFAULT_REGISTRY_IMAGE,
    LOCAL_ALERTMANAGER_IMAGE,
    LOCAL_PROMETHEUS_IMAGE,
    LOCAL_REGISTRY_IMAGE,
    REGISTRY_API,
    earliest_consumer,
    free_port,
    pick_image,
)
from tests.integration.helpers import Record, compose_command, read_topic, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BAR_INTERVALS = {"5s": 5_000, "1m": 60_000}
SILENT_SECONDS = 5  # the monitoring test's KiteFeedSilent threshold


class Stack(NamedTuple):
    """The compose project these tests brought up: its command and its environment."""

    compose: list[str]
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.compose, *args], env=self.env, capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not shutil.which("docker"):
        pytest.skip("no Docker engine")
    project = f"kitee2e{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "KAFKA_HOST_PORT": str(free_port()),
        "METRICS_HOST_PORT": str(free_port()),
        "REGISTRY_HOST_PORT": str(free_port()),
        "KITE_REGISTRY_IMAGE": pick_image(
            "KITE_REGISTRY_IMAGE", DEFAULT_REGISTRY_IMAGE, LOCAL_REGISTRY_IMAGE
        ),
        "SIM_RATE": "20",
        "CANDLES_INTERVALS": ",".join(BAR_INTERVALS),  # 5 s bars close while the other checks run
        "SIM_ORDER_RATE": "2",
        "KITE_RECONNECT_MAX_DELAY": "2",
        # the profile `monitoring`, with the drill configuration of test_monitoring_profile_...
        "KITE_PROMETHEUS_IMAGE": pick_image(
            "KITE_PROMETHEUS_IMAGE", DEFAULT_PROMETHEUS_IMAGE, LOCAL_PROMETHEUS_IMAGE
        ),
        "KITE_ALERTMANAGER_IMAGE": pick_image(
            "KITE_ALERTMANAGER_IMAGE", DEFAULT_ALERTMANAGER_IMAGE, LOCAL_ALERTMANAGER_IMAGE
        ),
        "KITE_PROMETHEUS_CONFIG": str(_drill_configuration(tmp_path_factory.mktemp("prometheus"))),
        "PROMETHEUS_HOST_PORT": str(free_port()),
        "ALERTMANAGER_HOST_PORT": str(free_port()),
        "COMPOSE_PROJECT_NAME": project,
        "DOCKER_BUILDKIT": "0",
    }
    stack = Stack(compose_command("docker-compose.yml"), env)
    build = stack.run("build", "connector")
    assert build.returncode == 0, build.stderr[-3000:]
    up = stack.run("up", "-d")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield stack
    finally:
        print(stack.run("logs", "--tail=30", "connector", "candles").stdout[-6000:])
        stack.run("--profile", "monitoring", "down", "-v", "--remove-orphans")


def _healthy(port: str) -> bool:
    try:
        return bool(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200)
    except OSError:
        return False


def _tokens(records: list[Record]) -> set[int]:
    return {r.value["instrument_token"] for r in records}


def test_compose_up_streams_ticks_and_order_updates_to_the_host(compose_stack: Stack) -> None:
    started = time.monotonic()
    wait_until(lambda: _healthy(compose_stack.env["METRICS_HOST_PORT"]), 240, "the connector to be healthy")
    print(f"\n[compose] healthy after {time.monotonic() - started:.0f} s")
    bootstrap = f"127.0.0.1:{compose_stack.env['KAFKA_HOST_PORT']}"
    registry = f"http://127.0.0.1:{compose_stack.env['REGISTRY_HOST_PORT']}{REGISTRY_API}"
    # Partitions are fetched unevenly: read until every instrument showed up and 1,000 ticks arrived.
    ticks = read_topic(
        bootstrap,
        "kite.ticks",
        limit=180,
        until=lambda got: len(got) >= 1000 and len(_tokens(got)) == 8,
        registry_url=registry,
    )
    assert len(ticks) >= 1000
    assert {r.kind for r in ticks} == {"Tick"}
    assert len(_tokens(ticks)) == 8
    # Orders keep coming, so "idle" never ends this read: a few are enough.
    orders = read_topic(
        bootstrap, "kite.order_updates", registry_url=registry, until=lambda got: len(got) >= 5
    )
    assert orders and all(r.kind == "OrderUpdate" for r in orders)
    _assert_confluent_framed(bootstrap, registry)

    # The compose consumer (`kite-connector consume`) reads the same topics through the registry.
    wait_until(
        lambda: _printed_ticks(compose_stack) >= 8, 60, "the consumer to print ticks of every instrument"
    )
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{compose_stack.env['METRICS_HOST_PORT']}/metrics"
    ).read()
    assert b"records_delivered_total" in metrics


def _printed_ticks(stack: Stack) -> int:
    """How many instruments the compose consumer printed ticks of, in its latest output (JSON lines)."""
    tokens = set()
    for line in stack.run(
        "logs", "--no-color", "--no-log-prefix", "--tail=200", "consumer"
    ).stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("topic") == "kite.ticks" and record.get("type") == "Tick":
            tokens.add(record["value"]["instrument_token"])
    return len(tokens)


def _assert_confluent_framed(bootstrap: str, registry: str) -> None:
    """By default compose writes the Confluent wire format, readable with confluent-kafka alone."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = SchemaRegistryClient({"url": registry})
    assert client.get_compatibility("kite.ticks-value") == "BACKWARD"
    consumer = earliest_consumer(bootstrap, "kite.ticks", "framing")
    try:
        msg = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.error() is None
        value = msg.value() or b""
        assert value[0] == 0
        assert int.from_bytes(value[1:5], "big") == client.get_latest_version("kite.ticks-value").schema_id
        tick = AvroDeserializer(client)(value, SerializationContext("kite.ticks", MessageField.VALUE))
        assert str(tick["instrument_token"]) == (msg.key() or b"").decode()
    finally:
        consumer.close()


def _metric(port: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_compose_restarts_a_connector_that_exits(compose_stack: Stack) -> None:
    container = compose_stack.run("ps", "-q", "connector").stdout.strip()
    port = compose_stack.env["METRICS_HOST_PORT"]
    wait_until(lambda: _healthy(port), 240, "the connector to be healthy")
    # Any exit docker was not asked for is restarted. SIGTERM from inside is one a test can cause: the
    # kernel ignores SIGKILL sent to PID 1 from its own namespace, and `docker kill` counts as asked for.
    stop = ["python3", "-c", "import os, signal; os.kill(1, signal.SIGTERM)"]
    stopped = compose_stack.run("exec", "-T", "connector", *stop)
    assert stopped.returncode == 0, stopped.stderr[-2000:]

    wait_until(lambda: _restart_count(container) >= 1, 60, "docker to restart the connector")
    wait_until(lambda: _healthy(port), 120, "the restarted connector to be healthy")
    wait_until(lambda: _metric(port, "records_delivered_total") > 0, 60, "the restarted connector to deliver")


def _restart_count(container: str) -> int:
    inspect = ["docker", "inspect", "-f", "{{.RestartCount}}", container]
    return int(subprocess.run(inspect, capture_output=True, text=True).stdout.strip() or 0)


def test_a_connector_that_keeps_failing_exits_3_and_compose_brings_it_back(compose_stack: Stack) -> None:
    """A fault on every message (the overlay injects it into the first process only): the connection is
    rebuilt twice, then gives up; `run` exits 3 and the restart policy starts a process that streams."""
    overlay = str(ROOT / "tests" / "integration" / "compose" / "faulty-connector.yml")
    faulty = Stack([*compose_stack.compose, "-f", overlay], compose_stack.env)
    up = faulty.run("up", "-d", "--no-deps", "connector")  # recreated with the overlay
    assert up.returncode == 0, up.stderr[-3000:]
    container = faulty.run("ps", "-q", "connector").stdout.strip()
    wait_until(lambda: _restart_count(container) >= 1, 120, "the failing connector to exit and be restarted")
    port = compose_stack.env["METRICS_HOST_PORT"]
    wait_until(lambda: _healthy(port), 120, "the restarted connector to be healthy")
    wait_until(lambda: _metric(port, "records_delivered_total") > 0, 60, "the restarted connector to deliver")
    logs = faulty.run("logs", "connector").stdout
    assert logs.count("injected: produce_ticks is broken") >= 3
    assert "exiting so that the process is restarted" in logs
    assert _metric(port, "connection_failures_total") == 0, "the new process has not failed"


def _read_to_end(bootstrap: str, topic: str) -> list[Message]:
    """The committed records of ``topic`` from its start until each partition reported its end once (the
    stream goes on meanwhile)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"end-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending, out = set(partitions), []
        deadline = time.monotonic() + 120
        while pending:
            assert time.monotonic() < deadline, f"{topic}: partitions {pending} never reached their end"
            for msg in consumer.consume(1000, 1.0):
                err = msg.error()
                if err is None:
                    out.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise AssertionError(f"{topic}: {err}")
        return out
    finally:
        consumer.close()


def test_compose_candles_writes_bars_that_count_the_ticks(compose_stack: Stack) -> None:
    """Every bar holds exactly the ticks of its instrument and interval in kite.ticks, less those that came
    after it closed (copied to kite.candles.late); no tick was dead-lettered by the candle processor."""
    bootstrap = f"127.0.0.1:{compose_stack.env['KAFKA_HOST_PORT']}"
    registry = f"http://127.0.0.1:{compose_stack.env['REGISTRY_HOST_PORT']}{REGISTRY_API}"
    port = compose_stack.run("port", "candles", "9101").stdout.strip().rsplit(":", 1)[-1]
    wait_until(lambda: _healthy(port), 120, "the candle processor to be healthy")
    # Bars first: every tick of a closed bar is in kite.ticks before the bar is written.
    bars: dict[str, list[dict[str, Any]]] = {}

    def bars_written() -> bool:
        for label in BAR_INTERVALS:
            bars[label] = [
                bar for _, bar in _decoded(_read_to_end(bootstrap, f"kite.candles.{label}"), registry)
            ]
        return len(_tokens_of(bars["5s"])) == 8 and bool(bars["1m"])

    started = time.monotonic()
    wait_until(bars_written, 90, "5 s bars of every instrument and a first 1m bar")
    print(f"\n[compose] bars after {time.monotonic() - started:.0f} s more")
    ticks = [tick for _, tick in _decoded(_read_to_end(bootstrap, "kite.ticks"), registry)]
    late = _read_to_end(bootstrap, "kite.candles.late")
    for label, ms in BAR_INTERVALS.items():
        want: Counter[tuple[int, int]] = Counter(_bucket(tick, ms) for tick in ticks)
        for msg in late:
            late_for = dict(msg.headers() or [])["candles.late_for"]
            if isinstance(late_for, bytes) and label in late_for.decode().split(","):
                want[_bucket(AvroReader(registry).read(msg.value() or b"")[1], ms)] -= 1
        got = {(bar["instrument_token"], round(bar["start"].timestamp() * 1000)): bar for bar in bars[label]}
        assert len(got) == len(bars[label]), f"{label}: every bar once"
        wrong = {key: (bar["ticks"], want[key]) for key, bar in got.items() if bar["ticks"] != want[key]}
        assert not wrong, f"{label} bars: ticks in the bar vs in kite.ticks, by (instrument, start): {wrong}"
    letters = _decoded(_read_to_end(bootstrap, "kite.dead_letters"), registry)
    assert not [letter for _, letter in letters if letter["source"] == "candles"]
    assert _metric(port, 'candles_bars_written_total{interval="5s"}') > 0
    assert _metric(port, "candles_undecodable_window") == 0


def _tokens_of(values: list[dict[str, Any]]) -> set[int]:
    return {v["instrument_token"] for v in values}


def _decoded(messages: list[Message], registry: str) -> list[tuple[str, dict[str, Any]]]:
    reader = AvroReader(registry)
    return [reader.read(msg.value() or b"") for msg in messages]


def _bucket(tick: dict[str, Any], ms: int) -> tuple[int, int]:
    """(instrument, start of the bar of ``ms`` holding the tick's event time, as the candles see it; for
    intervals of whole minutes or less the IST alignment is the UTC one)."""
    stamp = tick["exchange_timestamp"] or tick["received_at"]
    return tick["instrument_token"], round(stamp.timestamp() * 1000) // ms * ms


def _produce_known(bootstrap: str, topic: str) -> None:
    """The two real fixture packets as the connector writes them, then one record that is not Avro."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    serializers = build_serializers()
    ticks, _ = parse_binary(encode_message([fixture_packet("ticker_full"), fixture_packet("ticker_quote")]))
    producer = Producer({"bootstrap.servers": bootstrap})
    for tick in ticks:
        value = serializers.tick(tick, 1_764_000_000_000)
        producer.produce(topic, value, str(tick.instrument_token).encode(), headers=serializers.tick.headers)
    producer.produce(topic, b"not avro", b"bad")
    assert producer.flush(30) == 0


def _consume_values(bootstrap: str, topic: str, **extra: str) -> ConsumeSettings:
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CONSUME_TOPICS": topic, "CONSUME_FROM_BEGINNING": "true"}
    return ConsumeSettings.load(environ={**env, **extra})


def test_consume_cli_prints_exact_json_and_reports_bad_records(kafka_bootstrap: str) -> None:
    topic = f"consume-{uuid.uuid4().hex[:8]}"
    _produce_known(kafka_bootstrap, topic)
    values = _consume_values(kafka_bootstrap, topic, CONSUME_IDLE_EXIT_SECONDS="5")
    out, err = io.StringIO(), io.StringIO()
    assert consume(values, out, err) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    full = lines[0]
    assert (full["topic"], full["partition"], full["offset"], full["key"], full["type"]) == (
        topic,
        0,
        0,
        "408065",
        "Tick",
    )
    assert full["value"]["last_price"] == 1573.7
    assert full["value"]["exchange_timestamp"] == "2021-07-05T05:11:27Z"
    assert full["value"]["received_at"] == "2025-11-24T16:00:00Z"
    assert full["value"]["depth_buy"][0] == {"quantity": 5, "price": 1573.4, "orders": 1}
    assert lines[1]["value"]["mode"] == "quote" and lines[1]["value"]["depth_buy"] is None
    assert "invalid magic byte" in err.getvalue()


def test_consume_live_view_renders(kafka_bootstrap: str) -> None:
    topic = f"live-{uuid.uuid4().hex[:8]}"
    _produce_known(kafka_bootstrap, topic)
    values = _consume_values(kafka_bootstrap, topic, CONSUME_VIEW="live", CONSUME_IDLE_EXIT_SECONDS="3")
    out = io.StringIO()
    consume(values, out, io.StringIO())
    frames = out.getvalue().split("\x1b[H\x1b[2J")[1:]
    assert len(frames) >= 3, "refreshed in place several times"
    assert "408065" in frames[-1] and "1573.15" in frames[-1] and "Tick: 2" in frames[-1]
    view = LiveView(clock=lambda: 0.0)
    assert "instruments: 0" in view.render()


def _drill_configuration(directory: Path) -> Path:
    """deploy/prometheus with 1 s scrapes and evaluations, a 5 s silence threshold, and calendar rules in
    which every exchange is open (`market-calendar --always-open`), so the test runs at any hour."""
    deploy = ROOT / "deploy" / "prometheus"
    config = yaml.safe_load((deploy / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = directory / "rules"
    rules.mkdir()
    shutil.copy(deploy / "rules" / "alerts.rules.yml", rules)
    thresholds = yaml.safe_load((deploy / "rules" / "thresholds.rules.yml").read_text())
    for rule in thresholds["groups"][0]["rules"]:
        if rule["record"] == "kite:threshold:feed_silent_seconds":
            rule["expr"] = f"vector({SILENT_SECONDS})"
    (rules / "thresholds.rules.yml").write_text(yaml.safe_dump(thresholds))
    drill = [sys.executable, "-m", "connector.cli", "market-calendar", "--prometheus-rules", "--always-open"]
    (rules / "market.rules.yml").write_text(
        subprocess.run(drill, capture_output=True, text=True, check=True).stdout
    )
    for path in (directory, rules, *directory.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)  # Prometheus runs as an unprivileged user
    return directory


def _api(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _silent_feeds(prometheus: str, state: str = "firing") -> set[str]:
    """Exchanges for which KiteFeedSilent is in ``state``, from Prometheus' API."""
    alerts = _api(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return {
        a["labels"]["exchange"]
        for a in alerts
        if a["labels"]["alertname"] == "KiteFeedSilent" and a["state"] == state
    }


def _scraped(prometheus: str, query: str) -> bool:
    try:
        return bool(_api(f"{prometheus}/api/v1/query?query={query}")["data"]["result"])
    except OSError:
        return False


def test_monitoring_profile_fires_and_resolves_the_silent_feed_alert(compose_stack: Stack) -> None:
    """Prometheus with the project's alert rules sees the feed stop (simulator stopped): KiteFeedSilent
    fires within its threshold and reaches Alertmanager; when the feed returns, it resolves."""
    up = compose_stack.run("--profile", "monitoring", "up", "-d", "prometheus", "alertmanager")
    assert up.returncode == 0, up.stderr[-3000:]
    prometheus = f"http://127.0.0.1:{compose_stack.env['PROMETHEUS_HOST_PORT']}"
    alertmanager = f"http://127.0.0.1:{compose_stack.env['ALERTMANAGER_HOST_PORT']}"
    try:
        wait_until(lambda: _scraped(prometheus, "kite_last_tick_timestamp_seconds"), 120, "tick times")
    except AssertionError:
        print(compose_stack.run("--profile", "monitoring", "logs", "--tail=20", "prometheus").stdout)
        targets = _api(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        raise AssertionError([(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]) from None
    wait_until(lambda: _scraped(prometheus, "kite:market_open==1"), 30, "the drill calendar's rules")
    assert _silent_feeds(prometheus) == set(), "ticks flow: no feed is silent"

    stopped = time.monotonic()
    assert compose_stack.run("stop", "simulator").returncode == 0
    wait_until(lambda: "NSE" in _silent_feeds(prometheus), SILENT_SECONDS + 30, "KiteFeedSilent to fire")
    fired = time.monotonic() - stopped
    # the threshold, plus a scrape and an evaluation (1 s each), plus the stop command itself
    assert fired < SILENT_SECONDS + 15, f"fired {fired:.1f} s after the feed stopped"
    print(f"\n[monitoring] KiteFeedSilent fired {fired:.1f} s after the simulator stopped")

    def alertmanager_has_it() -> bool:
        return any(
            a["labels"]["alertname"] == "KiteFeedSilent" for a in _api(f"{alertmanager}/api/v2/alerts")
        )

    wait_until(alertmanager_has_it, 30, "Alertmanager to receive KiteFeedSilent")

    restarted = time.monotonic()
    assert compose_stack.run("start", "simulator").returncode == 0
    wait_until(
        lambda: not _silent_feeds(prometheus) and not _silent_feeds(prometheus, "pending"),
        60,
        "KiteFeedSilent to resolve",
    )
    print(f"[monitoring] resolved {time.monotonic() - restarted:.1f} s after the simulator started again")
