"""End to end: simulator → connector → Kafka, against a naive pipeline on the same stream, in one run.

    python bench/e2e.py [--ticks 2000000] [--instruments 1000] [--latency-rate 10000] [--latency-seconds 20]
                        [--rounds 3]

Kafka: started like the tests' fixture (testcontainers; KITE_KAFKA_IMAGE) or KAFKA_BOOTSTRAP_SERVERS, with
the connector's KAFKA_* settings (TLS, SASL, KAFKA_CONFIG_FILE) for every client.
The simulator replays pre-encoded full-mode messages (50 packets each) as fast as the socket takes them,
in its own process, so the source is not the limit. Connector and naive pipeline run as their own
processes; CPU and peak RSS are theirs. After each run the topic is consumed and its record count must
equal the ticks sent, or the run reports failure instead of a figure. The steady phase is followed by
the same records, producer settings and bursts from a bare producer loop: what Kafka and librdkafka take
on their own on this machine, so the connector's share of latency and CPU can be read off. The full-speed
run is likewise followed by that loop producing as fast as it goes (same records, settings, in-flight bound
and a delivery callback per record): the connector's throughput as a share of it is e2e_vs_floor.
The connector runs with one line and with two (KITE_LINES=2: two WebSockets carrying the same ticks,
arbitrated). Latency quantiles come from the steady state (the histogram from 3 s after the first delivery
to the end), for the connector and for Kafka alone alike, and both are read off the connector's
receive_to_ack_seconds buckets. A discarded full-speed run warms the broker up first. The machine's
speed drifts, so each phase runs ``--rounds`` times, its variants in a turning order; ratios are taken
within a round and the median round is reported. Last lines: p99 over the floor (ms) with one line and
with two, two_lines_vs_one (full-speed ticks/s), e2e_vs_floor, e2e_speedup_vs_naive.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.metrics import LATENCY_BUCKETS  # noqa: E402
from connector.simulator import Market, synthetic_instruments  # noqa: E402
from tests.harness import client_properties, earliest_consumer, free_port, kafka_broker  # noqa: E402

CLI = [sys.executable, "-m", "connector.cli"]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def _process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _simulator(port: int, ticks: int, instruments: int, max_rate: float = 0) -> list[str]:
    return [
        *CLI,
        "--log-level",
        "WARNING",
        "simulate",
        "--sim-port",
        str(port),
        "--sim-http-port",
        "-1",
        "--sim-replay-ticks",
        str(ticks),
        "--sim-synthetic-instruments",
        str(instruments),
        "--sim-max-rate",
        str(max_rate),
        "--sim-order-rate",
        "0",
        "--sim-instruments-file",
        str(_empty_csv()),
    ]


def _empty_csv() -> Path:
    path = Path("/tmp/kite-bench-no-instruments.csv")
    path.write_text(
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
        "lot_size,instrument_type,segment,exchange\n"
    )
    return path


def _tokens(instruments: int) -> list[int]:
    return [i.instrument_token for i in synthetic_instruments(instruments) if i.instrument_token & 0xFF != 9]


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _count_records(bootstrap: str, topic: str, expect: int) -> int:
    consumer = earliest_consumer(bootstrap, topic, "bench")
    count, idle = 0, 0
    while count < expect and idle < 20:
        batch = consumer.consume(10_000, 0.5)
        idle = 0 if batch else idle + 1
        count += sum(1 for m in batch if m.error() is None)
    consumer.close()
    return count


def _connector_env(
    bootstrap: str, sim_port: int, metrics_port: int, tokens: list[int], topic: str
) -> dict[str, str]:
    return {
        "KITE_API_KEY": "simulator",
        "KITE_ACCESS_TOKEN": "simulator-token",
        "KITE_WS_URL": f"ws://127.0.0.1:{sim_port}",
        "KITE_INSTRUMENTS": ",".join(f"{t}@full" for t in tokens),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_TICKS": topic,
        "KAFKA_TOPIC_ORDER_UPDATES": topic + "-orders",
        "KAFKA_TOPIC_DEAD_LETTERS": topic + "-dlq",
        "METRICS_PORT": str(metrics_port),
        "METRICS_HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "ORDER_LOG_DIR": "/tmp/kite-bench-order-log",
    }


def _delivered(metrics: dict[str, float], topic: str) -> float:
    return sum(
        v for k, v in metrics.items() if k.startswith("records_delivered_total{") and f'"{topic}"' in k
    )


def run_connector(
    bootstrap: str,
    ticks: int,
    instruments: int,
    max_rate: float = 0,
    poll: float = 0.05,
    lines: int = 1,
    warm_up: float = 3.0,
) -> dict[str, Any]:
    """``poll``: seconds between /metrics scrapes; each costs the connector CPU, so the steady phase
    scrapes once a second (as a Prometheus server would, if more often) and the full-speed phase often
    enough to time the run closely. The latency histogram is read from ``warm_up`` seconds after the
    first delivery to the end: the steady state, not the start."""
    sim_port, metrics_port = free_port(), free_port()
    topic = f"bench-ticks-{uuid.uuid4().hex[:8]}"
    env = _connector_env(bootstrap, sim_port, metrics_port, _tokens(instruments), topic)
    env["KITE_LINES"] = str(lines)
    with _process(_simulator(sim_port, ticks, instruments, max_rate), {}):
        _wait_port(sim_port)
        with _process([*CLI, "run"], env) as proc:
            _wait_port(metrics_port)
            samples: list[tuple[float, float, float]] = []  # (time, connector CPU seconds, delivered)
            warm: dict[str, float] | None = None
            delivered, deadline = 0.0, time.monotonic() + 60 + ticks / 2000
            while delivered < ticks and time.monotonic() < deadline:
                time.sleep(poll)
                scraped = _metrics(metrics_port)
                delivered = _delivered(scraped, topic)
                samples.append((time.monotonic(), _cpu_seconds(proc.pid), delivered))
                first = next((t for t, _, d in samples if d > 0), None)
                if warm is None and first is not None and samples[-1][0] - first >= warm_up:
                    warm = scraped
            metrics = _metrics(metrics_port)
            rss = _status_mb(proc.pid, "VmHWM")
    in_kafka = _count_records(bootstrap, topic, ticks)
    # Figures over the polls that saw the stream flowing: from the first delivery to the last poll
    # before the end, so neither start-up nor the idle tail after the last tick counts.
    flowing = [s for s in samples if 0 < s[2] < ticks] or [s for s in samples if s[2] > 0] or samples
    (t0, c0, d0), (t1, c1, d1) = flowing[0], flowing[-1]
    seconds, counted = max(t1 - t0, 1e-9), max(d1 - d0, 1.0)
    steady = {k: v - (warm or {}).get(k, 0.0) for k, v in metrics.items() if k.startswith("receive_to_ack")}
    return {
        "ticks": ticks,
        "in_kafka": in_kafka,
        "seconds": seconds,
        "rate": counted / seconds,
        "cpu_per_million": (c1 - c0) / counted * 1e6,
        "cpu_share": (c1 - c0) / seconds,
        "peak_rss_mb": rss,
        "metrics": metrics,
        "steady": steady,
    }


def _new_topic(bootstrap: str, prefix: str) -> str:
    """A fresh topic with the connector's default partition count (the connector creates its own)."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    # Kept referenced until the result is in; informational logs (events left unserved at exit) are off.
    admin = AdminClient({**client_properties(bootstrap), "log_level": 3})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    return topic


