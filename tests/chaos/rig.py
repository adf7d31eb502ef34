"""One chaos scenario's moving parts, each a real process: a simulator and the connector, plus the count.

The connector runs as ``python -m connector.cli run`` so SIGKILL and SIGTERM are real; its /metrics
are scraped for what it acknowledged. The count compares the simulator's sent log with what Kafka
holds (read back with the project's AvroReader), record by record:

- a tick is (instrument_token, volume_traded): the simulator's daily volume only grows per instrument,
  so the pair names one tick; an order update is (order_id, status);
- each connection the simulator served belongs to the connector run that was up when it opened, so
  ticks in Kafka are set against what that run said Kafka acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.serde import AvroReader
from tests.harness import free_port

CLI = [sys.executable, "-m", "connector.cli"]
INSTRUMENTS = 500  # times RATE ticks/s each: the 5,000 ticks/s every scenario streams
RATE = 10
ORDER_RATE = 5  # new orders per second, each followed by its final update


def connector_env(rig: Rig, metrics_port: int) -> dict[str, str]:
    """The connector's settings in every chaos scenario, in one place (new settings go here)."""
    return {
        "KITE_API_KEY": "simulator",
        "KITE_ACCESS_TOKEN": "simulator-token",
        "KITE_WS_URL": f"ws://127.0.0.1:{rig.ws_port}/",
        "KITE_INSTRUMENTS": ",".join(f"{t}@quote" for t in rig.tokens),
        "KAFKA_BOOTSTRAP_SERVERS": rig.bootstrap,
        "KAFKA_TOPIC_TICKS": rig.topics[0],
        "KAFKA_TOPIC_ORDER_UPDATES": rig.topics[1],
        "KAFKA_TOPIC_DEAD_LETTERS": rig.topics[2],
        "KAFKA_TOPIC_PARTITIONS": "3",
        "KAFKA_REPLICATION_FACTOR": str(rig.replication),
        "BACKPRESSURE_POLICY": rig.policy,
        "FLUSH_TIMEOUT_SECONDS": "10",
        "ORDER_LOG_DIR": str(rig.workdir / "order-log"),
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(metrics_port),
        "KITE_WATCHDOG_SECONDS": "5",
        "KITE_RECONNECT_MAX_DELAY": "1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **rig.connector_extra,
    }


def simulator_env(rig: Rig) -> dict[str, str]:
    return {
        "SIM_PORT": str(rig.ws_port),
        "SIM_HTTP_PORT": str(rig.http_port),
        "SIM_RATE": str(RATE),
        "SIM_ORDER_RATE": str(ORDER_RATE),
        "SIM_SEED": str(rig.seed),
        "SIM_SENT_LOG": str(rig.sent_path),
        "SIM_SYNTHETIC_INSTRUMENTS": str(INSTRUMENTS + 5),
        "LOG_LEVEL": "WARNING",
        **rig.simulator_extra,
    }


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → ``name`` (summed over labels) and ``name{label="value"}`` → value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        out[series] = float(value)
        name = series.partition("{")[0]
        if "{" in series:
            out[name] = out.get(name, 0.0) + float(value)
    return out


@dataclass
class Run:
    """One connector process, from start to its end (SIGKILL, SIGTERM or the scenario's clean stop)."""

    proc: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path
    started: float  # wall clock, to match the simulator's connection times
    ended: float = float("inf")
    how: str = ""
    last: dict[str, float] = field(default_factory=dict)  # the last metrics scraped
    final: dict[str, Any] | None = None  # the final counts a clean stop logs
    name: str = ""  # which instance of an HA set it is (empty otherwise)


