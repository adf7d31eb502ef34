"""The chaos scenarios, grouped so that one fault window serves every rig that can share it soundly.

Each group returns one :class:`Tally` per scenario; the tests assert them and ``bench/chaos.py`` prints
them. Every wait is bounded. Rates: each rig streams 5,000 ticks/s and about 5 order updates/s.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.brokers import Broker, Cluster
from tests.chaos.rig import Rig, Tally, wait_recovered

PAUSE = 60.0  # the broker outage of the paused-broker group, seconds
CLUSTER_FAULT = 30.0  # a broker cut off, or two brokers down, this long

CONNECTOR = ("connector SIGKILL + restart", "20 WebSocket drops")
PAUSED = (
    "broker paused 60 s, block",
    "broker paused 60 s, conflate",
    "connector SIGKILL + restart while broker paused",
    "SIGTERM to connector while broker paused",
)
BROKER_KILL = ("broker SIGKILL + restart",)
LINES = ("two lines, 20 drops of each",)
CLUSTER = (
    "cluster: leader SIGKILL + restart x3",
    "cluster: every broker bounced in turn",
    "cluster: one broker cut off 30 s",
    "cluster: two brokers down 30 s (below min ISR)",
)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]


def _finish(names: tuple[str, ...], rigs: list[Rig]) -> dict[str, Tally]:
    """Every source stops at once (none streams on while another rig is counted), then each connector
    drains and stops, then each rig is counted."""
    for rig in rigs:
        rig.stop_source()
    for rig in rigs:
        rig.drain()
    out = {}
    for name, rig in zip(names, rigs, strict=True):
        t0 = time.monotonic()
        tally = rig.count()
        tally.scenario = name
        out[name] = tally
        if not tally.problems():  # a failing scenario keeps its sent log (about 100 MB) for a look
            rig.sent_path.unlink()
        print(f"[{name}: counted in {time.monotonic() - t0:.0f} s]", file=sys.stderr)
    return out


def _stop_all(rigs: list[Rig]) -> None:
    """On an error midway: no process outlives the group."""
    for rig in rigs:
        for proc in [rig.sim, *(r.proc for r in rig.runs)]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def connector_faults(broker: Broker, workdir: Path) -> dict[str, Tally]:
    """Healthy broker. One connector is SIGKILLed and restarted; another's WebSocket is dropped 20 times."""
    killed = Rig(_slug(CONNECTOR[0]), broker.address, workdir, seed=101)
    dropped = Rig(_slug(CONNECTOR[1]), broker.address, workdir, seed=102,
                  simulator_extra={"SIM_DROP_EVERY": "1"})  # fmt: skip
    rigs = [killed, dropped]
    try:
        for rig in rigs:
            rig.start()
        for rig in rigs:
            rig.wait_streaming()
        killed.kill_connector()
        time.sleep(2)
        killed.start_connector()
        wait_recovered([killed], {})
        deadline = time.monotonic() + 120
        while (dropped.metrics() or {}).get("reconnects_total", 0) < 20:
            if time.monotonic() > deadline:
                raise AssertionError("20 WebSocket drops did not happen within 120 s")
            time.sleep(0.5)
        wait_recovered([dropped], {dropped.name: dropped.delivered()}, timeout=30)
        return _finish(CONNECTOR, rigs)
    finally:
        _stop_all(rigs)


def two_lines(broker: Broker, workdir: Path, drops: int = 20) -> dict[str, Tally]:
    """KITE_LINES=2 with delivery jitter: line A and line B are each cut ``drops`` times at random
    moments, one at a time. Every tick either line carried must be in Kafka, once."""
    rig = Rig(_slug(LINES[0]), broker.address, workdir, seed=401,
              simulator_extra={"SIM_JITTER_MS": "20"}, connector_extra={"KITE_LINES": "2"})  # fmt: skip
    rng = random.Random(401)
    try:
        rig.start()
        rig.wait_streaming()
        left = {1: drops, 2: drops}  # the simulator numbers connections from 1
        cut: set[int] = set()  # a cut connection is listed as open until its socket is closed
        deadline = time.monotonic() + 240
        while any(left.values()):
            # both lines up, neither of them one just cut: never cut the last one standing
            while (lines := rig.open_lines()).keys() != {1, 2} or cut & set(lines.values()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"two lines did not come back within 240 s ({left} drops left)")
                time.sleep(0.05)
            time.sleep(rng.uniform(0.2, 1.0))
            slot = rng.choice([s for s, n in left.items() if n])
            cut.add(rig.drop_slot(slot))
            left[slot] -= 1
        wait_recovered([rig], {rig.name: rig.delivered()}, timeout=30)
        per_line = _per_line(rig.metrics() or {})
        out = _finish(LINES, [rig])
        out[LINES[0]].notes.append(per_line)
        return out
    finally:
        _stop_all([rig])