def run_naive(bootstrap: str, ticks: int, instruments: int) -> dict[str, Any]:
    sim_port = free_port()
    topic = _new_topic(bootstrap, "bench-naive")
    tokens = ",".join(map(str, _tokens(instruments)))
    with _process(_simulator(sim_port, ticks, instruments), {}):
        _wait_port(sim_port)
        args = [
            sys.executable,
            __file__,
            "--naive-worker",
            f"ws://127.0.0.1:{sim_port}",
            bootstrap,
            topic,
            str(ticks),
            tokens,
        ]
        with _process(args, {}) as proc:
            out, _ = proc.communicate(timeout=3600)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["in_kafka"] = _count_records(bootstrap, topic, ticks)
    return result


def naive_worker(url: str, bootstrap: str, topic: str, ticks: int, tokens: str) -> None:
    """What a user writes by hand: the official decoder, fastavro, produce with a delivery callback."""
    import fastavro
    import websocket
    from confluent_kafka import Producer
    from kiteconnect import KiteTicker

    schema = fastavro.parse_schema(json.loads((ROOT / "schemas" / "tick.avsc").read_text()))
    decoder = KiteTicker("simulator", "simulator-token")
    producer = Producer(
        {
            **client_properties(bootstrap),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    acked = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            acked[0] += 1

    ws = websocket.create_connection(f"{url}/?api_key=simulator&access_token=simulator-token")
    token_list = [int(t) for t in tokens.split(",")]
    ws.send(json.dumps({"a": "subscribe", "v": token_list}))
    ws.send(json.dumps({"a": "mode", "v": ["full", token_list]}))
    seen, started, cpu0 = 0, 0.0, time.process_time()
    while seen < ticks:
        opcode, data = ws.recv_data()
        if opcode != websocket.ABNF.OPCODE_BINARY or len(data) < 2:
            continue
        if not started:
            started = time.monotonic()
        received = time.time_ns() // 1_000_000
        for d in decoder._parse_binary(data):
            ohlc, depth = d.get("ohlc", {}), d.get("depth")
            ts = d.get("exchange_timestamp")
            ltt = d.get("last_trade_time")
            record = {
                "instrument_token": d["instrument_token"],
                "exchange": "NSE",
                "segment": d["instrument_token"] & 0xFF,
                "mode": d["mode"],
                "tradable": d["tradable"],
                "price_divisor": 100.0,
                "last_price": d["last_price"],
                "last_traded_quantity": d.get("last_traded_quantity"),
                "average_traded_price": d.get("average_traded_price"),
                "volume_traded": d.get("volume_traded"),
                "total_buy_quantity": d.get("total_buy_quantity"),
                "total_sell_quantity": d.get("total_sell_quantity"),
                "open": ohlc.get("open"),
                "high": ohlc.get("high"),
                "low": ohlc.get("low"),
                "close": ohlc.get("close"),
                "net_change": None,
                "change_percent": d.get("change"),
                "last_trade_time": int(ltt.timestamp() * 1000) if ltt else None,
                "oi": d.get("oi"),
                "oi_day_high": d.get("oi_day_high"),
                "oi_day_low": d.get("oi_day_low"),
                "exchange_timestamp": int(ts.timestamp() * 1000) if ts else None,
                "depth_buy": depth["buy"] if depth else None,
                "depth_sell": depth["sell"] if depth else None,
                "received_at": received,
            }
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, record)
            producer.produce(
                topic, buf.getvalue(), str(d["instrument_token"]).encode(), on_delivery=on_delivery
            )
            producer.poll(0)
            seen += 1
    producer.flush(120)
    seconds = time.monotonic() - started
    cpu = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "ticks": seen,
                "acked": acked[0],
                "seconds": seconds,
                "rate": acked[0] / seconds,
                "cpu_per_million": cpu / seen * 1e6,
                "peak_rss_mb": _status_mb(os.getpid(), "VmHWM"),
            }
        )
    )


