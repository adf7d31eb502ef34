"""The embedding API (KiteTicker-style) and the daily login, against the simulator and a real Kafka."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from connector.errors import AuthError
from connector.kite import Tick
from connector.login import exchange_request_token
from connector.orders import OrderLog
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator, synthetic_instruments
from connector.sink import Topics, _producer
from connector.ticker import KafkaOutput, KiteTicker
from tests.conftest import plain_times
from tests.integration.faults import producer_failing_at
from tests.integration.helpers import connector_settings, read_topic, running_connector, sent_log, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTS = bundled_instruments() + synthetic_instruments(50)
TOKENS = [i.instrument_token for i in INSTRUMENTS if i.instrument_token & 0xFF != 9][:20]


def _run_example(script: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs ``examples/<script>`` as a user would; it must exit 0."""
    command = [sys.executable, str(ROOT / "examples" / script)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def _ticker(port: int, **kwargs: Any) -> KiteTicker:
    return KiteTicker(
        "simulator",
        "simulator-token",
        root=f"ws://127.0.0.1:{port}",
        watchdog=3,
        reconnect_max_delay=1,
        **kwargs,
    )


def test_ported_example_script_runs_callbacks_on_a_background_thread() -> None:
    tokens = TOKENS[:5]
    with running_simulator(SimulatorConfig(port=0, rate=5, order_rate=3), INSTRUMENTS) as sim:
        env = {
            **os.environ,
            "KITE_API_KEY": "simulator",
            "KITE_ACCESS_TOKEN": "simulator-token",
            "KITE_WS_URL": f"ws://127.0.0.1:{sim.port}",
            "EXAMPLE_TOKENS": ",".join(map(str, tokens)),
            "EXAMPLE_SECONDS": "6",
        }
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        run = _run_example("kiteticker_port.py", env, 60)
    events = [json.loads(line) for line in run.stdout.splitlines()]
    ticks = [e for e in events if e["event"] == "tick"]
    orders = [e for e in events if e["event"] == "order"]
    mains = [e for e in events if e["event"] == "main"]
    assert {e["token"] for e in ticks} == set(tokens)
    assert {e["mode"] for e in ticks[-20:]} == {"full"}
    assert orders, "order updates reach on_order_update"
    assert {e["thread"] for e in ticks + orders} == {"kite-ticker"}
    assert {e["thread"] for e in mains} == {"MainThread"}
    assert len(mains) >= 6, (
        f"main thread printed {len(mains)} times in 6 s; 12 expected, sleeps overrun when busy"
    )
    first_tick = events.index(ticks[0])
    assert any(e["event"] == "main" for e in events[first_tick:]), "main thread keeps running alongside"
    assert events[-1] == {"event": "done", "thread": "MainThread", "callback_errors": 0}


def test_close_then_connect_again_and_subscriptions_survive_drops() -> None:
    config = SimulatorConfig(port=0, rate=10, drop_every=2.0)
    with running_simulator(config, INSTRUMENTS) as sim:
        ticker = _ticker(sim.port)
        seen: list[tuple[float, int]] = []
        connects: list[float] = []
        ticker.on_ticks = lambda ws, ticks: seen.extend((time.monotonic(), t.instrument_token) for t in ticks)
        ticker.on_connect = lambda ws, response: connects.append(time.monotonic())
        ticker.subscribe(TOKENS)
        ticker.set_mode(ticker.MODE_LTP, TOKENS[:3])
        ticker.connect(threaded=True)
        wait_until(lambda: len(connects) >= 3, 30, "two reconnects after drops")
        after = connects[-1]
        wait_until(
            lambda: {t for ts, t in seen if ts > after} == set(TOKENS), 10, "every token after a reconnect"
        )
        ticker.close()
        count = len(seen)
        time.sleep(0.5)
        assert len(seen) == count, "no ticks after close()"
        ticker.connect(threaded=True)  # the official client cannot do this (ReactorNotRestartable)
        wait_until(lambda: len(seen) > count + len(TOKENS), 10, "ticks after connecting again")
        ticker.close()


def test_dict_shape_matches_the_official_client_on_the_same_frames() -> None:
    kiteconnect = pytest.importorskip("kiteconnect")
    official = kiteconnect.KiteTicker("k", "t")
    pairs: list[tuple[list[dict[str, Any]], bytes]] = []
    raw: list[bytes] = []
    with running_simulator(SimulatorConfig(port=0, rate=10), INSTRUMENTS + synthetic_instruments(0)) as sim:
        ticker = _ticker(sim.port, as_dicts=True)
        ticker.on_message = lambda ws, payload, is_binary: raw.append(payload) if is_binary else None
        ticker.on_ticks = lambda ws, ticks: pairs.append((ticks, raw[-1]))
        modes = {
            ticker.MODE_LTP: TOKENS[:5],
            ticker.MODE_QUOTE: TOKENS[5:10],
            ticker.MODE_FULL: [*TOKENS[10:], 256265],
        }
        ticker.on_connect = lambda ws, r: [ws.set_mode(m, t) for m, t in modes.items()]
        ticker.connect(threaded=True)
        wait_until(lambda: len(pairs) > 20, 20, "ticks")
        ticker.close()
    for ours, frame in pairs:
        theirs = official._parse_binary(frame)
        assert plain_times(ours) == plain_times(theirs)
        for d in ours:
            for key in ("exchange_timestamp", "last_trade_time"):
                if d.get(key) is not None:
                    assert d[key].utcoffset() is not None, "the documented difference: aware UTC datetimes"
    assert {d["mode"] for ours, _ in pairs for d in ours} == {"ltp", "quote", "full"}


def test_kafka_output_has_every_tick_the_callbacks_saw(kafka_bootstrap: str) -> None:
    suffix = str(time.time_ns())
    topics = Topics(f"emb-ticks-{suffix}", f"emb-orders-{suffix}", f"emb-dlq-{suffix}")
    seen: list[Tick] = []
    with running_simulator(SimulatorConfig(port=0, rate=10, order_rate=2), INSTRUMENTS) as sim:
        ticker = _ticker(sim.port, kafka=KafkaOutput(kafka_bootstrap, topics, partitions=3))
        ticker.on_ticks = lambda ws, ticks: seen.extend(ticks)
        ticker.on_connect = lambda ws, r: ws.set_mode(ws.MODE_FULL, TOKENS)
        ticker.connect(threaded=True)
        wait_until(lambda: len(seen) > 500, 30, "ticks")
        ticker.close()
    records = read_topic(kafka_bootstrap, topics.ticks, expect=len(seen))
    assert len(records) == len(seen)
    assert sorted(
        (r.value["instrument_token"], r.value["volume_traded"]) for r in records if r.value["mode"] == "full"
    ) == sorted((t.instrument_token, t.volume_traded) for t in seen if t.mode == "full")
    assert read_topic(kafka_bootstrap, topics.order_updates, idle=2)


def test_a_raising_callback_is_counted_and_the_stream_goes_on() -> None:
    calls = []

    def broken(ws: KiteTicker, ticks: list[Tick]) -> None:
        calls.append(len(ticks))
        raise ValueError("strategy bug")

    with running_simulator(SimulatorConfig(port=0, rate=10), INSTRUMENTS) as sim:
        ticker = _ticker(sim.port)
        ticker.on_ticks = broken
        ticker.subscribe(TOKENS)
        ticker.connect(threaded=True)
        wait_until(lambda: ticker.callback_errors >= 20, 20, "many callback errors")
        assert ticker.is_connected()
        ticker.close()
    assert ticker.callback_errors == len(calls)
    assert ticker.stats.ticks.total() >= sum(calls)
    samples = ticker.metrics.registry.get_sample_value("callback_seconds_count", {"callback": "on_ticks"})
    assert samples is not None and samples >= 20


def test_login_writes_the_token_file_and_a_running_connector_switches(
    kafka_bootstrap: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "secrets" / "kite_token"
    secret = "s3cret-api-secret"
    config = SimulatorConfig(port=0, http_port=0, rate=5, api_secret=secret)
    with running_simulator(config, INSTRUMENTS) as sim:
        assert sim.http is not None
        api = f"http://127.0.0.1:{sim.http.port}"
        token_file.parent.mkdir()
        token_file.write_text("expired-token\n")
        values = connector_settings(
            kafka_bootstrap,
            sim.port,
            ",".join(map(str, TOKENS[:3])),
            tmp_path,
            KITE_ACCESS_TOKEN="",
            KITE_ACCESS_TOKEN_FILE=str(token_file),
        )
        with running_connector(values) as connector:
            time.sleep(3)
            assert connector.stats[0].ticks.total() == 0, "the expired token is refused"
            with pytest.raises(AuthError, match="check KITE_API_SECRET"):
                exchange_request_token(api, "simulator", "req-1", "wrong-secret")
            assert token_file.read_text() == "expired-token\n", "nothing written on failure"
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "connector.cli",
                    "login",
                    "--kite-api-url",
                    api,
                    "--kite-access-token-file",
                    str(token_file),
                    "--kite-request-token",
                    "req-2",
                ],
                env={**os.environ, "KITE_API_KEY": "simulator", "KITE_API_SECRET": secret},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert run.returncode == 0, run.stderr
            new_token = token_file.read_text().strip()
            assert new_token in sim.valid_tokens and new_token.startswith("sim-")
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert "kite.zerodha.com/connect/login?v=3&api_key=simulator" in run.stdout
            for leaked in (secret, new_token, "req-2"):
                assert leaked not in run.stdout + run.stderr
            wait_until(lambda: connector.stats[0].ticks.total() > 0, 15, "the connector to switch tokens")
    out, err = capfd.readouterr()
    for leaked in (secret, new_token):
        assert leaked not in out + err


def test_strategy_example_reads_the_ticks_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    with running_simulator(SimulatorConfig(port=0, rate=20), INSTRUMENTS) as sim:
        values = connector_settings(kafka_bootstrap, sim.port, ",".join(map(str, TOKENS[:4])), tmp_path)
        with running_connector(values) as connector:
            wait_until(lambda: connector.shard_stats[0].delivered.total() >= 400, 30, "ticks in Kafka")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_TICKS": values.kafka_topic_ticks,
        "EXAMPLE_MAX_RECORDS": "400",
        "EXAMPLE_GROUP": f"g-{time.time_ns()}",
    }
    run = _run_example("strategy_consumer.py", env, 120)
    summary = json.loads(run.stdout.splitlines()[-1])
    assert summary == {"ticks_read": 400, "instruments": 4}


