"""Chaos for a hot-standby set: two connector processes with one HA_GROUP, one simulator, one broker.

Each scenario starts the simulator, instance A (it takes the lease), then instance B (a standby on its own
Kite connection), streams, injects its fault on the active, brings the faulted instance back as a standby
(as a restart policy would), streams on, stops the simulator and counts, from its sent log and from the
topics read back committed, with their headers:

- every tick and order update sent on the standby's connection is in Kafka (the takeover lost nothing);
- no record is in Kafka twice, except extra copies carrying ``kite.replayed`` (counted apart);
- the takeover's seconds, from the fault to the standby's log line saying it produces;
- after SIGSTOP: nothing the stopped active received once stopped, or had not committed by then, is
  visible (its records are known by their ``kite.instance`` header), and it exits by itself on SIGCONT.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.brokers import Broker
from tests.chaos.rig import Rig, Run, read_records

__all__ = ["HA", "HA_HEADER", "HaTally", "ha_faults"]

HA_INSTRUMENTS = 200  # x RATE (10/s): 2,000 ticks/s, as two connectors and the simulator share two cores
SESSION_MS = 1000
STREAM = 5.0  # seconds streamed before and after each fault
PAUSE = 10.0
HA = (
    "HA: active SIGKILL",
    "HA: active SIGTERM (upgrade)",
    "HA: active SIGSTOP past the session timeout, then SIGCONT",
    "HA: active SIGKILL, broker paused 10 s during the takeover",
)
HA_HEADER = (
    "| scenario | sent | received by the standby | in Kafka | missing | duplicated (flagged) "
    "| takeover s | result |\n|---|---|---|---|---|---|---|---|"
)


@dataclass
class HaTally:
    scenario: str
    sent: int = 0  # distinct ticks and order updates the simulator sent, on any connection
    received: int = 0  # of those, sent on a connection of the instance that took over
    in_kafka: int = 0
    missing: int = 0  # received by the taker, not in Kafka
    duplicated: int = 0  # extra copies without the replayed header
    flagged: int = 0  # extra copies with it
    takeover_s: float = math.nan
    late_from_stopped: int = 0  # SIGSTOP: visible records the stopped active received once stopped
    foreign: int = 0  # in Kafka, never sent
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what the rig itself saw go wrong

    def problems(self) -> list[str]:
        found = list(self.failures)
        if self.missing:
            found.append(f"{self.missing} records the standby received are missing from Kafka")
        if self.duplicated:
            found.append(f"{self.duplicated} unflagged duplicates in Kafka")
        if self.late_from_stopped:
            found.append(f"{self.late_from_stopped} records of the stopped active visible after it stopped")
        if self.foreign:
            found.append(f"{self.foreign} records in Kafka that were never sent")
        if math.isnan(self.takeover_s):
            found.append("no takeover seen")
        return found

    def row(self) -> str:
        return (
            f"| {self.scenario} | {self.sent:,} | {self.received:,} | {self.in_kafka:,} | {self.missing:,} "
            f"| {self.duplicated:,} ({self.flagged:,}) | {self.takeover_s:.2f} "
            f"| {'; '.join(self.problems()) or 'ok'} |"
        )


class HaRig(Rig):
    """A simulator and an HA set of two connector processes, A and B, on topics of their own."""

    def __init__(self, name: str, bootstrap: str, workdir: Path, seed: int) -> None:
        super().__init__(name, bootstrap, workdir, seed, instruments=HA_INSTRUMENTS)
        self.connector_extra = {
            "HA_GROUP": f"chaos-{self.topics[0]}",
            "HA_LEASE_TOPIC": f"lease-{self.topics[0]}",
            "HA_SESSION_TIMEOUT_MS": str(SESSION_MS),
        }
        self.conns: dict[int, str] = {}  # simulator connection → the instance that opened it
        self.records: list[tuple[tuple[Any, ...], dict[str, Any], dict[str, bytes]]] = []  # as counted
        self._log_offset = 0

    def start(self) -> None:
        """The simulator and A (active once it holds the lease), then B (a standby with a full buffer)."""
        self.start_simulator()
        a = self.start_instance("a")
        self.wait_metric(a, "ha_active", lambda v: v == 1)
        self.wait_metric(a, "records_delivered_total", lambda v: v > 1000)
        b = self.start_instance("b")
        self.wait_metric(b, "ha_buffer_records", lambda v: v > 1000)

    def start_instance(self, name: str) -> Run:
        """Instance ``name`` (its own order log and metrics), once its Kite connection is open."""
        count = sum(r.name == name for r in self.runs)
        extra = {
            "HA_INSTANCE_ID": f"{name}-{count}",
            "ORDER_LOG_DIR": str(self.workdir / f"order-log-{name}"),
        }
        before = set(self._new_connections("?"))  # "?": a running instance reconnected
        run = self.start_connector(extra, name)
        deadline = time.monotonic() + 60
        while not set(self._new_connections(name)) - before:
            if run.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: instance {name} did not connect: {self.tail()}")
            time.sleep(0.2)
        return run

    def _new_connections(self, name: str) -> dict[int, str]:
        """Connections the simulator logged since the last look, given to instance ``name``."""
        with self.sent_path.open() as fh:
            fh.seek(self._log_offset)
            for line in fh:
                if '"connect"' in line:
                    self.conns[json.loads(line)["conn"]] = name
            self._log_offset = fh.tell()
        return self.conns

    def wait_metric(self, run: Run, name: str, ok: Callable[[float], bool], timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while True:
            value = (self.metrics(run) or {}).get(name)
            if value is not None and ok(value):
                return time.monotonic()
            if run.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {name} of instance {run.name} not as expected: {self.tail()}"
                )
            time.sleep(0.05)

    def active_at(self, run: Run, after: float, timeout: float = 60) -> float:
        """When ``run`` said it became active (its log's ``ha_active_at``), after the wall time ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in run.log_path.read_text(errors="replace").splitlines():
                if '"ha_active_at"' in line:
                    at = float(json.loads(line)["ha_active_at"])
                    if at > after:
                        return at
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: instance {run.name} did not become active: {self.tail()}")

    def finish(self, active: Run) -> None:
        """The simulator stops (its log complete); the active commits all it holds; standbys stop first."""
        self.stop_source()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = self.metrics(active) or {}
            if m.get("ha_buffer_records", 1) == 0 and m.get("records_in_flight", 1) == 0:
                break
            time.sleep(0.2)
        live = [r for r in self.runs if r.proc.poll() is None]
        for run in sorted(live, key=lambda r: r is active):
            self.metrics(run)
            run.proc.send_signal(signal.SIGTERM)
            code = run.proc.wait(60)
            run.ended, run.how = time.time(), f"exited {code}"
            if code:
                raise AssertionError(f"{self.name}: instance {run.name} exited {code} after SIGTERM")

    def count_ha(self, scenario: str, taker: str) -> HaTally:
        sent: dict[tuple[Any, ...], set[int]] = {}
        with self.sent_path.open() as fh:
            for line in fh:
                r = json.loads(line)
                if r["kind"] == "tick":
                    sent.setdefault(("tick", r["instrument_token"], r["volume_traded"]), set()).add(r["conn"])
                elif r["kind"] == "order":
                    sent.setdefault(("order", r["order_id"], r["status"]), set()).add(r["conn"])
        records = [
            (("tick", v["instrument_token"], v["volume_traded"]), v, h)
            for v, h in read_records(self.bootstrap, self.topics[0])
        ] + [
            (("order", v["order_id"], v["status"]), v, h)
            for v, h in read_records(self.bootstrap, self.topics[1])
        ]
        t = HaTally(scenario, sent=len(sent), in_kafka=len(records))
        taken = {conn for conn, owner in self.conns.items() if owner == taker}
        received = {k for k, conns in sent.items() if conns & taken}
        t.received = len(received)
        copies = Counter(k for k, _, _ in records)
        plain = Counter(k for k, _, h in records if "kite.replayed" not in h)
        t.missing = len(received - set(copies))
        t.foreign = len(set(copies) - set(sent))
        t.duplicated = sum(max(0, n - 1) for n in plain.values())
        t.flagged = sum(n - 1 for n in copies.values()) - t.duplicated
        t.notes.append(
            f"{sum('kite.replayed' in h for _, _, h in records)} records flagged replayed; "
            f"{len(set(sent) - set(copies))} sent but not in Kafka in all"
        )
        self.records = records
        return t


def _takeover(rig: HaRig, fault: Callable[[Run], None], scenario: str) -> HaTally:
    """A's fault, B's takeover, A back as a standby, and the count."""
    a, b = rig.runs[0], rig.runs[1]
    time.sleep(STREAM)
    rig.metrics(a)
    at = time.time()
    fault(a)
    took = rig.active_at(b, at) - at
    if a.proc.poll() is None:
        a.proc.kill()  # SIGSTOP's: fenced, it exited by itself; if not, it is told so below
    a.proc.wait(30)
    rig.start_instance("a")
    time.sleep(STREAM)
    rig.finish(b)
    tally = rig.count_ha(scenario, "b")
    tally.takeover_s = took
    return tally


def _sigkill(rig: HaRig) -> HaTally:
    def kill(a: Run) -> None:
        a.proc.send_signal(signal.SIGKILL)
        a.ended, a.how = time.time(), "sigkill"

    return _takeover(rig, kill, HA[0])


def _sigterm(rig: HaRig) -> HaTally:
    def term(a: Run) -> None:
        a.proc.send_signal(signal.SIGTERM)
        a.ended, a.how = time.time(), "sigterm"
        if a.proc.wait(30):
            raise AssertionError(f"{rig.name}: the active exited {a.proc.returncode} after SIGTERM")

    return _takeover(rig, term, HA[1])


def _sigstop(rig: HaRig) -> HaTally:
    stopped: list[float] = []
    resumed_exit: list[int | None] = []

    def stop(a: Run) -> None:
        stopped.append(time.time())
        a.proc.send_signal(signal.SIGSTOP)
        rig.active_at(rig.runs[1], stopped[0])
        time.sleep(SESSION_MS / 1000)  # longer than the session timeout, with a new active producing
        a.proc.send_signal(signal.SIGCONT)
        try:
            resumed_exit.append(a.proc.wait(30))
        except subprocess.TimeoutExpired:  # it kept running: the tally says so
            resumed_exit.append(None)

    tally = _takeover(rig, stop, HA[2])
    code = resumed_exit[0] if resumed_exit else None
    if not code:
        tally.failures.append(f"the resumed active did not exit non-zero by itself (exit {code})")
    tally.notes.append(f"the resumed old active exited {code}")
    cutoff = stopped[0] * 1000
    own = [_ms(v.get("received_at")) for _, v, h in rig.records if h.get("kite.instance") == b"a-0"]
    tally.late_from_stopped = sum(1 for at in own if at >= cutoff)
    tally.notes.append(
        f"of the stopped active's {len(own):,} visible records, {tally.late_from_stopped} were received "
        f"after it was stopped (the last {(cutoff - max(own, default=cutoff)) / 1000:.2f} s before)"
    )
    return tally


def _paused(rig: HaRig, broker: Broker) -> HaTally:
    def kill_and_pause(a: Run) -> None:
        a.proc.send_signal(signal.SIGKILL)
        a.ended, a.how = time.time(), "sigkill"
        broker.pause()
        try:
            time.sleep(PAUSE)
        finally:
            broker.unpause()

    return _takeover(rig, kill_and_pause, HA[3])


def _ms(value: object) -> float:
    """A timestamp-millis field as the Avro reader gives it (a datetime) → epoch milliseconds."""
    stamp = getattr(value, "timestamp", None)
    return float(stamp()) * 1000 if callable(stamp) else float("-inf")


def ha_faults(broker: Broker, workdir: Path) -> dict[str, HaTally]:
    """The four HA scenarios, one after another (each with its own simulator, set and topics)."""
    out: dict[str, HaTally] = {}
    plans: list[Callable[[HaRig], HaTally]] = [_sigkill, _sigterm, _sigstop, lambda rig: _paused(rig, broker)]
    for i, plan in enumerate(plans):
        rig = HaRig(f"ha-{i}", broker.address, workdir, seed=501 + i)
        try:
            rig.start()
            tally = plan(rig)
        finally:
            for proc in [rig.sim, *(r.proc for r in rig.runs)]:
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        out[tally.scenario] = tally
        if not tally.problems():
            rig.sent_path.unlink()
    return out
