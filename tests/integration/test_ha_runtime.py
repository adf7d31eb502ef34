"""An HA set of two runtimes of two shards each, in one process, on the simulator and a real broker:
the second stays a standby (healthy, producing nothing) until the first stops, then takes over every
shard, and nothing its lines received is missing from Kafka or written twice unflagged."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from connector.ha import Role
from connector.kite import Mode
from connector.runtime import Runtime
from connector.simulator import SimulatorConfig, running_simulator, synthetic_instruments
from tests.chaos.rig import read_records
from tests.integration.helpers import connector_settings, wait_until

pytestmark = pytest.mark.integration

INSTRUMENTS = synthetic_instruments(60)
TOKENS = [i.instrument_token for i in INSTRUMENTS if i.segment != "INDICES"][:40]


def _runtime(bootstrap: str, port: int, tmp: Path, name: str, topics: dict[str, str]) -> Runtime:
    ticks = topics["KAFKA_TOPIC_TICKS"]
    ha = {"HA_GROUP": f"set-{ticks}", "HA_LEASE_TOPIC": f"lease-{ticks}", "HA_SESSION_TIMEOUT_MS": "1000"}
    settings = connector_settings(bootstrap, port, "0", tmp / name, **topics, **ha, HA_INSTANCE_ID=name)
    halves = [{t: Mode.QUOTE for t in TOKENS[:20]}, {t: Mode.QUOTE for t in TOKENS[20:]}]
    return Runtime(settings, halves, failure_limit=3)


def test_a_standby_takes_over_every_shard_when_the_active_stops(kafka_bootstrap: str, tmp_path: Path) -> None:
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(port=0, rate=20, order_rate=2, seed=21, sent_log=str(log))
    suffix = tmp_path.name[-12:].replace("_", "-").lower()
    topics = {
        "KAFKA_TOPIC_TICKS": f"ticks-ha-{suffix}",
        "KAFKA_TOPIC_ORDER_UPDATES": f"orders-ha-{suffix}",
        "KAFKA_TOPIC_DEAD_LETTERS": f"dlq-ha-{suffix}",
        "KAFKA_TOPIC_GAPS": f"gaps-ha-{suffix}",
    }
    with running_simulator(config, INSTRUMENTS) as sim:
        a = _runtime(kafka_bootstrap, sim.port, tmp_path, "a", topics)
        a.start()
        wait_until(lambda: a.ha_stats.active and all(c.stats.connected for c in a.connections), 60, "A")
        b = _runtime(kafka_bootstrap, sim.port, tmp_path, "b", topics)
        b.start()
        try:
            wait_until(lambda: all(len(s.buffer) > 100 for s in b._ha_sinks), 60, "B's buffers")
            assert b.metrics.healthy() == (True, "ok (standby)")
            assert len({id(s._dead_letter_ident) for s in b._ha_sinks}) == 1, "one dead-letter reader"
            assert a.metrics.healthy() == (True, "ok (active)")
            time.sleep(2)
            stopped = time.monotonic()
            assert a.stop() == 0
            wait_until(lambda: b.ha_stats.active, 30, "B to take over")
            took = time.monotonic() - stopped
            assert all(s.role is Role.ACTIVE for s in b._ha_sinks), "every shard of B produces"
            time.sleep(2)
            sim.paused = True
            wait_until(lambda: not any(len(s.buffer) for s in b._ha_sinks), 30, "B to commit")
        finally:
            b.stop()
        sim.flush_log()
    print(f"\nB took over {took:.2f} s after A began to stop")
    assert took < 5
    produced_by_a = sum(s.produced.total() for s in a.shard_stats)
    assert produced_by_a > 0 and sum(s.produced.total() for s in b.shard_stats) > 0

    sent: dict[tuple[str, int | str, int | str], set[int]] = {}
    for r in map(json.loads, log.read_text().splitlines()):
        if r["kind"] == "tick":
            sent.setdefault(("tick", r["instrument_token"], r["volume_traded"]), set()).add(r["conn"])
        elif r["kind"] == "order":
            sent.setdefault(("order", r["order_id"], r["status"]), set()).add(r["conn"])
    b_conns = {3, 4}  # A's two connections opened first
    records = [
        (("tick", v["instrument_token"], v["volume_traded"]), h)
        for v, h in read_records(kafka_bootstrap, topics["KAFKA_TOPIC_TICKS"])
    ] + [
        (("order", v["order_id"], v["status"]), h)
        for v, h in read_records(kafka_bootstrap, topics["KAFKA_TOPIC_ORDER_UPDATES"])
    ]
    held = Counter(k for k, _ in records)
    missing = [k for k, conns in sent.items() if conns & b_conns and k not in held]
    assert not missing, f"{len(missing)} records B received are not in Kafka, e.g. {missing[:5]}"
    unflagged = Counter(k for k, h in records if "kite.replayed" not in h)
    assert [k for k, n in unflagged.items() if n > 1] == [], "no record twice unflagged"
    assert set(held) <= set(sent)
    writers = Counter(h.get("kite.instance") for _, h in records)
    assert set(writers) == {b"a", b"b"}, writers