@dataclass
class Tally:
    """One row of the chaos table, with the checks that make it pass or fail."""

    scenario: str
    sent: int = 0
    acknowledged: int = 0
    in_kafka: int = 0
    lost: int = 0  # sent ticks and order updates not in Kafka
    duplicated: int = 0
    recovery_s: float = float("nan")
    lost_allowed: int = 0  # conflated (counted) + unacknowledged at a SIGKILL/exit (counted)
    acked_missing: int = 0
    duplicated_ticks: int = 0
    missing_orders: int = 0  # order updates missing that nothing explains
    # Intermediate states a SIGKILL took from the socket buffer (or between read and log) whose order's
    # later state is in Kafka: lost as the README says (Kite's order book holds only the latest state).
    orders_lost_at_kill: int = 0
    foreign: int = 0  # in Kafka but never sent: the count itself would be wrong
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = []
        if self.acked_missing:
            found.append(f"{self.acked_missing} acknowledged ticks missing from Kafka")
        if self.duplicated_ticks:
            found.append(f"{self.duplicated_ticks} ticks duplicated in Kafka")
        if self.missing_orders:
            found.append(f"{self.missing_orders} order updates missing from Kafka")
        lost_ticks = self.lost_ticks
        if lost_ticks > self.lost_allowed:
            found.append(f"{lost_ticks} ticks lost, only {self.lost_allowed} counted as conflated/unacked")
        if self.foreign:
            found.append(f"{self.foreign} records in Kafka that were never sent")
        return found

    @property
    def lost_ticks(self) -> int:
        return self.lost - self.missing_orders - self.orders_lost_at_kill

    def row(self) -> str:
        return (
            f"| {self.scenario} | {self.sent:,} | {self.acknowledged:,} | {self.in_kafka:,} | {self.lost:,} "
            f"| {self.duplicated:,} | {self.recovery_s:.1f} | {'; '.join(self.problems()) or 'ok'} |"
        )


HEADER = (
    "| scenario | sent | acknowledged | in Kafka | lost | duplicated | recovery s | result |\n"
    "|---|---|---|---|---|---|---|---|"
)