def run_floor(bootstrap: str, rate: float, ticks: int, instruments: int) -> dict[str, Any]:
    """Kafka's share alone: the connector's own records and producer settings, produced by a bare loop
    with no WebSocket, no decoding and no encoding; in the steady phase's shape (``rate`` ticks/s in
    bursts of 50) or, with ``rate`` 0, as fast as it goes."""
    topic = _new_topic(bootstrap, "bench-floor")
    args = [sys.executable, __file__, "--floor-worker", bootstrap, topic, str(rate), str(ticks)]
    with _process([*args, str(instruments)], {}) as proc:
        out, _ = proc.communicate(timeout=600)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["in_kafka"] = _count_records(bootstrap, topic, result["ticks"])
    return result


def floor_worker(bootstrap: str, topic: str, rate: float, ticks: int, instruments: int) -> None:
    from confluent_kafka import Producer

    from connector.config import RunSettings
    from connector.kite import Mode, encode_message
    from connector.pipeline import Pipeline
    from connector.serde import build_serializers
    from connector.sink import SinkConfig
    from connector.stats import ConnectionStats, ShardStats

    class Capture:  # stands in for the sink: keeps the records the pipeline would produce
        def __init__(self) -> None:
            self.batches: list[list[tuple[bytes, bytes, int]]] = []

        def produce_ticks(self, records: list[tuple[bytes, bytes, int]], received: float) -> None:
            self.batches.append(records)

    market, tokens = Market(synthetic_instruments(instruments)), _tokens(instruments)
    serializers = build_serializers()
    capture = Capture()
    pipeline, line = Pipeline(serializers, capture, ShardStats()), ConnectionStats()  # type: ignore[arg-type]
    sample = [market.tick(t, Mode.FULL) for _ in range(4) for t in tokens]
    for i in range(0, len(sample), 50):
        pipeline.on_message(True, encode_message(sample[i : i + 50]), int(time.time() * 1000), 0.0, line)
    kafka = {k: v for k, v in os.environ.items() if k.startswith("KAFKA_")}  # TLS, SASL: as the connector
    settings = RunSettings.load(
        environ={
            **kafka,
            "KITE_API_KEY": "bench",
            "KITE_ACCESS_TOKEN": "bench",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        }
    )
    config = SinkConfig.of(settings, "bench-floor")
    producer = Producer(config.producer)
    headers, acked, settled = serializers.headers()["tick"], [0], [0]
    probes: list[float] = []

    def on_ack(err: Any, msg: Any) -> None:
        acked[0] += err is None
        settled[0] += 1

    def probe(sent: float) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            on_ack(err, msg)
            if sent - started >= warm_up:  # the steady state, as for the connector
                probes.append(time.perf_counter() - sent)

        return on_delivery

    producer.produce(topic, b"warm-up", b"0")
    producer.flush(30)
    bursts, interval = ticks // 50, 50 / rate if rate else 0.0
    low_water, warm_up = config.low_water, 3.0 if rate else 0.0
    acked[0] = settled[0] = 0  # the warm-up record does not count
    started, cpu0 = time.perf_counter(), time.process_time()
    for i in range(bursts):
        if rate:
            while (wait := started + i * interval - time.perf_counter()) > 0:
                producer.poll(wait)  # returns early to serve acknowledgements as they come
        else:  # as fast as it goes: serve the acknowledgements due, as the connector does between messages
            producer.poll(0)
            if i * 50 - settled[0] + 50 > config.max_in_flight:  # the connector's block policy
                while i * 50 - settled[0] > low_water:
                    producer.poll(0.05)
        callback: Any = probe(time.perf_counter())
        for key, value, timestamp_ms in capture.batches[i % len(capture.batches)]:
            producer.produce(topic, value, key, -1, callback, None, timestamp_ms, headers)
            callback = on_ack
    producer.flush(60)
    elapsed, probes = time.perf_counter() - started, sorted(probes)
    cpu = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "ticks": bursts * 50 + 1,  # and the warm-up record
                "acked": acked[0],
                "rate": acked[0] / elapsed,
                "cpu_per_million": cpu / max(acked[0], 1) * 1e6,
                "cpu_share": cpu / elapsed,
                "steady": _histogram(probes),
            }
        )
    )