def test_kiteticker_has_the_runtime_of_run_supervision_and_order_log(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_producer, "Producer", producer_failing_at(30))
    log = tmp_path / "sent.jsonl"
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"ticks-{suffix}", f"orders-{suffix}", f"dlq-{suffix}")
    order_log_dir = tmp_path / "order-log"
    output = KafkaOutput(kafka_bootstrap, topics, partitions=3, order_log_dir=str(order_log_dir))
    errors: list[tuple[int, str]] = []
    reconnects: list[int] = []
    with running_simulator(
        SimulatorConfig(port=0, rate=5, order_rate=4, seed=51, sent_log=str(log)), INSTRUMENTS
    ) as sim:
        ticker = _ticker(sim.port, kafka=output)
        ticker.on_error = lambda ws, code, reason: errors.append((code, reason))
        ticker.on_reconnect = lambda ws, attempts: reconnects.append(attempts)
        ticker.subscribe(TOKENS)
        ticker.connect(threaded=True)
        wait_until(
            lambda: bool(errors) and ticker.stats.connected and ticker.kafka_stats.delivered.total() > 300,
            60,
            "a failure, then streaming again",
        )
        sim.paused = True
        wait_until(lambda: ticker.kafka_stats.in_flight == 0, 30, "the stream to drain")
        ticker.close()
        sim.flush_log()
    assert [code for code, _ in errors] == [0] and "KafkaException" in errors[0][1]
    assert reconnects, "on_reconnect, as after any drop"
    assert ticker.stats.failures["KafkaException"] == 1
    orders = sent_log(log, "order")
    got = read_topic(kafka_bootstrap, topics.order_updates, expect=len(orders))
    assert {(o["order_id"], o["status"]) for o in orders} <= {
        (r.value["order_id"], r.value["status"]) for r in got
    }
    assert (order_log_dir / "order_updates.wal").exists(), "order updates went through the write-ahead log"
    with OrderLog(order_log_dir / "order_updates.wal") as order_log:
        assert order_log.pending() == [], "every one was acknowledged"
