"""``kite-connector candles`` against a real broker: bars equal a reference computed from the ticks topic,
every bar and late tick is committed exactly once, also when the processor is SIGKILLed again and again,
and when two instances share the partitions and rebalance. It refuses to run blind (at start, and when a
whole window of ticks is undecodable), and each transactional call meets the faults librdkafka documents:
a paused broker mid-commit and mid-abort, a restart that meets its predecessor's open transaction, fencing.
Gap markers flag the bars they overlap, across SIGKILLs, and a marker that comes after its bar closed
writes that bar again once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Event
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from connector.candles import CandleProcessor, _processor
from connector.candles._status import ProcessorFailed
from connector.config import CandlesSettings
from connector.errors import SerializationError
from connector.gaps import Gap
from connector.kite import Mode, Tick
from connector.serde import AvroReader, build_serializers
from connector.serde._framing import confluent_frame
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator
from tests.harness import free_port
from tests.integration.faults import producer_pausing_broker
from tests.integration.helpers import connector_settings, http_get, running_connector, wait_until

pytestmark = pytest.mark.integration

DAY_MS, IST_MS = 86_400_000, 19_800_000
# The last IST midnight at least two hours ago: streams span it, and their times stay within the topics'
# retention (records a year old are deleted by the broker's next retention check, bars included).
MIDNIGHT = (int(time.time() * 1000) - 7_200_000 + IST_MS) // DAY_MS * DAY_MS - IST_MS
INTERVALS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "1d": DAY_MS}
GRACE = 2000
PARTITIONS = 3
TOKENS = [n * 256 + 1 for n in range(100, 112)] + [n * 256 + 2 for n in range(200, 206)]  # NSE, NFO


def _stream(count: int, seed: int) -> list[tuple[int, bytes]]:
    """(token, framed Tick) in send order: event time crosses IST midnight, ~10 % out of order within the
    grace, ~1 % late by up to two minutes, ~10 % quote mode (no exchange time: receive time counts)."""
    rnd = random.Random(seed)
    encode = build_serializers().tick
    clock, price = MIDNIGHT - count * 100, dict.fromkeys(TOKENS, 100_000)  # midnight half-way through
    out = []
    for _ in range(count):
        clock += rnd.randint(0, 400)
        token = rnd.choice(TOKENS)
        roll = rnd.random()
        t = clock - (rnd.randint(0, 1500) if roll < 0.1 else rnd.randint(3000, 120_000) if roll < 0.11 else 0)
        day_start = t - (t + IST_MS) % DAY_MS
        volume = (t - day_start) // 97 * (token % 7 + 1)  # cumulative, from zero each IST day
        price[token] += rnd.randint(-20, 20)
        nfo = token & 0xFF == 2
        mode = Mode.QUOTE if rnd.random() < 0.1 else Mode.FULL
        tick = Tick(
            token, mode, True, price[token] / 100, 5, price[token] / 100, volume, 10, 20,
            oi=rnd.randint(1000, 9000) if nfo and mode == Mode.FULL else None,
            exchange_timestamp_ms=t if mode == Mode.FULL else None,
        )  # fmt: skip
        out.append((token, encode(tick, t)))
    return out


@dataclass
class Env:
    bootstrap: str
    ticks: str
    prefix: str
    late: str
    state: str
    dlq: str
    group: str
    logs: Path
    gaps: str = ""
    markers: list[Gap] = field(default_factory=list)  # written to the gaps topic
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)  # killed at teardown if still up

    def settings(self, instance: str, **extra: str) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC_TICKS": self.ticks,
            "KAFKA_TOPIC_GAPS": self.gaps,
            "CANDLES_INTERVALS": ",".join(INTERVALS),
            "CANDLES_TOPIC_PREFIX": self.prefix,
            "CANDLES_LATE_TOPIC": self.late,
            "CANDLES_STATE_TOPIC": self.state,
            "KAFKA_TOPIC_DEAD_LETTERS": self.dlq,
            "CANDLES_GROUP": self.group,
            "CANDLES_INSTANCE_ID": instance,
            "CANDLES_GRACE_MS": str(GRACE),
            "CANDLES_IDLE_SECONDS": "0",
            "CANDLES_FROM_BEGINNING": "true",
            "CANDLES_COMMIT_INTERVAL_MS": "100",
            "CANDLES_SESSION_TIMEOUT_MS": "6000",
            "CANDLES_TRANSACTION_TIMEOUT_MS": "5000",
            "KAFKA_TOPIC_PARTITIONS": "2",
            "CANDLES_METRICS_PORT": "0",
            "LOG_FORMAT": "text",
            **extra,
        }

    def start(self, instance: str, **extra: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"candles-{instance}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "candles"],
            env={**os.environ, **self.settings(instance, **extra)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc


@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Env]:
    s = uuid.uuid4().hex[:8]
    e = Env(kafka_bootstrap, f"ticks-{s}", f"candles-{s}.", f"late-{s}", f"state-{s}", f"dlq-{s}",
            f"g-{s}", tmp_path, f"gaps-{s}")  # fmt: skip
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for topic, n in ((e.ticks, PARTITIONS), (e.gaps, 2)):
        admin.create_topics([NewTopic(topic, n, 1)])[topic].result(30)
    yield e
    for proc in e.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for log in tmp_path.glob("candles-*.log"):
        print(f"--- {log.name} (tail)\n" + "\n".join(log.read_text().splitlines()[-15:]))


def _send(env: Env, stream: list[tuple[int, bytes]], seconds: float) -> threading.Thread:
    """Produces the stream at an even pace over ``seconds`` in a thread, keyed like the connector."""

    def run() -> None:
        producer = Producer({"bootstrap.servers": env.bootstrap, "linger.ms": 5})
        chunk = max(1, len(stream) // int(seconds * 20))
        for i in range(0, len(stream), chunk):
            for token, value in stream[i : i + chunk]:
                producer.produce(env.ticks, value, str(token).encode())
            producer.poll(0)
            time.sleep(0.05)
        assert producer.flush(30) == 0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _read_all(bootstrap: str, topics: list[str], idle: float = 3.0) -> list[Any]:
    """Every committed record of ``topics`` (read_committed), until nothing new came for ``idle`` s."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})  # fmt: skip
    consumer.subscribe(topics)
    out, last = [], time.monotonic()
    try:
        while time.monotonic() - last < idle:
            batch = consumer.consume(5000, 0.5)
            for msg in batch:
                assert msg.error() is None, msg.error()
                out.append(msg)
            if batch:
                last = time.monotonic()
    finally:
        consumer.close()
    return out


