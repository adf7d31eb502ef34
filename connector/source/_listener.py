"""The WebSocket listener: one thread per Kite connection, kept alive for as long as the process runs."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import websocket

from connector.errors import ConfigError, SourceError
from connector.kite import Mode, mode_message, subscribe_message, unsubscribe_message
from connector.logs import redact
from connector.source._frames import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, Frame, FrameReader
from connector.source._group import LineGroup
from connector.source._sockets import RECV_BYTES, readable, tls_pending
from connector.stats import ConnectionStats

__all__ = ["KiteListener", "MessageHandler", "TokenSource", "backoff"]

log = logging.getLogger("connector.source")
# While records await Kafka's acknowledgement the socket wait is this short, so delivery reports are
# served (and latency observed) within a quarter of a millisecond of the ack, not at the next message.
ACK_WAIT = 0.00025  # seconds
# With the backlog full a shorter wait only spins: room comes by whole batches of acknowledgements.
SATURATED_WAIT = 0.001  # seconds


def backoff(initial: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> Iterator[float]:
    """Reconnect delays: doubling from ``initial`` up to ``cap``, each with half of it jittered."""
    rng = rng or random.Random()
    delay = initial
    while True:
        yield delay / 2 + rng.uniform(0, delay / 2)
        delay = min(cap, delay * 2)


def _socket_reader(sock: socket.socket) -> Callable[[float], bytes | None]:
    """``read(wait)``: what the socket has within ``wait`` seconds; None if nothing, b"" once it closed."""
    watched, pending = (sock.fileno(),), tls_pending(sock)

    def read(wait: float) -> bytes | None:
        if not (pending and pending()) and not readable(watched, wait):
            return None
        try:
            return sock.recv(RECV_BYTES)
        except TimeoutError:  # TLS: a record has arrived only in part; the rest comes with a later read
            return None

    return read


class TokenSource:
    """The access token: fixed, or read from a file that is re-read whenever it changes (daily login)."""

    def __init__(self, token: str | None = None, path: str | Path | None = None) -> None:
        if not token and not path:
            raise ConfigError("set KITE_ACCESS_TOKEN or KITE_ACCESS_TOKEN_FILE (see `kite-connector login`)")
        self._token = token or ""
        self._path = Path(path) if path else None
        self._stamp: tuple[float, int] | None = None

    def get(self) -> str:
        """The current token; ConfigError while there is none (the token file is missing or empty)."""
        if self._path is None:
            return self._token
        try:
            st = self._path.stat()
            if (st.st_mtime, st.st_size) != self._stamp:
                self._token = self._path.read_text().strip()
                self._stamp = (st.st_mtime, st.st_size)
        except OSError as exc:
            if not self._token:
                raise ConfigError(f"cannot read KITE_ACCESS_TOKEN_FILE {self._path}: {exc.strerror}") from exc
        if not self._token:
            raise ConfigError(f"KITE_ACCESS_TOKEN_FILE {self._path} is empty")
        return self._token


Supervisor = Callable[[Exception], "MessageHandler | None"]


class MessageHandler(Protocol):
    def on_message(self, binary: bool, data: bytes, received_ms: int, received: float) -> None: ...

    def service(self) -> float | None:
        """Serve what is due (delivery reports); seconds until an acknowledgement may arrive, or None."""
        ...

    def saturated(self) -> bool:
        """True while the handler can take no more messages: the listener stops reading until it can."""
        ...


class KiteListener(threading.Thread):
    """Connects, subscribes, reads and hands every message to the handler, on this one thread.

    A message-less gap longer than ``watchdog`` seconds (Kite sends heartbeats every second) means a
    dead connection: it is closed and opened again, with backoff, forever. HTTP 403 at the handshake is
    an expired token: reported once, and retried only when the token source gives a new token.

    Any other exception (a bug, a broken producer) is caught at the top of the thread, logged with its
    traceback, counted in ``stats.failures`` and handed to ``supervisor``, which returns the handler
    to go on with (possibly a rebuilt one) or None to end the thread. No exception ends it silently.
    """

    def __init__(
        self,
        name: str,
        url: str,
        api_key: str,
        tokens: TokenSource,
        subscriptions: dict[int, Mode],
        handler: MessageHandler,
        stats: ConnectionStats,
        watchdog: float = 10.0,
        max_backoff: float = 30.0,
        drain_seconds: float = 0.0,
        subscribed: set[int] | None = None,
        on_event: Callable[[str, object], None] | None = None,
        supervisor: Supervisor | None = None,
        group: LineGroup | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.group = group  # the other lines of its shard: one thread at a time reads them all
        self.url, self.api_key, self.tokens = url, api_key, tokens
        self.subscriptions = dict(subscriptions)
        self.subscribed = subscribed  # tokens ever subscribed, for the pipeline: only ever added to
        self.handler, self.stats = handler, stats
        self.watchdog, self.max_backoff = watchdog, max_backoff
        self.drain_seconds = drain_seconds  # at stop, read what the socket already holds for this long
        self.on_event = on_event or (lambda event, arg: None)
        self.supervisor: Supervisor = supervisor or (lambda exc: self.handler)
        self.gave_up: str | None = None  # why the supervisor ended the thread
        self.ended_by: str | None = None  # a BaseException that ended the thread (not ours to catch)
        self._stop_event = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._lock = threading.Lock()
        self._public_url = urlsplit(url)._replace(query="").geturl()
        self._waiting_for_token = False
        self._last_token = ""

    # -- control (any thread) --------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def up(self) -> bool:
        return self.ident is None or self.is_alive() or (self.stopping and self.ended_by is None)

    def failure(self) -> str | None:
        """Why this listener no longer streams (it gave up, or its thread ended unasked), or None."""
        if self.gave_up:
            return f"{self.name} gave up: {self.gave_up}"
        if self.ended_by:
            return f"{self.name} ended by {self.ended_by}"
        if not self.up():
            return f"{self.name}: listener thread ended"
        return None

    def send_subscriptions(
        self, subscriptions: dict[int, Mode], unsubscribe: list[int] | None = None
    ) -> None:
        """Change what this connection streams; kept for reconnects."""
        with self._lock:
            self.subscriptions.update(subscriptions)
            if self.subscribed is not None:
                self.subscribed.update(subscriptions)
            for token in unsubscribe or ():
                self.subscriptions.pop(token, None)
            ws = self._ws
        if ws is not None and ws.connected:
            if unsubscribe:
                ws.send(unsubscribe_message(unsubscribe))
            self._subscribe(ws, subscriptions)

    # -- the thread ------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # e.g. SystemExit from a callback: it ends the thread, but not unseen
            self.ended_by = f"{type(exc).__name__}: {exc}"
            log.critical("%s ended by %s", self.name, self.ended_by, exc_info=exc)
            self.stats.connected = False
            self.on_event("died", self.ended_by)
            raise

    def _run(self) -> None:
        delays = backoff(cap=self.max_backoff)
        refused: str | None = None
        attempts = 0
        while not self.stopping and self.gave_up is None:
            try:
                token = self._token()
                if token is None or token == refused:
                    self._idle(2)  # no token yet, or it was refused: wait for a new one
                    continue
                ws, was_refused = self._connect(token)
                if was_refused:
                    refused = token
                    continue
                if ws is not None:
                    refused, attempts, delays = None, 0, backoff(cap=self.max_backoff)
                    self._serve(ws)
            except Exception as exc:  # the thread's top: nothing may end it unseen
                if not self._recover(exc):
                    break
            if self.stopping:
                break
            attempts += 1
            self.stats.reconnects += 1
            self.on_event("reconnect", attempts)
            self._idle(next(delays))
        self.on_event("close", None)

    def _recover(self, exc: Exception) -> bool:
        """Log and count an unexpected failure; the supervisor says whether (and with what) to go on."""
        if self.stopping:  # e.g. a produce that gave up waiting because stop() was called
            log.info("%s stopped while %s", self.name, type(exc).__name__)
            return False
        reason = f"{type(exc).__name__}: {redact(str(exc), self._last_token, self.api_key)}"
        self.stats.failures[type(exc).__name__] += 1
        self.stats.last_failure = reason
        self.stats.connected = False
        log.error("%s failed: %s", self.name, reason, exc_info=exc)
        self.on_event("error", (0, reason))
        try:
            handler = self.supervisor(exc)
        except Exception:
            log.critical("%s: recovering failed too; giving up", self.name, exc_info=True)
            handler = None
        if handler is None:
            self.gave_up = reason
            return False
        self.handler = handler
        return True

    def _token(self) -> str | None:
        """The token to connect with; None while there is none yet (one log line until it comes)."""
        try:
            token = self.tokens.get()
        except ConfigError as exc:
            if not self._waiting_for_token:
                log.error("%s; waiting for it (run `kite-connector login`)", exc)
                self._waiting_for_token = True
            return None
        if self._waiting_for_token:
            log.info("access token found; connecting")
            self._waiting_for_token = False
        self._last_token = token
        return token

    def _idle(self, seconds: float) -> None:
        """Wait, still serving the handler, so acknowledgements keep being counted while disconnected."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            try:
                ack_due = self.handler.service()
            except Exception as exc:
                if not self._recover(exc):
                    return
                ack_due = None
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop_event.wait(min(left, 0.1 if ack_due is not None else 1.0))

    def _connect(self, token: str) -> tuple[websocket.WebSocket | None, bool]:
        """(the socket once the handshake succeeded, or None; whether the token was refused)."""
        query = urlencode({"api_key": self.api_key, "access_token": token})
        ws = websocket.WebSocket(enable_multithread=True)
        try:
            ws.connect(  # type: ignore[no-untyped-call]
                f"{self.url}{'&' if '?' in self.url else '?'}{query}",
                timeout=10,
                header=["X-Kite-Version: 3"],
            )
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code == 403:
                log.error(
                    "Kite refused the access token (HTTP 403 at %s): it is expired or wrong. Run "
                    "`kite-connector login` or update KITE_ACCESS_TOKEN(_FILE); waiting for a new token.",
                    self._public_url,
                )
                self.stats.token_refused = True
                self.on_event("error", (403, "access token refused"))
                return None, True
            log.warning("handshake with %s failed: HTTP %d", self._public_url, exc.status_code)
            return None, False
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("cannot connect to %s: %s", self._public_url, redact(str(exc), token, self.api_key))
            self.on_event("error", (0, type(exc).__name__))
            return None, False
        return ws, False

    @staticmethod
    def _subscribe(ws: websocket.WebSocket, subscriptions: dict[int, Mode]) -> None:
        by_mode: dict[Mode, list[int]] = {}
        for token, mode in subscriptions.items():
            by_mode.setdefault(mode, []).append(token)
        for mode, tokens in by_mode.items():
            ws.send(subscribe_message(tokens))
            ws.send(mode_message(mode, tokens))

    def _serve(self, ws: websocket.WebSocket) -> None:
        """Subscribes and streams until the connection ends; every way it can end is cleaned up here."""
        reason = "stopped"
        try:
            self._start_stream(ws)
            reason = self._read(ws)
        except SourceError as exc:
            reason = f"protocol error ({exc})"
        except (OSError, websocket.WebSocketException) as exc:
            reason = f"connection lost ({type(exc).__name__})"
        finally:
            self.stats.connected = False
            with self._lock:
                self._ws = None
            with contextlib.suppress(OSError, websocket.WebSocketException):
                ws.close(timeout=1)
        if not self.stopping:
            log.warning("disconnected from %s: %s; reconnecting", self._public_url, reason)
            self.on_event("disconnect", reason)

    def _start_stream(self, ws: websocket.WebSocket) -> None:
        with self._lock:
            self._ws = ws
            subscriptions = dict(self.subscriptions)
        self._subscribe(ws, subscriptions)
        log.info("connected to %s, %d instruments subscribed", self._public_url, len(subscriptions))
        self.stats.connected, self.stats.token_refused = True, False
        self.on_event("connect", None)

    def _read(self, ws: websocket.WebSocket) -> str:
        """Reads and dispatches until the connection ends or stop(); returns why it ended."""
        idle = min(1.0, self.watchdog)  # the longest wait, so the watchdog and stop() are seen in time
        ws.settimeout(idle)  # bounds sends (pongs, subscription changes); reads wait below
        if ws.sock is None:  # closed since it was opened
            return "connection closed"
        read, reader, handler = _socket_reader(ws.sock), FrameReader(), self.handler
        if self.group is not None:
            reason = self.group.serve(self, ws, reader)
            if self.stopping:
                self._drain(ws, read, reader)
            return reason
        last, wait = time.monotonic(), idle
        while not self.stopping:
            if handler.saturated():  # block policy with a full backlog: leave the rest in the socket
                wait = self.ack_wait(handler.service(), idle)
                self.pause(wait)
                last = time.monotonic()  # time under backpressure does not count against the watchdog
                continue
            data = read(wait)
            if data is None:
                wait = self.ack_wait(handler.service(), idle)
                if time.monotonic() - last > self.watchdog:
                    return f"no message for {self.watchdog:.0f} s (watchdog)"
                continue
            if not data:
                return "connection closed by server"
            closed = self.deliver(ws, reader, data)
            wait = self.ack_wait(handler.service(), idle)
            last = self.stats.last_message = time.monotonic()
            if closed:
                return "closed by server"
        self._drain(ws, read, reader)
        return "stopped"

    def pause(self, wait: float) -> None:
        """Wait under backpressure (at least SATURATED_WAIT), or until stopped."""
        self._stop_event.wait(max(wait, SATURATED_WAIT))

    def _drain(
        self, ws: websocket.WebSocket, read: Callable[[float], bytes | None], reader: FrameReader
    ) -> None:
        """At stop: hand over what the socket already holds (order updates among it), within a budget."""
        deadline = time.monotonic() + self.drain_seconds
        held = 0
        while time.monotonic() < deadline:
            if self.handler.saturated():  # the backlog bound holds at stop too: wait for room, not past it
                self.handler.service()
                time.sleep(0.001)
                continue
            data = read(0)
            if not data:
                break
            held += len(data)
            if self.deliver(ws, reader, data):
                break
        self.handler.service()
        if held:
            log.info("%s: read %d bytes the socket still held at stop", self.name, held)

    @staticmethod
    def ack_wait(ack_due: float | None, idle: float) -> float:
        """How long to wait on the sockets: ``idle``, or until an acknowledgement may arrive."""
        return idle if ack_due is None else max(ACK_WAIT, min(idle, ack_due))

    def deliver(self, ws: websocket.WebSocket, reader: FrameReader, data: bytes) -> bool:
        """What a socket read brought, received now: framed and dispatched. True once the server sent a
        close frame."""
        received = time.perf_counter()  # before framing: the receive→ack latency counts it
        return self.dispatch(ws, reader.feed(data), time.time_ns() // 1_000_000, received)

    def dispatch(
        self, ws: websocket.WebSocket, frames: list[Frame], received_ms: int, received: float
    ) -> bool:
        """Hands messages to the handler and answers pings; True once the server sent a close frame."""
        on_message = self.handler.on_message
        for opcode, payload in frames:
            if opcode in (OP_BINARY, OP_TEXT):
                on_message(opcode == OP_BINARY, payload, received_ms, received)
            elif opcode == OP_PING:
                ws.pong(payload)
            elif opcode == OP_CLOSE:
                return True
        return False
