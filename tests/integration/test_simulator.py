"""A real WebSocket client (websocket-client, as the connector uses) against the simulator on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import websocket

from connector.app import download_instruments, parse_subscriptions
from connector.errors import ConfigError
from connector.kite import (
    KiteError,
    Mode,
    OrderUpdate,
    mode_message,
    parse_binary,
    parse_text,
    subscribe_message,
)
from connector.simulator import SimulatorConfig, bundled_instruments, running_simulator, synthetic_instruments

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