def _per_line(m: dict[str, float]) -> str:
    """Ticks each line decoded and delivered first, from the connector's metrics."""

    def line(name: str, n: int) -> int:
        return int(sum(v for k, v in m.items() if k.startswith(f"{name}{{") and f'line="{n}"' in k))

    return ", ".join(
        f"line {'AB'[n]}: received {line('kite_ticks_received_total', n):,}, "
        f"first {line('kite_ticks_won_total', n):,}"
        for n in (0, 1)
    )


def broker_paused(broker: Broker, workdir: Path) -> dict[str, Tally]:
    """One 60 s broker pause serves four connectors: block, conflate, SIGKILLed while paused (restarted
    while still paused) and SIGTERMed while paused (restarted while still paused)."""
    block, conflate, killed, termed = rigs = [
        Rig(_slug(PAUSED[0]), broker.address, workdir, seed=201, policy="block"),
        Rig(_slug(PAUSED[1]), broker.address, workdir, seed=202, policy="conflate"),
        Rig(_slug(PAUSED[2]), broker.address, workdir, seed=203),
        Rig(_slug(PAUSED[3]), broker.address, workdir, seed=204),
    ]
    try:
        for rig in rigs:
            rig.start()
        for rig in rigs:
            rig.wait_streaming()
        broker.pause()
        paused_at = time.monotonic()
        try:
            _sleep_until(paused_at + 15)
            killed.kill_connector()
            termed.signal_term()
            termed.reap(timeout=40)  # it flushes for FLUSH_TIMEOUT_SECONDS (10 s), then exits
            _sleep_until(paused_at + 30)
            killed.start_connector()  # both wait for the broker at start-up
            termed.start_connector()
            _sleep_until(paused_at + PAUSE)
        finally:
            broker.unpause()
        since = {block.name: block.delivered(), conflate.name: conflate.delivered()}
        wait_recovered(rigs, since)
        time.sleep(2)
        return _finish(PAUSED, rigs)
    finally:
        _stop_all(rigs)


def broker_killed(broker: Broker, workdir: Path) -> dict[str, Tally]:
    rig = Rig(_slug(BROKER_KILL[0]), broker.address, workdir, seed=301)
    try:
        rig.start()
        rig.wait_streaming()
        before = rig.delivered()
        broker.kill()
        time.sleep(2)
        broker.start()
        wait_recovered([rig], {rig.name: before}, timeout=120)
        time.sleep(2)
        return _finish(BROKER_KILL, [rig])
    finally:
        _stop_all([rig])


def cluster_faults(cluster: Cluster, workdir: Path) -> dict[str, Tally]:
    """3 brokers, RF 3, min ISR 2: each fault with its own connector and topics, one after another."""
    out: dict[str, Tally] = {}
    faults: list[Callable[[Rig], None]] = [
        lambda rig: _leader_kills(cluster, rig),
        lambda rig: _rolling_bounce(cluster, rig),
        lambda rig: _cut_off(cluster, rig),
        lambda rig: _two_down(cluster, rig),
    ]
    for i, (name, fault) in enumerate(zip(CLUSTER, faults, strict=True)):
        rig = Rig(_slug(name), cluster.bootstrap, workdir, seed=401 + i, replication=3)
        try:
            rig.start()
            rig.wait_streaming()
            fault(rig)
            time.sleep(2)
            out.update(_finish((name,), [rig]))
            cluster.wait_fully_replicated(list(rig.topics))
        finally:
            _stop_all([rig])
    return out


def _recover_after(rig: Rig, fault: Callable[[], None], timeout: float = 120) -> float:
    before = rig.delivered()
    fault()
    wait_recovered([rig], {rig.name: before}, timeout)
    return rig.recovery_s


def _leader_kills(cluster: Cluster, rig: Rig) -> None:
    worst = 0.0
    for _ in range(3):
        leader = cluster.leader(rig.topics[0])
        leader.kill()
        time.sleep(3)
        worst = max(worst, _recover_after(rig, leader.start))
        cluster.wait_fully_replicated(list(rig.topics))
    rig.recovery_s = worst


def _rolling_bounce(cluster: Cluster, rig: Rig) -> None:
    worst = 0.0
    for broker in cluster.brokers:
        broker.stop()
        worst = max(worst, _recover_after(rig, broker.start))
        cluster.wait_fully_replicated(list(rig.topics))
    rig.recovery_s = worst


def _cut_off(cluster: Cluster, rig: Rig) -> None:
    broker = cluster.leader(rig.topics[0])
    cluster.disconnect(broker)
    try:
        time.sleep(CLUSTER_FAULT)
    finally:
        _recover_after(rig, lambda: cluster.connect(broker))
    cluster.wait_fully_replicated(list(rig.topics))


def _two_down(cluster: Cluster, rig: Rig) -> None:
    down = cluster.brokers[1:]
    for broker in down:
        broker.kill()
    try:
        time.sleep(CLUSTER_FAULT)
    finally:

        def restart() -> None:
            for broker in down:
                broker.start()

        _recover_after(rig, restart, timeout=180)
    cluster.wait_fully_replicated(list(rig.topics), timeout=120)


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))