def _histogram(seconds: list[float]) -> dict[str, float]:
    """Latencies as the connector's /metrics shows its own: the same buckets, cumulative, so that both
    sides' quantiles are read the same way (interpolated inside a bucket)."""
    out = {
        f'receive_to_ack_seconds_bucket{{le="{b}"}}': float(sum(s <= b for s in seconds))
        for b in LATENCY_BUCKETS
    }
    out["receive_to_ack_seconds_count"] = float(len(seconds))
    return out


def _quantile(metrics: dict[str, float], q: float) -> float:
    buckets = sorted(
        (float(name.split('le="')[1].rstrip('"}')), count)
        for name, count in metrics.items()
        if name.startswith("receive_to_ack_seconds_bucket") and "+Inf" not in name
    )
    total = metrics.get("receive_to_ack_seconds_count", 0.0)
    if not total:
        return float("nan")
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= q * total:  # linear inside the bucket
            share = (q * total - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + share * (bound - previous_bound)
        previous_bound, previous_count = bound, count
    return float("inf")


def _latency(run: dict[str, Any]) -> str:
    m, cpu = run["steady"], f"CPU {run['cpu_share'] * 100:.1f}% of one core"
    rss = f", peak RSS {run['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in run else ""
    return (
        f"p50 {_quantile(m, 0.5) * 1000:.2f} ms, p99 {_quantile(m, 0.99) * 1000:.2f} ms, "
        f"p999 {_quantile(m, 0.999) * 1000:.2f} ms; {cpu}{rss}"
    )


def _median_run(runs: list[dict[str, Any]], key: Any) -> dict[str, Any]:
    """The run in the middle by ``key`` (rounds are odd in number or the lower middle one)."""
    return sorted(runs, key=key)[(len(runs) - 1) // 2]


def _rate(run: dict[str, Any]) -> float:
    return float(run["rate"])


def _p99(run: dict[str, Any]) -> float:
    """Steady-state p99 in ms, off the buckets."""
    return _quantile(run["steady"], 0.99) * 1000


def _median(values: list[float]) -> float:
    return sorted(values)[(len(values) - 1) // 2]


def _rounds(rounds: int, runs: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each round runs every variant once, in an order that turns each round, so that a drift of the
    machine's speed (it moves by half from hour to hour) weighs on none of them more than the others."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out[name].append(runs[name]())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ticks", type=int, default=2_000_000)
    parser.add_argument("--naive-ticks", type=int, default=0, help="default: --ticks")
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--latency-rate", type=float, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="full-speed and steady runs, each (odd)")
    args = parser.parse_args()
    steady_ticks = int(args.latency_rate * args.latency_seconds)
    n, rate = args.instruments, args.latency_rate
    with kafka_broker() as (bootstrap, _):
        # Discarded: a fresh broker's JVM compiles its hot paths in the first minute, and took up to
        # three times its later CPU per record then, which would tilt the first round.
        run_connector(bootstrap, min(args.ticks, 1_000_000), n)
        full = _rounds(
            args.rounds,
            {
                "one": lambda: run_connector(bootstrap, args.ticks, n),
                "two": lambda: run_connector(bootstrap, args.ticks, n, lines=2),
            },
        )
        top = run_floor(bootstrap, 0, args.ticks, n)  # right after: the machine's same hour
        naive = run_naive(bootstrap, args.naive_ticks or args.ticks, n)
        steady = _rounds(
            args.rounds,
            {
                "one": lambda: run_connector(bootstrap, steady_ticks, n, rate, 1.0),
                "two": lambda: run_connector(bootstrap, steady_ticks, n, rate, 1.0, lines=2),
                "floor": lambda: run_floor(bootstrap, rate, steady_ticks, n),
            },
        )
    every = [*full["one"], *full["two"], top, naive, *steady["one"], *steady["two"], *steady["floor"]]
    failed = [r for r in every if r["in_kafka"] != r["ticks"]]
    for r in failed:
        print(f"FAILED: a run sent {r['ticks']} ticks but Kafka holds {r['in_kafka']}")
    if failed:
        return 1
    _report(args, full, top, naive, steady)
    return 0


def _report(
    args: argparse.Namespace,
    full: dict[str, list[dict[str, Any]]],
    top: dict[str, Any],
    naive: dict[str, Any],
    steady: dict[str, list[dict[str, Any]]],
) -> None:
    ratios = [two["rate"] / one["rate"] for one, two in zip(full["one"], full["two"], strict=True)]
    over = {
        lines: [_p99(run) - _p99(floor) for run, floor in zip(steady[lines], steady["floor"], strict=True)]
        for lines in ("one", "two")
    }
    print(f"instruments: {args.instruments}, full mode, 50 packets per message; 0 lost in every run")
    print(f"{args.rounds} rounds; each figure is the middle (median) round's, each ratio is within a round")
    ours = _median_run(full["one"], _rate)
    for name, run in (("connector", ours), ("two lines", _median_run(full["two"], _rate))):
        print(
            f"{name + ':':11}{run['rate']:10,.0f} ticks/s  {run['cpu_per_million']:6.1f} CPU s per 1M ticks  "
            f"peak RSS {run['peak_rss_mb']:.0f} MB  ({run['ticks']:,} ticks; {run['seconds']:.1f} s measured)"
        )
    print(
        f"Kafka alone: {top['rate']:8,.0f} ticks/s  {top['cpu_per_million']:6.1f} CPU s per 1M ticks  "
        "(a bare producer loop, same records, settings and callbacks, as fast as it goes)"
    )
    print(
        f"naive:     {naive['rate']:10,.0f} ticks/s  {naive['cpu_per_million']:6.1f} CPU s per 1M ticks  "
        f"peak RSS {naive['peak_rss_mb']:.0f} MB  ({naive['ticks']:,} ticks in {naive['seconds']:.1f} s)"
    )
    print(f"at {args.latency_rate:,.0f} ticks/s, receive->ack in the steady state (after its first 3 s):")
    print(f"  connector, one line:  {_latency(_median_run(steady['one'], _p99))}")
    print(f"  connector, two lines: {_latency(_median_run(steady['two'], _p99))}")
    print(
        "  Kafka alone (a bare producer loop, same records, settings and bursts): "
        f"{_latency(_median_run(steady['floor'], _p99))}"
    )
    print(
        "per round: "
        + "; ".join(
            f"{k} {' '.join(f'{v:.2f}' for v in vs)}"
            for k, vs in (
                ("two_lines_vs_one", ratios),
                ("p99 over floor (ms) one line", over["one"]),
                ("two lines", over["two"]),
            )
        )
    )
    print(f"p99_over_floor_ms_one_line={_median(over['one']):.2f}")
    print(f"p99_over_floor_ms_two_lines={_median(over['two']):.2f}")
    print(f"two_lines_vs_one={_median(ratios):.3f}")
    print(f"e2e_vs_floor={ours['rate'] / top['rate']:.3f}")
    print(f"e2e_speedup_vs_naive={ours['rate'] / naive['rate']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--naive-worker":
        url, bootstrap, topic, ticks, tokens = sys.argv[2:7]
        naive_worker(url, bootstrap, topic, int(ticks), tokens)
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--floor-worker":
        bootstrap, topic, rate, ticks, instruments = sys.argv[2:7]
        floor_worker(bootstrap, topic, float(rate), int(ticks), int(instruments))
        sys.exit(0)
    sys.exit(main())
