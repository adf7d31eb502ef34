"""A real WebSocket client (websocket-client, as the connector uses) against the simulator on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

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


# -- two connections on one market ---------------------------------------------------------------------
Frame = tuple[float, int, bytes]  # (monotonic receive time, opcode, payload)


def _read_for(ws: websocket.WebSocket, seconds: float) -> tuple[list[Frame], bool]:
    """Every frame until ``seconds`` have passed or the connection is gone; and whether it is gone."""
    frames: list[Frame] = []
    deadline = time.monotonic() + seconds
    ws.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            opcode, data = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return frames, True
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return frames, True
        frames.append((time.monotonic(), opcode, data))
    return frames, False


def _ticks(frames: list[Frame]) -> list[tuple[float, Tick]]:
    out = []
    for at, opcode, data in frames:
        if opcode == websocket.ABNF.OPCODE_BINARY and len(data) > 1:
            ticks, errors = parse_binary(data)
            assert errors == []
            out += [(at, t) for t in ticks]
    return out


def _texts(frames: list[Frame]) -> list[bytes]:
    return [data for _, opcode, data in frames if opcode == websocket.ABNF.OPCODE_TEXT]


def _open(port: int, tokens: list[int], mode: Mode) -> websocket.WebSocket:
    ws = websocket.create_connection(_url(port), timeout=5)
    ws.send(subscribe_message(tokens))
    ws.send(mode_message(mode, tokens))
    return ws


def _both(sockets: list[websocket.WebSocket], seconds: float) -> list[list[Frame]]:
    with ThreadPoolExecutor(len(sockets)) as pool:
        return [frames for frames, _ in pool.map(lambda ws: _read_for(ws, seconds), sockets)]


TRADABLE = [i.instrument_token for i in bundled_instruments() if i.segment != "INDICES"][:20]


def test_two_connections_get_the_same_ticks_and_order_updates_each_with_its_own_jitter(
    tmp_path: Path,
) -> None:
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(
        port=0, rate=20, order_rate=10, jitter_ms=40, packets_per_message=5, seed=8, sent_log=str(log)
    )
    with running_simulator(config, bundled_instruments()) as sim:
        sim.paused = True  # both subscribed before the first tick
        sockets = [_open(sim.port, TRADABLE, Mode.QUOTE), _open(sim.port, TRADABLE, Mode.FULL)]
        time.sleep(0.3)
        sim.paused = False
        threading.Timer(1.5, lambda: setattr(sim, "paused", True)).start()  # then the queues drain
        frames = _both(sockets, 2.2)
        for ws in sockets:
            ws.close()
        sim.flush_log()
    lines = sent_log(log, "tick")
    conns = sorted({r["conn"] for r in lines})
    assert len(conns) == 2
    seq_of = {(r["conn"], r["instrument_token"], r["volume_traded"]): r["seq"] for r in lines}
    arrivals: list[dict[int, float]] = []
    for conn, got in zip(conns, frames, strict=True):
        by_seq = {seq_of[conn, t.instrument_token, t.volume_traded]: at for at, t in _ticks(got)}
        assert sorted(by_seq) == sorted(r["seq"] for r in lines if r["conn"] == conn), "read = logged"
        arrivals.append(by_seq)
        volumes: dict[int, list[int]] = {}
        for _, t in _ticks(got):
            volumes.setdefault(t.instrument_token, []).append(t.volume_traded or 0)
        assert all(a < b for v in volumes.values() for a, b in pairwise(v)), "never reordered on a line"
    a, b = arrivals
    assert set(a) == set(b) and len(a) >= 400, "the same ticks, by market-wide id, on both lines"
    lead = [a[seq] - b[seq] for seq in a]
    assert min(lead) < -0.005 and max(lead) > 0.005, "each line is sometimes first, by its own jitter"
    assert sorted(a, key=a.__getitem__) != sorted(b, key=b.__getitem__), "own interleaving per line"
    modes = [{t.mode for _, t in _ticks(got)} for got in frames]
    assert modes == [{Mode.QUOTE}, {Mode.FULL}]
    orders_a, orders_b = (_texts(got) for got in frames)
    assert orders_a == orders_b and len(orders_a) >= 10, "every order update on both, the same text"
    assert {parse_text(t).status for t in orders_a} > {"OPEN"}  # type: ignore[union-attr]


def test_a_fault_on_connection_number_1_leaves_connection_2_alone(tmp_path: Path) -> None:
    log = tmp_path / "sent.jsonl"
    config = SimulatorConfig(
        port=0, rate=20, drop_every=0.6, malformed_probability=0.3, fault_connections=(1,), seed=9,
        sent_log=str(log),
    )  # fmt: skip
    with running_simulator(config, bundled_instruments()) as sim:
        line_a = _open(sim.port, TRADABLE, Mode.QUOTE)
        line_b = _open(sim.port, TRADABLE, Mode.QUOTE)
        a_frames: list[Frame] = []

        def line_a_reconnecting() -> int:
            ws, drops, deadline = line_a, 0, time.monotonic() + 2.5
            while time.monotonic() < deadline:
                a_frames.extend(_read_for(ws, deadline - time.monotonic())[0])
                if time.monotonic() < deadline:
                    drops += 1
                    ws = _open(sim.port, TRADABLE, Mode.QUOTE)
            ws.close()
            return drops

        with ThreadPoolExecutor(1) as pool:
            drops = pool.submit(line_a_reconnecting)
            b_frames, b_closed = _read_for(line_b, 2.5)
        assert not b_closed, "connection 2 was never dropped"
        line_b.close()
        sim.flush_log()
    assert drops.result() >= 2
    errors = [
        e for _, op, data in a_frames if op == websocket.ABNF.OPCODE_BINARY for e in parse_binary(data)[1]
    ]
    assert errors, "connection 1 got malformed messages"
    assert len(_ticks(b_frames)) >= 500, "connection 2 streamed on, every message whole"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    connects = [r for r in records if r["kind"] == "connect"]
    b_conn = connects[1]["conn"]
    assert connects[1]["slot"] == 2 and all(r["slot"] == 1 for r in connects if r["conn"] != b_conn)
    faulted = {r["conn"] for r in records if r["kind"] in ("malformed", "tick_undelivered")}
    faulted |= {r["conn"] for r in records if r["kind"] == "disconnect" and r["reason"] == "dropped"}
    assert faulted and b_conn not in faulted
    undelivered = [r for r in records if r["kind"] == "tick_undelivered"]
    assert {r["reason"] for r in undelivered} <= {"malformed", "dropped", "closed"}
    assert all(isinstance(r["seq"], int) for r in undelivered)


def _control(port: int, path: str, host: str = "127.0.0.1", method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _outside_address() -> str | None:
    """This machine's address on its default route, if it has one that is not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_test_drops_one_connection_on_demand_from_loopback_only() -> None:
    config = SimulatorConfig(host="0.0.0.0", port=0, http_port=0, rate=10)
    with running_simulator(config, bundled_instruments()) as sim:
        assert sim.http is not None
        http = sim.http.port
        line_a = _open(sim.port, TRADABLE, Mode.LTP)
        line_b = _open(sim.port, TRADABLE[:5], Mode.LTP)
        wait = time.monotonic() + 5
        while sum(c.instruments for c in sim.open_connections()) < 25 and time.monotonic() < wait:
            time.sleep(0.05)
        status, listed = _control(http, "/control/connections")
        assert status == 200
        assert [(c["slot"], c["instruments"]) for c in listed["data"]] == [(1, 20), (2, 5)]
        outside = _outside_address()
        if outside is not None:
            assert _control(http, "/control/drop?slot=1", outside, "POST")[0] == 403
            assert _control(http, "/control/connections", outside)[0] == 403
        assert _control(http, "/control/drop?conn=99", method="POST")[0] == 404
        status, dropped = _control(http, "/control/drop?slot=2", method="POST")
        assert status == 200 and dropped["data"]["conn"] == listed["data"][1]["conn"]
        assert _read_for(line_b, 3)[1], "dropped"
        assert [c.slot for c in sim.open_connections()] == [1], "only the connection asked for is gone"
        assert _ticks(_read_for(line_a, 0.5)[0]), "the other streams on"
        line_a.close()


def test_replay_gives_every_connection_the_same_pre_encoded_feed() -> None:
    instruments = synthetic_instruments(200)
    tokens = [i.instrument_token for i in instruments if i.segment != "INDICES"]
    config = SimulatorConfig(port=0, replay_ticks=5000, order_rate=0)
    with running_simulator(config, instruments) as sim:
        sockets = [_open(sim.port, tokens, Mode.FULL) for _ in range(2)]

        def feed(ws: websocket.WebSocket) -> list[bytes]:
            messages, ticks = [], 0
            while ticks < 5000:
                opcode, data = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_BINARY and len(data) > 1:
                    messages.append(data)
                    ticks += len(parse_binary(data)[0])
            return messages

        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(feed, sockets)
        for ws in sockets:
            ws.close()
    assert a == b and sum(len(parse_binary(m)[0]) for m in a) == 5000