class Rig:
    """A simulator and a connector for one scenario, with their own topics, order log and logs."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        workdir: Path,
        seed: int,
        policy: str = "block",
        replication: int = 1,
        simulator_extra: dict[str, str] | None = None,
        connector_extra: dict[str, str] | None = None,
        instruments: int = INSTRUMENTS,
    ) -> None:
        self.name, self.bootstrap, self.seed, self.policy = name, bootstrap, seed, policy
        self.replication = replication
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sent_path = self.workdir / "sent.jsonl"
        self.simulator_extra = simulator_extra or {}
        self.connector_extra = connector_extra or {}
        suffix = f"{name}-{os.urandom(3).hex()}"
        self.topics = (f"ticks-{suffix}", f"orders-{suffix}", f"dlq-{suffix}")
        self.ws_port, self.http_port = free_port(), free_port()
        from connector.simulator import synthetic_instruments

        tradable = [
            i.instrument_token for i in synthetic_instruments(INSTRUMENTS + 5) if i.segment != "INDICES"
        ]
        self.tokens = tradable[:instruments]
        self.sim: subprocess.Popen[bytes] | None = None
        self.runs: list[Run] = []
        self.recovery_s = float("nan")

    # -- processes -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.start_simulator()
        self.start_connector()

    def start_simulator(self) -> None:
        env = {**os.environ, **simulator_env(self)}
        with (self.workdir / "simulator.log").open("ab") as err:
            self.sim = subprocess.Popen([*CLI, "simulate"], env=env, stdout=err, stderr=err)
        _wait_port(self.ws_port, 30)

    def start_connector(self, extra: dict[str, str] | None = None, name: str = "") -> Run:
        port = free_port()
        env = {**os.environ, **connector_env(self, port), **(extra or {})}
        log_path = self.workdir / f"connector-{len(self.runs)}{'-' + name if name else ''}.log"
        with log_path.open("ab") as err:
            proc = subprocess.Popen([*CLI, "run"], env=env, stdout=err, stderr=err)
        run = Run(proc, port, log_path, time.time(), name=name)
        self.runs.append(run)
        return run

    @property
    def run(self) -> Run:
        return self.runs[-1]

    def metrics(self, run: Run | None = None) -> dict[str, float] | None:
        run = run or self.run
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{run.metrics_port}/metrics", timeout=3) as r:
                run.last = parse_metrics(r.read().decode())
            return run.last
        except OSError:
            return None

    def delivered(self) -> float:
        m = self.metrics()
        return m.get("records_delivered_total", 0.0) if m else 0.0

    def wait_streaming(self, records: int = 10_000, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.delivered() < records:
            if self.run.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name}: connector exited {self.run.proc.returncode}: {self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: not streaming after {timeout:.0f} s: {self.tail()}")
            time.sleep(0.5)

    def kill_connector(self) -> None:
        """SIGKILL right after a last scrape: what it said was acknowledged is known to the record."""
        run = self.run
        self.metrics(run)
        run.proc.send_signal(signal.SIGKILL)
        run.ended, run.how = time.time(), "sigkill"
        run.proc.wait(30)

    def term_connector(self, timeout: float = 60) -> int:
        self.signal_term()
        return self.reap(timeout)

    def signal_term(self) -> None:
        run = self.run
        self.metrics(run)
        run.proc.send_signal(signal.SIGTERM)
        run.ended, run.how = time.time(), "sigterm"

    def reap(self, timeout: float = 60) -> int:
        """Wait for the SIGTERMed run to exit; its final counts are then on record."""
        run = self.run
        code = run.proc.wait(timeout)
        run.final = _final_counts(run.log_path)
        if code:
            raise AssertionError(f"{self.name}: connector exited {code} after SIGTERM: {self.tail()}")
        return code

    def healthy(self, since_delivered: float) -> bool:
        """Connected, Kafka acknowledging again (past ``since_delivered``), little in flight or held."""
        if self.run.proc.poll() is not None:
            return False
        m = self.metrics()
        return bool(
            m
            and m.get("kite_connection_up", 0) >= 1
            and m.get("records_delivered_total", 0) > since_delivered
            and m.get("records_in_flight", 1e9) <= INSTRUMENTS * RATE
            and m.get("ticks_held", 0) == 0
        )

    # -- the simulator's test controls ---------------------------------------------------------------------
    def _control(self, method: str, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}/control/{path}"
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["data"]

    def open_lines(self) -> dict[int, int]:
        """The lines the simulator has open: connection number (slot) → connection id."""
        return {c["slot"]: c["conn"] for c in self._control("GET", "connections")}

    def drop_slot(self, slot: int) -> int:
        """Cut one line: TCP closed with no close frame, as a network fault does; returns the id of the
        connection cut (it stays listed as open until what was sent to it has left, up to 2 s)."""
        return int(self._control("POST", f"drop?slot={slot}")["conn"])

    def tail(self, lines: int = 15) -> str:
        text = self.run.log_path.read_text(errors="replace") if self.run.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- the end and the count -------------------------------------------------------------------------
    def stop_source(self) -> None:
        """SIGTERM the simulator: it closes its connections and its sent log is then complete."""
        assert self.sim is not None
        self.sim.send_signal(signal.SIGTERM)
        code = self.sim.wait(30)
        if code:
            raise AssertionError(f"{self.name}: simulator exited {code}")

    def drain(self, timeout: float = 120) -> None:
        """Let the connector deliver what it read, then stop it cleanly: once nothing is in flight or
        held, or (the simulator being gone) once it is disconnected, with no progress for 2 s. While
        disconnected it serves no delivery reports, so the rest is settled by its shutdown flush."""
        run = self.run
        deadline = time.monotonic() + timeout
        settled, last = 0, -1.0
        while run.proc.poll() is None and time.monotonic() < deadline:
            m = self.metrics(run) or {}
            total = m.get("records_delivered_total", -1.0)
            drained = m.get("records_in_flight", 1) == 0 and m.get("ticks_held", 1) == 0
            idle = drained or m.get("kite_connection_up", 1) == 0
            settled = settled + 1 if idle and total == last else 0
            last = total
            if settled >= 4:
                break
            time.sleep(0.5)
        if run.proc.poll() is None:
            self.term_connector()
        else:
            run.ended, run.how = time.time(), f"exited {run.proc.returncode}"

    def count(self) -> Tally:
        sent_ticks: dict[tuple[int, int], int] = {}  # (token, volume) → connection
        sent_orders = SentOrders()
        opened: dict[int, float] = {}
        with self.sent_path.open() as fh:
            for line in fh:
                r = json.loads(line)
                kind = r["kind"]
                if kind == "tick":
                    sent_ticks[(r["instrument_token"], r["volume_traded"])] = r["conn"]
                elif kind == "order":
                    sent_orders.add((r["order_id"], r["status"]), r["conn"])
                elif kind == "connect":
                    opened[r["conn"]] = r["at"]
        ticks = read_all(self.bootstrap, self.topics[0])
        orders = read_all(self.bootstrap, self.topics[1])
        tick_keys = Counter((v["instrument_token"], v["volume_traded"]) for v in ticks)
        order_keys = Counter((v["order_id"], v["status"]) for v in orders)
        t = Tally(self.name, recovery_s=self.recovery_s)
        t.sent = len(sent_ticks) + len(sent_orders.seq)
        t.in_kafka = len(ticks) + len(orders)
        t.duplicated_ticks = sum(n - 1 for n in tick_keys.values())
        t.duplicated = t.duplicated_ticks + sum(n - 1 for n in order_keys.values())
        t.foreign = len(set(tick_keys) - set(sent_ticks)) + len(set(order_keys) - sent_orders.seq.keys())

        def run_of(conn: int) -> int:
            at = opened.get(conn, 0.0)
            return max((i for i, r in enumerate(self.runs) if r.started <= at), default=0)

        missing = sorted(sent_orders.seq.keys() - order_keys.keys(), key=sent_orders.seq.__getitem__)
        at_kill = sent_orders.lost_at_kill(
            missing,
            set(order_keys),
            lambda conn: conn in opened and self.runs[run_of(conn)].how == "sigkill",
        )
        t.orders_lost_at_kill = len(at_kill)
        t.missing_orders = len(missing) - len(at_kill)
        t.lost = len(set(sent_ticks) - set(tick_keys)) + len(missing)
        if missing:
            t.notes.append(
                "order updates missing: "
                + ", ".join(
                    f"{oid} {status} (runs {sorted({run_of(c) for c in sent_orders.conns[oid, status]})}"
                    f"{', intermediate, lost at SIGKILL' if (oid, status) in at_kill else ''})"
                    for oid, status in missing
                )
            )

        in_kafka_by_run = Counter(run_of(sent_ticks[k]) for k in tick_keys if k in sent_ticks)
        sent_by_run = Counter(run_of(c) for c in sent_ticks.values())
        lost_by_run = Counter(run_of(c) for k, c in sent_ticks.items() if k not in tick_keys)
        for i, run in enumerate(self.runs):
            acked = _acked(run)
            t.acknowledged += int(acked["ticks"] + acked["orders"])
            t.acked_missing += max(0, int(acked["ticks"]) - in_kafka_by_run[i])
            if run.how == "sigkill":
                # What Kafka had not acknowledged at the kill may be lost: the whole loss of this run,
                # provided all it acknowledged is there (checked just above).
                t.lost_allowed += lost_by_run[i]
                t.notes.append(f"run {i}: {lost_by_run[i]} ticks unacknowledged at SIGKILL lost")
            else:
                t.lost_allowed += int(acked["conflated"] + acked["unacked_at_exit"])
                if run.final is not None:
                    # Sent to the run after it stopped reading (Kite does not replay those): counted, as
                    # the difference between what was sent on its connections and what it read.
                    unread = max(0, sent_by_run[i] - int(run.final.get("ticks", 0)))
                    t.lost_allowed += unread
                    if unread:
                        t.notes.append(f"run {i}: {unread} ticks sent after it stopped reading")
        return t


OrderKey = tuple[str, str]  # (order id, status)


@dataclass
class SentOrders:
    """The order updates of the simulator's sent log: the order of their first sending, and the
    connections that carried each, in the order they were sent on each."""

    seq: dict[OrderKey, int] = field(default_factory=dict)
    conns: dict[OrderKey, set[int]] = field(default_factory=dict)
    on: dict[int, list[OrderKey]] = field(default_factory=dict)

    def add(self, key: OrderKey, conn: int) -> None:
        self.seq.setdefault(key, len(self.seq))
        self.conns.setdefault(key, set()).add(conn)
        self.on.setdefault(conn, []).append(key)

    def lost_at_kill(
        self, missing: list[OrderKey], in_kafka: set[OrderKey], killed: Callable[[int], bool]
    ) -> list[OrderKey]:
        """The missing updates that are the one loss the README allows: every connection that carried one
        belongs to a SIGKILLed run and had not yet delivered anything it carried later (an update
        still in the socket's buffer, or read but not yet in the order log, at the kill); and a later state
        of the same order is in Kafka (reconciliation recovers an order's latest state only, so a final
        state is never allowed to be missing)."""
        unread: set[tuple[int, OrderKey]] = set()  # (connection, update) after its last delivered one
        for conn, keys in self.on.items():
            if killed(conn):
                last = max((i for i, k in enumerate(keys) if k in in_kafka), default=-1)
                unread.update((conn, k) for k in keys[last + 1 :])
        latest: dict[str, int] = {}
        for key in in_kafka & self.seq.keys():
            latest[key[0]] = max(latest.get(key[0], -1), self.seq[key])
        return [
            k
            for k in missing
            if all((c, k) in unread for c in self.conns[k]) and latest.get(k[0], -1) > self.seq[k]
        ]


def _acked(run: Run) -> dict[str, float]:
    """What a run said Kafka acknowledged: its final counts, else its last scrape (a lower bound)."""
    m = run.last
    ticks = sum(v for k, v in m.items() if k.startswith("records_delivered_total{") and '"ticks-' in k)
    orders = sum(v for k, v in m.items() if k.startswith("records_delivered_total{") and '"orders-' in k)
    out = {
        "ticks": ticks,
        "orders": orders,
        "conflated": m.get("ticks_conflated_total", 0.0),
        "unacked_at_exit": 0.0,
    }
    if run.final is not None:
        out["conflated"] = float(run.final.get("conflated", out["conflated"]))
        out["unacked_at_exit"] = float(run.final.get("in_flight", 0))
    return out


def _final_counts(path: Path) -> dict[str, Any] | None:
    final = None
    for line in path.read_text(errors="replace").splitlines():
        if '"final"' in line:
            with contextlib.suppress(ValueError):
                final = json.loads(line)["final"]
    return final


def read_all(bootstrap: str, topic: str, timeout: float = 180) -> list[dict[str, Any]]:
    """Every record of ``topic`` up to its current end, decoded with the project's AvroReader."""
    return [value for value, _ in read_records(bootstrap, topic, timeout)]


def read_records(
    bootstrap: str, topic: str, timeout: float = 180
) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """Every committed record of ``topic`` up to its current end: its decoded value and its headers."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-read-{os.urandom(4).hex()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,  # the end, past transaction markers and aborted records
            "log_level": 3,
        }
    )
    reader = AvroReader()
    out: list[tuple[dict[str, Any], dict[str, bytes]]] = []
    try:
        meta = consumer.list_topics(topic, timeout=30)
        pending = set(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not read to its end in {timeout:.0f} s ({pending})")
            for msg in consumer.consume(5000, 1.0):
                error = msg.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                if error is not None:
                    raise AssertionError(f"{topic}: {error}")
                headers = msg.headers()
                listed = headers if isinstance(headers, list) else []
                named = {k: v for k, v in listed if isinstance(v, bytes)}
                out.append((reader.read(msg.value() or b"")[1], named))
    finally:
        consumer.close()
    return out


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_recovered(rigs: list[Rig], since: dict[str, float], timeout: float = 120) -> None:
    """Sets each rig's recovery_s: seconds from now (the end of the fault) until it is healthy again."""
    started = time.monotonic()
    waiting = list(rigs)
    while waiting and time.monotonic() - started < timeout:
        for rig in list(waiting):
            if rig.healthy(since.get(rig.name, 0.0)):
                rig.recovery_s = time.monotonic() - started
                waiting.remove(rig)
        time.sleep(0.5)
