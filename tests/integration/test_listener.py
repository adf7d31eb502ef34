"""The listener on real sockets: fragments, pings, TLS records cut in two, broken subscriptions, and a
handler that raises (the listener logs, counts and goes on with a new one, or gives up and says why)."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import websocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from connector.kite import Mode
from connector.source import KiteListener, LineGroup, TokenSource
from connector.source._group import _read_now
from connector.source._listener import _socket_reader
from connector.stats import ConnectionStats

pytestmark = pytest.mark.integration


class Collect:
    def __init__(self) -> None:
        self.messages: list[tuple[bool, bytes]] = []

    def on_message(self, binary: bool, data: bytes, received_ms: int, received: float) -> None:
        self.messages.append((binary, data))

    def service(self) -> float | None:
        return None

    def saturated(self) -> bool:
        return False


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for localhost: the server's context, and the file the client trusts."""
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    request = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
    request += " -addext subjectAltName=DNS:localhost"
    command = ["openssl", *request.split(), "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_the_listener_joins_fragments_and_answers_pings_on_a_real_socket(
    scheme: str, tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ponged, finished = threading.Event(), threading.Event()
    big = bytes(range(256)) * 1024  # spans many TLS records and socket reads

    def handler(ws: ServerConnection) -> None:
        ws.recv()  # the subscribe message
        ws.send([b"\x00\x01", b"\x00\x08", b"\x00\x00\x01\x09\x00\x00\x00\x64"])  # sent as three fragments
        if ws.ping(b"hb").wait(5):
            ponged.set()
        ws.send(big)
        ws.send(b"\x00")
        finished.wait(5)

    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(tls[1]))
    with serve(handler, "127.0.0.1", 0, ssl=tls[0] if scheme == "wss" else None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"{scheme}://localhost:{server.socket.getsockname()[1]}"
        collect = Collect()
        listener = KiteListener(
            "test", url, "key", TokenSource("token"), {265: Mode.FULL}, collect, ConnectionStats()
        )
        listener.start()
        deadline = time.monotonic() + 10
        while len(collect.messages) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        finished.set()
        listener.stop()
        listener.join(5)
        server.shutdown()
    assert collect.messages[:3] == [
        (True, b"\x00\x01\x00\x08\x00\x00\x01\x09\x00\x00\x00\x64"),
        (True, big),
        (True, b"\x00"),
    ]
    assert ponged.is_set()


def test_a_connection_that_breaks_while_subscribing_is_opened_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subscription is the first thing sent: a send that fails there is a lost connection (logged,
    reconnected), not an exception that ends the listener thread."""
    tick = b"\x00\x01\x00\x08\x00\x00\x01\x09\x00\x00\x00\x64"
    subscribe, broken = KiteListener._subscribe, threading.Event()

    def break_the_first(ws: websocket.WebSocket, subscriptions: dict[int, Mode]) -> None:
        if not broken.is_set():
            broken.set()
            assert ws.sock is not None
            ws.sock.shutdown(socket.SHUT_WR)  # the send below then fails for real (EPIPE)
        subscribe(ws, subscriptions)

    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            ws.recv()  # the subscription
            ws.send(tick)
            for _ in ws:  # until the client goes
                pass

    monkeypatch.setattr(KiteListener, "_subscribe", staticmethod(break_the_first))
    events: list[tuple[str, object]] = []
    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        collect, stats = Collect(), ConnectionStats()
        listener = KiteListener(
            "test", url, "key", TokenSource("token"), {265: Mode.FULL}, collect, stats,
            on_event=lambda event, arg: events.append((event, arg)),
        )  # fmt: skip
        listener.start()
        deadline = time.monotonic() + 10
        while not collect.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        alive = listener.is_alive()
        listener.stop()
        listener.join(5)
        server.shutdown()
    assert alive and collect.messages == [(True, tick)]
    assert stats.reconnects == 1
    disconnects = [arg for event, arg in events if event == "disconnect"]
    assert len(disconnects) == 1 and "connection lost" in str(disconnects[0])


def test_the_socket_reader_says_nothing_came_data_or_closed() -> None:
    ours, theirs = socket.socketpair()
    read = _socket_reader(ours)
    started = time.monotonic()
    assert read(0.02) is None
    assert 0.015 <= time.monotonic() - started < 1
    theirs.sendall(b"\x00")
    assert read(1) == b"\x00"
    theirs.close()
    assert read(1) == b""
    ours.close()


def _tls_pair(
    tls: tuple[ssl.SSLContext, Path],
) -> tuple[ssl.SSLSocket, ssl.SSLObject, ssl.MemoryBIO, socket.socket]:
    """A client TLS socket, and the server's end driven by hand so the test decides how its bytes travel."""
    client_raw, server_raw = socket.socketpair()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = tls[0].wrap_bio(incoming, outgoing, server_side=True)

    def handshake() -> None:
        while True:
            try:
                server.do_handshake()
                break
            except ssl.SSLWantReadError:
                server_raw.sendall(outgoing.read())
                incoming.write(server_raw.recv(65536))
        server_raw.sendall(outgoing.read())

    helper = threading.Thread(target=handshake)
    helper.start()
    trusting = ssl.create_default_context(cafile=str(tls[1]))
    client = trusting.wrap_socket(client_raw, server_hostname="localhost")
    helper.join(5)
    return client, server, outgoing, server_raw


@pytest.mark.parametrize(("timeout", "pause"), [(1.0, 0.02), (0.2, 0.6)])
def test_a_tls_record_that_arrives_in_part_is_waited_for(
    timeout: float, pause: float, tls: tuple[ssl.SSLContext, Path]
) -> None:
    """The rest of the record comes before, or after, the socket timeout: never an error, and the data
    once the record is whole (after one empty read when the timeout came first)."""
    client, server, outgoing, server_raw = _tls_pair(tls)
    client.settimeout(timeout)  # the listener sets one on the connection
    read = _socket_reader(client)
    payload = b"\x00\x01" + bytes(300)
    server.write(payload)
    record = outgoing.read()
    server_raw.sendall(record[:10])
    threading.Timer(pause, server_raw.sendall, [record[10:]]).start()
    reads = [read(2)]
    if reads[0] is None:
        reads.append(read(2))
    assert reads == ([payload] if pause < timeout else [None, payload])
    client.close()
    server_raw.close()


class _Exploding:
    """A message handler whose second message raises, as a bug in a pipeline would."""

    def __init__(self) -> None:
        self.messages = 0

    def on_message(self, binary: bool, data: bytes, received_ms: int, received: float) -> None:
        self.messages += 1
        if self.messages == 2:
            raise RuntimeError("a bug")

    def service(self) -> float | None:
        return None

    def saturated(self) -> bool:
        return False


def test_whatever_a_handler_raises_the_listener_logs_counts_and_goes_on_with_a_new_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            ws.recv()
            for _ in range(5):
                ws.send(b"\x00\x00")
            for _ in ws:
                pass

    first, second = _Exploding(), _Exploding()
    given: list[Exception] = []

    def supervisor(exc: Exception) -> _Exploding:
        given.append(exc)
        return second

    with serve(handler, "127.0.0.1", 0) as server, caplog.at_level(logging.ERROR):
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        stats = ConnectionStats()
        listener = KiteListener(
            "t", url, "key", TokenSource("tok"), {265: Mode.LTP}, first, stats, 3, 0.2, supervisor=supervisor
        )
        listener.start()
        deadline = time.monotonic() + 10
        while len(given) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        alive = listener.is_alive()
        listener.stop()
        listener.join(5)
        server.shutdown()
    assert alive and first.messages == 2 and second.messages == 2, "a new handler took over, and failed too"
    assert [str(e) for e in given] == ["a bug", "a bug"]
    assert stats.failures["RuntimeError"] == 2 and stats.last_failure == "RuntimeError: a bug"
    logged = [r for r in caplog.records if "t failed: RuntimeError: a bug" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info for r in logged), "logged once each, with the traceback"


def test_a_supervisor_that_gives_up_ends_the_thread_and_says_why() -> None:
    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            ws.recv()
            ws.send(b"\x00\x00")
            ws.send(b"\x00\x00")
            for _ in ws:
                pass

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        listener = KiteListener(
            "t",
            url,
            "key",
            TokenSource("tok"),
            {265: Mode.LTP},
            _Exploding(),
            ConnectionStats(),
            3,
            0.2,
            supervisor=lambda exc: None,
        )
        listener.start()
        listener.join(10)
        server.shutdown()
    assert not listener.is_alive()
    assert listener.gave_up == "RuntimeError: a bug"


def _stream_grouped(
    urls: list[str], collects: list[Collect], stats: list[ConnectionStats], until: Callable[[], bool]
) -> list[KiteListener]:
    """One listener per url, all in one group, streaming until ``until()`` (at most 20 s); then stopped."""
    group = LineGroup()
    listeners = [
        KiteListener(
            f"line-{i}", url, "key", TokenSource("token"), {265: Mode.FULL}, collects[i], stats[i],
            max_backoff=0.5, group=group,
        )
        for i, url in enumerate(urls)
    ]  # fmt: skip
    for listener in listeners:
        listener.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not until():
        time.sleep(0.05)
    for listener in listeners:
        listener.stop()
    for listener in listeners:
        listener.join(5)
    wake = group._wake_r, group._wake_w
    group.close()
    assert all(sock.fileno() == -1 for sock in wake), "the group's wake socketpair is closed once it is left"
    return listeners


def test_lines_of_a_group_are_read_by_one_thread_and_each_ends_and_comes_back_on_its_own() -> None:
    """Two lines in one group: each message reaches its own line's handler, a ping on either is answered,
    and a line the server closes reconnects while the other streams on."""
    opened: list[int] = []
    ponged = [threading.Event(), threading.Event()]

    def handler(ws: ServerConnection) -> None:
        line = int(ws.request.path.split("line=")[1].split("&")[0]) if ws.request else -1
        opened.append(line)
        with contextlib.suppress(ConnectionClosed):
            ws.recv()  # the subscription
            if ws.ping(b"hb").wait(5):
                ponged[line].set()
            for n in range(100_000):
                ws.send(b"L%d-%d" % (line, n))
                if line == 1 and opened.count(1) == 1 and n == 30:
                    ws.close()  # the first connection of line 1 ends; line 0 goes on
                    return
                time.sleep(0.005)

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        collects, stats = [Collect(), Collect()], [ConnectionStats(), ConnectionStats()]
        listeners = _stream_grouped(
            [f"ws://127.0.0.1:{port}/?line={i}" for i in range(2)],
            collects,
            stats,
            lambda: opened.count(1) >= 2 and len(collects[1].messages) > 60,
        )
        server.shutdown()
    assert not any(listener.is_alive() for listener in listeners)
    assert opened.count(0) == 1 and opened.count(1) >= 2, opened
    assert stats[0].reconnects == 0 and stats[1].reconnects >= 1
    assert all(ev.is_set() for ev in ponged)
    for i, collect in enumerate(collects):
        assert collect.messages and all(data.startswith(b"L%d-" % i) for _, data in collect.messages)
    zero = [int(data.split(b"-")[1]) for _, data in collects[0].messages]
    assert zero == list(range(len(zero))), "line 0 lost nothing while line 1 reconnected"


class Raising(Collect):
    """Raises on its ``nth`` message, once."""

    def __init__(self, nth: int) -> None:
        super().__init__()
        self.nth = nth

    def on_message(self, binary: bool, data: bytes, received_ms: int, received: float) -> None:
        super().on_message(binary, data, received_ms, received)
        if len(self.messages) == self.nth:
            raise RuntimeError("a bug in this line's handler")


def test_what_a_lines_handler_raises_in_a_group_is_that_lines_failure_not_the_readers() -> None:
    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            ws.recv()  # the subscription
            for n in range(100_000):
                ws.send(b"m-%d" % n)
                time.sleep(0.005)

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        collects, stats = [Collect(), Raising(5)], [ConnectionStats(), ConnectionStats()]
        _stream_grouped(
            [url, url], collects, stats, lambda: bool(stats[1].reconnects) and len(collects[1].messages) > 20
        )
        server.shutdown()
    assert stats[1].failures["RuntimeError"] == 1 and stats[1].reconnects >= 1
    assert not stats[0].failures and stats[0].reconnects == 0, "the other line streams on, whoever read"


def test_a_group_does_not_wait_for_a_tls_record_that_arrived_in_part(
    tls: tuple[ssl.SSLContext, Path],
) -> None:
    """The reader of a group reads every line: a record cut in two on one line is left for a later round,
    not waited for (its socket timeout would hold up the other lines)."""
    client, server, outgoing, server_raw = _tls_pair(tls)
    client.settimeout(1.0)  # the listener sets one on the connection
    read = _read_now(client)
    payload = b"\x00\x01" + bytes(300)
    server.write(payload)
    record = outgoing.read()
    server_raw.sendall(record[:10])
    time.sleep(0.05)
    started = time.monotonic()
    assert read() is None
    assert time.monotonic() - started < 0.5 and client.gettimeout() == 1.0
    server_raw.sendall(record[10:])
    time.sleep(0.05)
    assert read() == payload
    client.close()
    server_raw.close()
