"""A real WebSocket client (websocket-client, as the connector uses) against the simulator on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from itertools import pairwise
from pathlib import Path

import pytest
import websocket

from connector.app import download_instruments, parse_subscriptions
from connector.errors import ConfigError
from connector.kite import (
    KiteError,
    Mode,
    OrderUpdate,
    Tick,
    mode_message,
    parse_binary,
    parse_text,
    subscribe_message,
)
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator, synthetic_instruments
from tests.harness import free_port
from tests.integration.helpers import sent_log

pytestmark = pytest.mark.integration


def _url(port: int, token: str = "simulator-token") -> str:
    return f"ws://127.0.0.1:{port}/?api_key=simulator&access_token={token}"


def test_full_mode_ticks_for_exactly_the_subscribed_tokens(tmp_path: Path) -> None:
    instruments = bundled_instruments() + synthetic_instruments(20)
    tokens = [i.instrument_token for i in instruments[:50]]
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(port=0, rate=10, order_rate=5, seed=3, sent_log=str(log))
    with running_simulator(config, instruments) as sim:
        ws = websocket.create_connection(_url(sim.port), timeout=5)
        ws.send(subscribe_message(tokens))
        ws.send(mode_message(Mode.FULL, tokens))
        seen: dict[int, int] = {}
        orders: list[OrderUpdate] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_BINARY:
                ticks, errors = parse_binary(data)
                assert errors == []
                for tick in ticks:
                    seen[tick.instrument_token] = seen.get(tick.instrument_token, 0) + 1
                    if tick.mode == Mode.FULL:
                        assert tick.depth_buy is not None and len(tick.depth_buy) == 5
            else:
                record = parse_text(data)
                assert isinstance(record, OrderUpdate)
                orders.append(record)
        ws.close()
        sim.flush_log()
    assert set(seen) == set(tokens)
    assert min(seen.values()) >= 10
    assert {o.status for o in orders} >= {"OPEN"}
    assert len({o.status for o in orders}) >= 2, "orders move on from OPEN"
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["instrument_token"] for r in logged if r["kind"] == "tick"} == set(tokens)


def test_new_subscriptions_stream_in_quote_mode() -> None:
    with running_simulator(SimulatorConfig(port=0, rate=20), bundled_instruments()) as sim:
        ws = websocket.create_connection(_url(sim.port), timeout=5)
        ws.send(subscribe_message([3813889, 4645121]))
        modes: set[str] = set()
        while len(modes) == 0:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_BINARY:
                modes |= {t.mode.value for t in parse_binary(data)[0]}
        ws.close()
    assert modes == {"quote"}


def test_wrong_token_is_refused_at_the_handshake_with_403() -> None:
    with running_simulator(SimulatorConfig(port=0), bundled_instruments()) as sim:
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(_url(sim.port, "expired"), timeout=5)
        assert info.value.status_code == 403


def test_more_than_3000_instruments_get_an_error_message() -> None:
    instruments = synthetic_instruments(3100)
    with running_simulator(SimulatorConfig(port=0, rate=0.1), instruments) as sim:
        ws = websocket.create_connection(_url(sim.port), timeout=5)
        ws.send(subscribe_message(i.instrument_token for i in instruments))
        for _ in range(50):
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                record = parse_text(data)
                if isinstance(record, KiteError):
                    assert "3000" in record.message
                    break
        else:
            pytest.fail("no error message for the 3001st instrument")
        ws.close()


def test_instruments_dump_download_resolves_symbols() -> None:
    with running_simulator(SimulatorConfig(port=0, http_port=0), bundled_instruments()) as sim:
        assert sim.http is not None
        url = f"http://127.0.0.1:{sim.http.port}/instruments"
        instruments = download_instruments(url, "simulator", "simulator-token")
        assert parse_subscriptions("NSE:EMMBI-BL@ltp", "full", instruments) == {4645121: Mode.LTP}
        with pytest.raises(ConfigError) as info:
            download_instruments(url, "simulator", "stale-token")
        assert "stale-token" not in str(info.value)


def test_any_valid_token_streams_over_the_socket() -> None:
    token = 131169028  # BSE (low byte 4), not in the bundled instruments
    with running_simulator(SimulatorConfig(port=0, rate=20), bundled_instruments()) as sim:
        ws = websocket.create_connection(_url(sim.port), timeout=5)
        ws.send(subscribe_message([token, 10 << 8 | 10]))  # the second has no Kite segment: ignored
        ws.send(mode_message(Mode.FULL, [token]))
        ticks: list[Tick] = []
        deadline = time.monotonic() + 10
        while len(ticks) < 20 and time.monotonic() < deadline:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_BINARY and len(data) > 1:
                got, errors = parse_binary(data)
                assert errors == []
                ticks += [t for t in got if t.mode == Mode.FULL]
        ws.close()
    assert len(ticks) >= 20 and {t.instrument_token for t in ticks} == {token}
    volumes = [t.volume_traded or 0 for t in ticks]
    assert all(a < b for a, b in pairwise(volumes))
    stamps = [t.exchange_timestamp_ms or 0 for t in ticks]
    assert stamps == sorted(stamps)


def test_hidden_order_updates_only_in_the_order_book(tmp_path: Path) -> None:
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(port=0, http_port=0, order_rate=20, order_hide_every=3, sent_log=str(log))
    with running_simulator(config, bundled_instruments()) as sim:
        assert sim.http is not None
        ws = websocket.create_connection(_url(sim.port), timeout=5)
        received: dict[str, str] = {}
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                record = parse_text(data)
                assert isinstance(record, OrderUpdate)
                received[record.order_id] = record.status
        sim.paused = True  # no new orders; those in progress settle within half a second
        time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{sim.http.port}/orders",
            headers={"X-Kite-Version": "3", "Authorization": "token simulator:simulator-token"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.loads(response.read())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                urllib.request.Request(request.full_url, headers={"Authorization": "token simulator:x"}),
                timeout=5,
            )
        assert refused.value.code == 403
        ws.close()
        sim.flush_log()
    assert body["status"] == "success"
    book = {o["order_id"]: o for o in body["data"]}
    hidden = sent_log(log, "order_update_hidden")
    assert len(hidden) >= 5 and all(h["status"] != "OPEN" for h in hidden)
    for h in hidden:
        assert book[h["order_id"]]["status"] == h["status"], "a hidden update is the order's latest state"
        assert received.get(h["order_id"]) == "OPEN", "the socket never carried it"
    entry = parse_text(json.dumps({"type": "order", "data": book[hidden[0]["order_id"]]}))
    assert isinstance(entry, OrderUpdate) and entry.exchange_update_timestamp_ms is not None
    assert set(book[hidden[0]["order_id"]]) >= {"order_id", "status", "exchange_update_timestamp", "meta"}


def test_sigterm_stops_the_simulator_with_its_sent_log_complete(tmp_path: Path) -> None:
    log = tmp_path / "sent.jsonl"
    port = free_port()
    env = {
        **os.environ,
        "SIM_PORT": str(port),
        "SIM_HTTP_PORT": "-1",
        "SIM_RATE": "50",
        "SIM_ORDER_RATE": "5",
        "SIM_SENT_LOG": str(log),
    }
    proc = subprocess.Popen([sys.executable, "-m", "connector.cli", "simulate"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ws = websocket.create_connection(_url(port), timeout=5)
                break
            except (ConnectionRefusedError, websocket.WebSocketException):
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.2)
        tokens = [i.instrument_token for i in bundled_instruments()][:100]
        ws.send(subscribe_message(tokens))
        ticks = orders = 0
        stopped_at = time.monotonic() + 3
        while True:
            if proc.poll() is None and time.monotonic() > stopped_at:
                proc.send_signal(signal.SIGTERM)
            try:
                opcode, data = ws.recv_data()
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                break
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if opcode == websocket.ABNF.OPCODE_BINARY:
                ticks += len(parse_binary(data)[0])
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                orders += 1
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ticks > 1000
    assert ticks == len(sent_log(log, "tick")), "every tick the client read is logged, and no more"
    assert orders == len(sent_log(log, "order"))
    assert log.read_text().endswith("\n")