def _caught_up(env: Env, total: int) -> bool:
    """The group committed every tick of the topic."""
    probe = Consumer(
        {"bootstrap.servers": env.bootstrap, "group.id": env.group, "isolation.level": "read_committed"}
    )
    try:
        tps = [TopicPartition(env.ticks, p) for p in range(PARTITIONS)]
        committed = probe.committed(tps, 10)
        ends = [probe.get_watermark_offsets(tp, 10)[1] for tp in tps]
    finally:
        probe.close()
    return sum(ends) >= total and [tp.offset for tp in committed] == ends


def _wait_caught_up(env: Env, total: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not _caught_up(env, total):
        assert time.monotonic() < deadline, "the processor did not catch up with the ticks topic"
        time.sleep(0.5)


def reference(env: Env) -> tuple[dict[tuple[str, int, int], dict[str, Any]], Counter[tuple[int, int]]]:
    """Bars and late ticks straight from the ticks topic: decoded whole, grouped with lists, sorted."""
    reader = AvroReader()
    by_partition: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for msg in _read_all(env.bootstrap, [env.ticks], idle=2.0):
        try:
            _, v = reader.read(msg.value())
        except SerializationError:
            continue  # the processor dead-letters it
        by_partition.setdefault(msg.partition(), []).append((msg.offset(), v))
    bars: dict[tuple[str, int, int], list[tuple[int, int, dict[str, Any]]]] = {}
    late: Counter[tuple[int, int]] = Counter()
    final_wm: dict[int, int] = {}
    for p, rows in by_partition.items():
        seen = None
        for offset, v in sorted(rows, key=lambda r: r[0]):
            stamp = v["exchange_timestamp"] or v["received_at"]
            t = round(stamp.timestamp() * 1000)
            wm: int | None = None if seen is None else seen - GRACE
            for label, ms in INTERVALS.items():
                start = t - (t + IST_MS) % ms
                if wm is not None and start + ms <= wm:
                    late[(p, offset)] += 1
                else:
                    bars.setdefault((label, v["instrument_token"], start), []).append((t, offset, v))
            seen = t if seen is None else max(seen, t)
        final_wm[p] = (seen or 0) - GRACE
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    prev: dict[tuple[str, int], tuple[int, int]] = {}
    partition_of = {}
    for p, rows in by_partition.items():
        for _, v in rows:
            partition_of[v["instrument_token"]] = p
    for (label, token, start), ticks in sorted(bars.items(), key=lambda kv: kv[0][2]):
        end = start + INTERVALS[label]
        if end > final_wm[partition_of[token]]:
            continue  # still open
        ticks.sort(key=lambda r: (r[0], r[1]))
        volumes = [r[2]["volume_traded"] for r in ticks if r[2]["volume_traded"] is not None]
        ois = [r[2]["oi"] for r in ticks if r[2]["oi"] is not None]
        day = (start + IST_MS) // DAY_MS
        volume = None
        if volumes:
            before = prev.get((label, token))
            top = max(volumes)
            if before is None:
                volume = top - min(volumes)
            elif before[1] != day or top < before[0]:
                volume = top
            else:
                volume = top - before[0]
            prev[(label, token)] = (top, day)
        prices = [r[2]["last_price"] for r in ticks]
        gap = any(token in g.instrument_tokens and g.start_ms < end and start < g.end_ms for g in env.markers)
        out[(label, token, start)] = {
            "gap": gap,
            "open": prices[0], "high": max(prices), "low": min(prices), "close": prices[-1],
            "volume": volume, "ticks": len(ticks), "oi": ois[-1] if ois else None,
            "first_tick_at": ticks[0][0], "last_tick_at": ticks[-1][0], "end": end,
        }  # fmt: skip
    return out, late


def _bars(env: Env) -> tuple[Counter[tuple[str, int, int]], dict[tuple[str, int, int], dict[str, Any]]]:
    reader = AvroReader()
    seen: Counter[tuple[str, int, int]] = Counter()
    values = {}
    for msg in _read_all(env.bootstrap, [env.prefix + label for label in INTERVALS]):
        kind, v = reader.read(msg.value())
        assert kind == "Candle"
        assert msg.topic() == env.prefix + v["interval"] and msg.key() == str(v["instrument_token"]).encode()
        start = round(v["start"].timestamp() * 1000)
        key = (v["interval"], v["instrument_token"], start)
        assert v["revision"] == 0, "no marker came after its bar closed"
        seen[key] += 1
        assert v["closed_by"] == "watermark"
        values[key] = {
            k: round(v[k].timestamp() * 1000) if k in ("first_tick_at", "last_tick_at", "end") else v[k]
            for k in (
                "gap",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "ticks",
                "oi",
                "first_tick_at",
                "last_tick_at",
                "end",
            )
        }
    return seen, values


def _late(env: Env) -> Counter[tuple[int, int]]:
    late: Counter[tuple[int, int]] = Counter()
    for msg in _read_all(env.bootstrap, [env.late], idle=1.0):
        headers = dict(msg.headers() or [])
        _, p, offset = headers["candles.source"].decode().rsplit("/", 2)
        late[(int(p), int(offset))] += len(headers["candles.late_for"].decode().split(","))
    return late


def _check_exactly_once(env: Env) -> int:
    want, want_late = reference(env)
    seen, got = _bars(env)
    doubled = {k: n for k, n in seen.items() if n > 1}
    assert not doubled, f"bars committed more than once: {list(doubled.items())[:5]}"
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, (
        f"missing {missing[:5]} ({len(missing)}), extra {extra[:5]} ({len(extra)})"
    )
    wrong = [(k, got[k], want[k]) for k in want if got[k] != want[k]]
    assert not wrong, f"{len(wrong)} bars differ, e.g. {wrong[:2]}"
    assert _late(env) == want_late
    assert set(INTERVALS) == {k[0] for k in want}, "every interval closed bars"
    assert len(want_late) > 20
    if env.markers:
        assert 0 < sum(bar["gap"] for bar in want.values()) < len(want) / 2
    return len(want)


def _mark_gaps(env: Env, stream: list[tuple[int, bytes]], count: int, rnd: random.Random) -> None:
    """Writes ``count`` gap markers of random instruments and times within the stream's, as the connector
    does (timestamped when the silence ended)."""
    reader = AvroReader()
    times = sorted(round(reader.read(v)[1]["received_at"].timestamp() * 1000) for _, v in stream)
    encode = build_serializers().gap
    producer = Producer({"bootstrap.servers": env.bootstrap})
    for shard in range(count):
        start = rnd.choice(times)
        gap = Gap(shard, sorted(rnd.sample(TOKENS, 4)), start, start + rnd.randint(500, 20_000), "cut")
        producer.produce(env.gaps, encode(gap, gap.end_ms), str(shard).encode(), timestamp=gap.end_ms)
        env.markers.append(gap)
    assert producer.flush(30) == 0


def test_bars_equal_the_reference_with_late_and_out_of_order_ticks(env: Env) -> None:
    stream = _stream(8000, seed=1)
    sender = _send(env, stream, 3)
    garbage = Producer({"bootstrap.servers": env.bootstrap})
    garbage.produce(env.ticks, b"not avro", b"1")
    assert garbage.flush(30) == 0
    proc = env.start("solo")
    try:
        sender.join(60)
        _wait_caught_up(env, len(stream) + 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    bars = _check_exactly_once(env)
    _check_committed_with_their_state(env)
    letters = _read_all(env.bootstrap, [env.dlq], idle=1.0)
    kind, letter = AvroReader().read(letters[0].value())
    assert (len(letters), kind, letter["source"], letter["raw"]) == (1, "DeadLetter", "candles", b"not avro")
    print(f"{bars} bars")


def _check_committed_with_their_state(env: Env) -> None:
    """Each partition's committed offset carries the sequence number of the state checkpoint written in
    its transaction: what a restore waits for, as the offset alone repeats (idle closes, amendments)."""
    snapshots: dict[str, Any] = {}
    for msg in _read_all(env.bootstrap, [env.state], idle=1.0):
        if msg.key().count(b"/") == 1:
            snapshots[msg.key().decode()] = json.loads(msg.value())
    probe = Consumer({"bootstrap.servers": env.bootstrap, "group.id": env.group})
    try:
        committed = probe.committed([TopicPartition(env.ticks, p) for p in range(PARTITIONS)], 10)
    finally:
        probe.close()
    for tp in committed:
        snapshot = snapshots[f"{env.ticks}/{tp.partition}"]
        assert (tp.offset, tp.metadata) == (snapshot["offset"], str(snapshot["seq"])), (tp, snapshot)


def _resumed(env: Env, name: str) -> list[str]:
    """The partitions@offsets of each time ``name`` got partitions and resumed, from its log."""
    path = env.logs / f"candles-{name}.log"
    text = path.read_text() if path.exists() else ""
    return [line.split("resuming ", 1)[1] for line in text.splitlines() if "resuming " in line]


def _start_and_wait(env: Env, name: str, **extra: str) -> subprocess.Popen[bytes]:
    """Starts ``name`` and waits until it reads ticks (logged after its state is restored)."""
    before = len(_resumed(env, name))
    proc = env.start(name, **extra)
    deadline = time.monotonic() + 30
    while len(_resumed(env, name)) <= before:
        assert proc.poll() is None, f"candles {name} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"candles {name} did not get partitions within 30 s"
        time.sleep(0.05)
    return proc


def _kill_loop(
    env: Env, sender: threading.Thread, instances: list[str], kills: int, rnd: random.Random
) -> dict[str, subprocess.Popen[bytes]]:
    """SIGKILLs a random instance at a random moment after it started reading, ``kills`` times and
    while ticks stream; restarts it each time. A second instance joins after the second kill."""
    procs = {instances[0]: _start_and_wait(env, instances[0])}
    done = 0
    while done < kills or sender.is_alive():
        time.sleep(rnd.uniform(0.05, 1.5))
        if len(procs) < len(instances) and done == 2:
            name = instances[len(procs)]
            procs[name] = _start_and_wait(env, name)  # joins: the group rebalances, partitions move
            continue
        name = rnd.choice(sorted(procs))
        procs[name].send_signal(signal.SIGKILL)
        procs[name].wait()
        done += 1
        procs[name] = _start_and_wait(env, name)
    return procs


def test_sigkill_at_random_moments_neither_loses_nor_doubles_a_bar(env: Env) -> None:
    """Gap markers written before the ticks flag exactly the bars they overlap, whatever the kills."""
    rnd = random.Random(7)
    stream = _stream(30_000, seed=2)
    _mark_gaps(env, stream, 12, rnd)
    sender = _send(env, stream, 30)
    procs = _kill_loop(env, sender, ["solo"], 10, rnd)
    try:
        _wait_caught_up(env, len(stream))
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    print(f"{_check_exactly_once(env)} bars")


def test_two_instances_rebalance_and_sigkill(env: Env) -> None:
    rnd = random.Random(11)
    stream = _stream(30_000, seed=3)
    sender = _send(env, stream, 30)
    procs = _kill_loop(env, sender, ["a", "b"], 10, rnd)
    try:
        taken = len(_resumed(env, "a"))
        procs["b"].send_signal(signal.SIGKILL)  # b dies for good: after its session times out, a takes over
        procs["b"].wait()
        deadline = time.monotonic() + 60
        while not any(r.count("@") == PARTITIONS for r in _resumed(env, "a")[taken:]):
            assert time.monotonic() < deadline, "a did not take over b's partitions"
            time.sleep(0.2)
        _wait_caught_up(env, len(stream))
    finally:
        procs["a"].send_signal(signal.SIGTERM)
        assert procs["a"].wait(30) == 0
    assert any(r.count("@") < PARTITIONS for r in _resumed(env, "a")), "a shared the partitions with b"
    print(f"{_check_exactly_once(env)} bars")


# Refusing to run blind, and the transactional calls under the faults librdkafka documents.


def _confluent_framed(count: int) -> list[tuple[int, bytes]]:
    """Ticks in the Confluent wire format (schema id 1), as a connector with a registry writes them."""
    return [(token, confluent_frame(1) + value[10:]) for token, value in _stream(count, seed=9)]


def _produce(env: Env, records: list[tuple[int, bytes]], topic: str | None = None) -> None:
    producer = Producer({"bootstrap.servers": env.bootstrap})
    for token, value in records:
        producer.produce(topic or env.ticks, value, str(token).encode())
    assert producer.flush(30) == 0


def _log(env: Env, name: str) -> str:
    return (env.logs / f"candles-{name}.log").read_text()


def _metric(port: int, sample: str) -> float:
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_confluent_framed_ticks_topic_without_a_registry_stops_the_start(env: Env) -> None:
    _produce(env, _confluent_framed(20))
    proc = env.start("solo")  # no SCHEMA_REGISTRY_URL
    assert proc.wait(60) == 2
    log = _log(env, "solo")
    named = [line for line in log.splitlines() if "SCHEMA_REGISTRY_URL" in line]
    assert len(named) == 1 and named[0].startswith("kite-connector: ticks topic"), log
    assert "Traceback" not in log


def test_a_blind_stream_is_reported_then_ends_the_process(env: Env) -> None:
    port = free_port()
    proc = _start_and_wait(
        env, "solo", CANDLES_BLIND_SECONDS="2", CANDLES_BLIND_EXIT_SECONDS="3", CANDLES_METRICS_PORT=str(port)
    )
    assert http_get(port, "/healthz") == (200, "ok")
    records = _confluent_framed(200)

    def send() -> None:  # 20 small batches: undecodable ticks keep coming for a few seconds
        for i in range(0, len(records), 10):
            _produce(env, records[i : i + 10])

    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: http_get(port, "/healthz")[0] == 503, 30, "/healthz to report blindness")
    code, reason = http_get(port, "/healthz")
    assert code == 503 and reason.startswith("blind: none of the last") and "SCHEMA_REGISTRY_URL" in reason
    assert _metric(port, "candles_undecodable_window") == 1
    sender.join(30)
    assert proc.wait(30) == 3
    log = _log(env, "solo")
    assert len([line for line in log.splitlines() if " CRITICAL " in line and "blind" in line]) == 1
    assert "Traceback" not in log


def test_a_restart_right_after_sigkill_retries_init_transactions(env: Env) -> None:
    """The killed instance leaves a transaction open; its successor's init_transactions meets it while the
    coordinator aborts it (CONCURRENT_TRANSACTIONS, retriable), retries, and goes on exactly once."""
    stream = _stream(4000, seed=4)
    sender = _send(env, stream, 8)
    port = free_port()
    # Long cycles: a kill lands in a transaction that has written bars, so the coordinator holds it open.
    slow = {"CANDLES_COMMIT_INTERVAL_MS": "3000", "CANDLES_TRANSACTION_TIMEOUT_MS": "10000"}
    proc = _start_and_wait(env, "solo", **slow)
    for _ in range(5):
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen = len(_log(env, "solo"))
        proc = _start_and_wait(env, "solo", CANDLES_METRICS_PORT=str(port), **slow)
        if "retrying: CONCURRENT_TRANSACTIONS" in _log(env, "solo")[seen:]:
            break
    else:
        pytest.fail("no restart met its predecessor's open transaction")
    try:
        assert _metric(port, 'candles_transaction_retries_total{call="init_transactions"}') >= 1
        sender.join(60)
        _wait_caught_up(env, len(stream))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    _check_exactly_once(env)


@pytest.fixture
def broker(kafka_container: tuple[str, str | None]) -> Iterator[str]:
    """The broker's container, to pause; unpaused whatever the test did."""
    _, container = kafka_container
    if container is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an outside broker: it cannot be paused")
    yield container
    subprocess.run(["docker", "unpause", container], capture_output=True)


# The transaction timeout outlives the pause (the broker does not abort the transaction meanwhile); each call
# gives up after half of it and is retried. Sessions outlive the pause too.
PAUSE, PAUSED_SETTINGS = (
    7.0,
    {"CANDLES_TRANSACTION_TIMEOUT_MS": "10000", "CANDLES_SESSION_TIMEOUT_MS": "30000"},
)


def _run_in_thread(
    env: Env, **extra: str
) -> tuple[CandleProcessor, Event, threading.Thread, list[BaseException]]:
    """The processor in this process (so that a test can replace its Producer class), in a thread."""
    processor = CandleProcessor(CandlesSettings.load(environ=env.settings("solo", **extra)))
    stop, failures = Event(), []

    def run() -> None:
        try:
            processor.run(stop)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return processor, stop, thread, failures


def test_a_broker_paused_in_the_middle_of_a_commit_is_retried(
    env: Env, broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pausing, paused = producer_pausing_broker(broker, "commit_transaction", 5, PAUSE)
    monkeypatch.setattr(_processor, "Producer", pausing)
    stream = _stream(6000, seed=6)
    sender = _send(env, stream, 10)
    processor, stop, thread, failures = _run_in_thread(env, **PAUSED_SETTINGS)
    try:
        sender.join(60)
        _wait_caught_up(env, len(stream))
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures
    assert paused.is_set()
    counts = processor.counts
    assert counts.retries["commit_transaction"] >= 1 and counts.aborts == 0, counts
    _check_exactly_once(env)


def test_an_abort_meeting_a_paused_broker_is_retried_and_endless_aborts_end_the_run(
    env: Env, broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead-letter topic that refuses anything over 2 KB makes every transaction holding the dead letter of
    one 5 KB undecodable tick abortable: the first abort meets a paused broker and is retried; the rewind
    reads the tick again, and the aborts repeat until CANDLES_TRANSACTION_RETRY_SECONDS ends the run."""
    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    admin.create_topics([NewTopic(env.dlq, 1, 1, config={"max.message.bytes": "2000"})])[env.dlq].result(30)
    pausing, paused = producer_pausing_broker(broker, "abort_transaction", 1, PAUSE)
    monkeypatch.setattr(_processor, "Producer", pausing)
    _produce(env, _stream(500, seed=8))
    _produce(env, [(1, b"junk" + os.urandom(5000))])  # incompressible: lz4 does not shrink it under 2 KB
    processor, stop, thread, failures = _run_in_thread(
        env, CANDLES_TRANSACTION_RETRY_SECONDS="12", **PAUSED_SETTINGS
    )
    thread.join(90)
    stop.set()
    assert not thread.is_alive()
    assert paused.is_set()
    assert len(failures) == 1 and isinstance(failures[0], ProcessorFailed), failures
    assert "transactions kept aborting" in str(failures[0])
    counts = processor.counts
    assert counts.retries["abort_transaction"] >= 1 and counts.aborts >= 2, counts


def test_a_fenced_processor_exits_3_in_one_line_and_its_successor_loses_nothing(env: Env) -> None:
    stream = _stream(4000, seed=10)
    _produce(env, stream[:2000])
    proc = _start_and_wait(env, "solo")
    rival = Producer({"bootstrap.servers": env.bootstrap, "transactional.id": f"{env.group}-solo"})
    rival.init_transactions(30)  # a newer instance with the same transactional id: the running one is fenced
    sender = _send(env, stream[2000:], 4)  # ticks to read: its next transaction meets the fence
    assert proc.wait(30) == 3
    log = _log(env, "solo")
    critical = [line for line in log.splitlines() if " CRITICAL " in line]
    assert len(critical) == 1 and "fatal Kafka error _FENCED" in critical[0], critical
    assert "Traceback" not in log
    proc = _start_and_wait(env, "solo")
    sender.join(60)
    _wait_caught_up(env, len(stream))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    _check_exactly_once(env)


def _one_minute_bars(env: Env) -> list[dict[str, Any]]:
    reader = AvroReader()
    return [reader.read(msg.value())[1] for msg in _read_all(env.bootstrap, [env.prefix + "1m"], idle=1.5)]


def _ms(value: Any) -> int:
    return round(float(value.timestamp()) * 1000)


def test_a_marker_after_its_bar_closed_writes_it_again_once_also_across_a_sigkill(env: Env) -> None:
    stream = _stream(3000, seed=5)
    _produce(env, stream)
    port = free_port()
    extra = {"CANDLES_INTERVALS": "1m", "CANDLES_METRICS_PORT": str(port)}
    proc = _start_and_wait(env, "solo", **extra)
    _wait_caught_up(env, len(stream))
    by_token: dict[int, list[dict[str, Any]]] = {}
    for bar in _one_minute_bars(env):
        by_token.setdefault(bar["instrument_token"], []).append(bar)
    (a, a_bars), (b, b_bars) = sorted(by_token.items())[:2]
    last = max(a_bars, key=lambda bar: bar["start"])  # the last closed bar of a: it is kept to be amended
    older = min(b_bars, key=lambda bar: bar["start"])  # an older bar of b: out of reach, counted
    encode = build_serializers().gap
    producer = Producer({"bootstrap.servers": env.bootstrap})
    for shard, token, bar in ((0, a, last), (1, b, older)):
        start = _ms(bar["start"]) + 1000
        gap = Gap(shard, [token], start, start + 2000, "cut")
        producer.produce(env.gaps, encode(gap, gap.end_ms), str(shard).encode(), timestamp=gap.end_ms)
    assert producer.flush(30) == 0
    wait_until(lambda: _metric(port, "candles_bars_amended_total") == 1, 30, "the bar written again")
    assert _metric(port, "candles_gap_markers_read_total") == 2
    assert _metric(port, "candles_gap_markers_late_total") == 1  # b's marker: a later bar had closed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = _start_and_wait(env, "solo", **extra)  # reads both markers again: applying one twice is a no-op
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    written = [
        bar for bar in _one_minute_bars(env) if bar["instrument_token"] == a and bar["start"] == last["start"]
    ]
    assert [(bar["revision"], bar["gap"]) for bar in written] == [(0, False), (1, True)]
    assert {k: v for k, v in written[1].items() if k not in ("revision", "gap")} == {
        k: v for k, v in last.items() if k not in ("revision", "gap")
    }
    assert not [bar for bar in _one_minute_bars(env) if bar["revision"] and bar["instrument_token"] != a]


def _open_all_day(path: Path) -> Path:
    """A calendar in which NSE trades all of today and tomorrow (IST), so that a silence is a gap."""
    today = datetime.now(UTC) + timedelta(milliseconds=IST_MS)
    days = [(today + timedelta(days=n)).date() for n in (0, 1)]
    path.write_text("".join(f"{day} NSE@00:00-23:59 test session\n" for day in days))
    return path


def test_a_silent_feed_flags_the_bars_its_gap_overlaps(env: Env, tmp_path: Path) -> None:
    """The deployed path: the simulator stalls every connection, the connector writes gap markers, and the
    candle processor flags exactly the bars of the listed instruments that they overlap."""
    instruments = bundled_instruments()
    tokens = [i.instrument_token for i in instruments if i.exchange == "NSE"][:6]
    proc = _start_and_wait(env, "solo", CANDLES_INTERVALS="5s", CANDLES_IDLE_SECONDS="1")
    config = SimulatorConfig(port=0, rate=5, stall_every=4.0, stall_seconds=4.0, seed=31)
    with running_simulator(config, instruments) as sim:
        values = connector_settings(
            env.bootstrap, sim.port, ",".join(f"{t}@full" for t in tokens), tmp_path,
            KAFKA_TOPIC_TICKS=env.ticks, KAFKA_TOPIC_GAPS=env.gaps, GAP_THRESHOLD_SECONDS="2",
            KITE_WATCHDOG_SECONDS="10", MARKET_CALENDAR_FILE=str(_open_all_day(tmp_path / "holidays.txt")),
        )  # fmt: skip
        with running_connector(values):
            time.sleep(10)  # one stall, 4-8 s after the connection, then ticks again
    reader = AvroReader()
    markers = [reader.read(msg.value())[1] for msg in _read_all(env.bootstrap, [env.gaps], idle=1.0)]
    assert markers and all(set(m["instrument_tokens"]) == set(tokens) for m in markers), markers
    ticks = len(_read_all(env.bootstrap, [env.ticks], idle=1.0))

    def bars() -> dict[tuple[int, int, int], dict[str, Any]]:
        out = {}
        for msg in _read_all(env.bootstrap, [env.prefix + "5s"], idle=1.0):
            bar = reader.read(msg.value())[1]
            key = (bar["instrument_token"], _ms(bar["start"]), bar["revision"])
            assert key not in out, f"{key} written twice"
            out[key] = bar
        return out

    def every_tick_in_a_bar() -> bool:
        late = len(_read_all(env.bootstrap, [env.late], idle=0.5))
        return bool(sum(b["ticks"] for b in bars().values() if not b["revision"]) + late == ticks)

    wait_until(every_tick_in_a_bar, 30, "every tick in a closed bar (or late)")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    final: dict[tuple[int, int], dict[str, Any]] = {}
    for (token, start, _), bar in sorted(bars().items()):
        final[(token, start)] = bar  # the highest revision wins
    spans = [(_ms(m["start"]), _ms(m["end"])) for m in markers]
    want = {key: any(s < key[1] + 5000 and key[1] < e for s, e in spans) for key in final}
    assert {key: bar["gap"] for key, bar in final.items()} == want
    assert 0 < sum(want.values()) < len(want)
    print(f"{len(markers)} markers, {sum(want.values())} of {len(want)} bars flagged")
