"""Candle processor throughput: ticks/s one instance turns into bars, exactly-once on vs transactions off.

    python bench/candles.py [--ticks 1000000] [--instruments 1000] [--intervals 1m]

Kafka: started like the tests' fixture (testcontainers; KITE_KAFKA_IMAGE) or KAFKA_BOOTSTRAP_SERVERS, with
the connector's KAFKA_* settings (TLS, SASL, KAFKA_CONFIG_FILE) for every client.
The ticks topic (6 partitions) is filled first with full-mode ticks from the simulator's market, exchange
time advancing 1 ms per tick (1000 ticks a second, so one-minute bars close all along). Then
`kite-connector candles` runs as its own process from the first offset, once with exactly-once
(transactions, state topic, offsets in the transaction) and once with transactions off (same processor,
offsets committed after a flush), each with a new group. The rate is measured from the group's committed
offsets, from the first commit to the last tick, so start-up is not counted.
Last line: candles_ticks_per_s (exactly-once on).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import full_ticks  # noqa: E402
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from confluent_kafka.cimpl import NewTopic  # noqa: E402

from connector.serde import build_serializers  # noqa: E402
from tests.harness import client_properties, kafka_broker  # noqa: E402

PARTITIONS = 6


def fill(bootstrap: str, topic: str, count: int, instruments: int) -> None:
    encode = build_serializers().tick
    start = int(time.time() * 1000) - count  # recent: old timestamps fall to the topic's retention
    ticks = full_ticks(min(count, 50_000), instruments)  # cycled: a million Tick objects would not fit
    producer = Producer({**client_properties(bootstrap), "linger.ms": 20, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    for n in range(count):
        tick, t = ticks[n % len(ticks)], start + n
        value = encode(tick._replace(exchange_timestamp_ms=t), t)
        while True:
            try:
                producer.produce(topic, value, str(tick.instrument_token).encode(), timestamp=t)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    bootstrap: str, topic: str, count: int, intervals: str, exactly_once: bool
) -> tuple[float, float]:
    """(ticks/s, CPU seconds per million ticks) of one processor run over the whole topic."""
    s = uuid.uuid4().hex[:6]
    group = f"bench-candles-{s}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_TICKS": topic,
        "CANDLES_INTERVALS": intervals,
        "CANDLES_TOPIC_PREFIX": f"bench-candles-{s}.",
        "CANDLES_LATE_TOPIC": f"bench-late-{s}",
        "CANDLES_STATE_TOPIC": f"bench-state-{s}",
        "KAFKA_TOPIC_DEAD_LETTERS": f"bench-dlq-{s}",
        "CANDLES_GROUP": group,
        "CANDLES_INSTANCE_ID": "bench",
        "CANDLES_FROM_BEGINNING": "true",
        "CANDLES_EXACTLY_ONCE": str(exactly_once).lower(),
        "CANDLES_METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    probe = Consumer({**client_properties(bootstrap), "group.id": group})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    proc = subprocess.Popen([sys.executable, "-m", "connector.cli", "candles"], env=env)
    first: tuple[float, int, float] | None = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                done = sum(max(tp.offset, 0) for tp in probe.committed(tps, 30))
            except KafkaException:  # the group coordinator is still loading right after start
                time.sleep(0.25)
                continue
            now = time.monotonic()
            if first is None and done > 0:
                first = (now, done, _cpu_seconds(proc.pid))
            if done >= count and first is not None:
                if done == first[1]:  # all of it committed in the first cycle seen: nothing to time
                    raise SystemExit(f"{count} ticks were read in one commit cycle: give a larger --ticks")
                rate = (done - first[1]) / (now - first[0])
                cpu = (_cpu_seconds(proc.pid) - first[2]) / (done - first[1]) * 1e6
                return rate, cpu
            if proc.poll() is not None:
                raise SystemExit(f"the processor exited with {proc.returncode}")
            time.sleep(0.25)
        raise SystemExit("the processor did not finish within 600 s")
    finally:
        probe.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--intervals", default="1m")
    args = parser.parse_args()
    with kafka_broker() as (bootstrap, _):
        topic = f"bench-ticks-{uuid.uuid4().hex[:6]}"
        admin = AdminClient(client_properties(bootstrap))
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
        t0 = time.monotonic()
        fill(bootstrap, topic, args.ticks, args.instruments)
        print(f"filled {topic}: {args.ticks:,} full-mode ticks, {args.instruments} instruments, "
              f"{PARTITIONS} partitions, in {time.monotonic() - t0:.1f} s")  # fmt: skip
        eos = measure(bootstrap, topic, args.ticks, args.intervals, exactly_once=True)
        plain = measure(bootstrap, topic, args.ticks, args.intervals, exactly_once=False)
    print(f"intervals {args.intervals}, one instance, one process")
    print(f"exactly-once (transactions)   {eos[0]:10,.0f} ticks/s   {eos[1]:5.1f} CPU s per million ticks")
    print(
        f"transactions off              {plain[0]:10,.0f} ticks/s   {plain[1]:5.1f} CPU s per million ticks"
    )
    print(f"candles_ticks_per_s={eos[0]:.0f}")


if __name__ == "__main__":
    main()
