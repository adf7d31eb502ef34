"""Operating a live connector: every metric the dashboard and the alert rules query is exported by
`kite-connector run` or `kite-connector candles`, and `kite-connector status` reads a live connector."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.kite import EXCHANGES
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator
from tests.harness import free_port
from tests.integration.helpers import connector_env, wait_until
from tests.promql import PROMETHEUS_OWN, queried_names

pytestmark = pytest.mark.integration

# one bundled instrument of each exchange segment the simulator has
SEGMENTS = {EXCHANGES[i.instrument_token & 0xFF]: i.instrument_token for i in bundled_instruments()}
# what each metric type exports besides its own name
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


class Live(NamedTuple):
    connector: str  # metrics URL
    candles: str


def exported_names(text: str) -> set[str]:
    """Every series name a /metrics page declares, whether or not it has samples yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector.cli", command],
        env={**os.environ, **env, "LOG_FORMAT": "text"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The simulator, `kite-connector run` and `kite-connector candles`, each exporting its metrics."""
    tmp = tmp_path_factory.mktemp("operations")
    instruments = ",".join(f"{token}@full" for token in SEGMENTS.values())
    metrics, candles_metrics = free_port(), free_port()
    suffix = uuid.uuid4().hex[:8]
    config = SimulatorConfig(port=0, http_port=0, rate=5, order_rate=1)
    with running_simulator(config, bundled_instruments()) as sim:
        assert sim.http is not None  # the order book, so that reconciliation runs and reports
        env = connector_env(
            kafka_bootstrap,
            sim.port,
            instruments,
            tmp,
            METRICS_PORT=str(metrics),
            KITE_API_URL=f"http://127.0.0.1:{sim.http.port}",
        )
        connector = _start("run", env, tmp / "connector.log")
        candles = None
        try:
            url = f"http://127.0.0.1:{metrics}"
            wait_until(lambda: _get(url + "/healthz")[0] == 200, 60, "the connector to be healthy")
            candles = _start(
                "candles",
                {
                    "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                    "KAFKA_TOPIC_TICKS": env["KAFKA_TOPIC_TICKS"],
                    "KAFKA_TOPIC_DEAD_LETTERS": f"candles-dlq-{suffix}",
                    "KAFKA_TOPIC_PARTITIONS": "3",
                    "CANDLES_TOPIC_PREFIX": f"candles-{suffix}.",
                    "CANDLES_LATE_TOPIC": f"candles-late-{suffix}",
                    "CANDLES_STATE_TOPIC": f"candles-state-{suffix}",
                    "CANDLES_GROUP": f"candles-{suffix}",
                    "CANDLES_INSTANCE_ID": "ops",
                    "CANDLES_FROM_BEGINNING": "true",
                    "CANDLES_METRICS_PORT": str(candles_metrics),
                },
                tmp / "candles.log",
            )
            yield Live(url, f"http://127.0.0.1:{candles_metrics}")
        finally:
            for process in (candles, connector):
                if process is not None:
                    _stop(process)
            for log in sorted(tmp.glob("*.log")):
                print(f"--- {log.name} (tail)\n" + "\n".join(log.read_text().splitlines()[-15:]))


def test_every_metric_the_dashboard_and_the_rules_query_is_exported(live: Live) -> None:
    queried = {n: w for n, w in queried_names().items() if not PROMETHEUS_OWN.match(n)}
    exported: set[str] = set()

    def nothing_missing() -> bool:
        # some series appear with their first event (the first order-book fetch, the first bar)
        for url in live:
            exported.update(exported_names(_get(url + "/metrics")[1]))
        return queried.keys() <= exported

    with contextlib.suppress(AssertionError):  # reported below, name by name
        wait_until(nothing_missing, 30, "every queried name")
    missing = {name: where for name, where in sorted(queried.items()) if name not in exported}
    report = "\n".join(f"  {name}  ({'; '.join(sorted(set(where)))})" for name, where in missing.items())
    assert not missing, f"queried but exported by neither process:\n{report}"


def test_status_reads_a_live_connector(live: Live) -> None:
    command = [sys.executable, "-m", "connector.cli", "status", "--url", live.connector]
    run = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["healthy"] is True and report["health"] == "ok"
    (connection,) = report["connections"]
    assert connection["state"] == "up" and connection["ticks_per_second"] > 0
    assert connection["failures"] == {} and connection["last_message_seconds_ago"] < 5
    (shard,) = report["shards"]
    assert shard["delivered_per_second"] > 0
    assert report["order_log"]["pending"] is not None and report["threads_down"] == []
    # kite_last_tick_timestamp_seconds, the silent-feed alert's input: every exchange subscribed, fresh
    feeds = {f["exchange"]: f["last_tick_seconds_ago"] for f in report["feeds"]}
    assert feeds.keys() == set(SEGMENTS) and max(feeds.values()) < 5, feeds

    table = subprocess.run([*command, "--interval", "0"], capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"connector {live.connector}: healthy (ok)"
    assert lines[2].split()[:4] == ["connection", "line", "state", "ticks/s"] and lines[3].split()[2] == "up"
