"""Lines read by one thread: the WebSockets of a shard's lines, read in turn by whichever line's thread
holds the group's reader role, so the other threads wait on a condition instead of contending for the GIL
(two busy listener threads hand it to each other at every system call, which cost the second line more
CPU than all its copies' work)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import websocket

from connector.errors import SourceError
from connector.source._frames import FrameReader
from connector.source._sockets import RECV_BYTES, readable, tls_pending

if TYPE_CHECKING:
    from connector.source._listener import KiteListener

__all__ = ["LineGroup"]

_FOLLOW_WAIT = 0.1  # seconds: how soon a line that is not reading sees its stop or its end


@dataclass(slots=True, eq=False)
class _Line:
    listener: KiteListener
    ws: websocket.WebSocket
    read: Callable[[], bytes | None]
    frames: FrameReader
    fd: int
    pending: Callable[[], int] | None  # TLS's decrypted bytes (None: a plain socket)
    last: float = field(default_factory=time.monotonic)
    ended: str | None = None  # why its stream ended, set by the reader
    failure: Exception | None = None  # what its handler raised on the reader's thread, for its own


class LineGroup:
    """The lines of one shard. Each line's thread joins with its connected socket and stays in
    :meth:`serve` until its own stream ends; meanwhile one of them at a time reads every line."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._round = threading.Lock()  # held by the reader for a round; leaving waits for it
        self._lines: list[_Line] = []
        self._reader: _Line | None = None
        # A line that joins wakes the reader, which may be waiting on the others' sockets for a second.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._closed = False  # no line joins any more; the pair closes as the last one leaves

    def serve(self, listener: KiteListener, ws: websocket.WebSocket, frames: FrameReader) -> str:
        """Streams ``listener``'s socket (and, while this thread reads, the others') until it ends or the
        listener stops; returns why. What its handler raised on the reader's thread is raised here, on its
        own thread, for its own supervisor."""
        assert ws.sock is not None
        line = _Line(listener, ws, _read_now(ws.sock), frames, ws.sock.fileno(), tls_pending(ws.sock))
        with self._cond:
            if self._closed:  # its shard closed after stopping its lines (one may still be connecting)
                if listener.stopping:
                    return "stopped"
                raise RuntimeError("a running line joined a closed line group (its shard is closed)")
            self._lines.append(line)
        self._wake()
        try:
            reason = self._serve(line)
        finally:
            self._wake()  # a reader waiting on quiet sockets would hold the round for up to a second
            self._leave(line)
        if line.failure is not None:
            raise line.failure
        return reason

    def close(self) -> None:
        """No line joins from now on; the wake socketpair closes now, or as the last line in it leaves."""
        with self._cond:
            self._closed = True
            self._close_if_empty()

    def _leave(self, line: _Line) -> None:
        with self._round, self._cond:
            self._lines.remove(line)
            self._close_if_empty()

    def _close_if_empty(self) -> None:
        """Under the condition's lock: once closed and left by every line, nothing waits on the pair."""
        if self._closed and not self._lines:
            self._wake_r.close()
            self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the reader is awake anyway
            self._wake_w.send(b"\0", socket.MSG_DONTWAIT)

    def _serve(self, line: _Line) -> str:
        while True:
            with self._cond:
                while self._reader is not None:
                    if line.ended or line.listener.stopping:
                        return line.ended or "stopped"
                    self._cond.wait(_FOLLOW_WAIT)
                if line.ended or line.listener.stopping:
                    return line.ended or "stopped"
                self._reader = line
            try:
                self._lead(line)
            finally:
                with self._cond:
                    self._reader = None
                    self._cond.notify_all()

    def _lead(self, me: _Line) -> None:
        """Reads every line until this one's stream ends or its listener stops."""
        listener = me.listener
        idle = min(1.0, listener.watchdog)
        wait = idle
        while me.ended is None and not listener.stopping:
            handler = listener.handler  # the shard's pipeline, whichever line's handler it is reached by
            if handler.saturated():  # block policy with a full backlog: leave the rest in the sockets
                wait = listener.ack_wait(handler.service(), idle)
                listener.pause(wait)
                now = time.monotonic()
                for line in self._lines:
                    line.last = now  # time under backpressure does not count against the watchdog
                continue
            with self._round:
                lines = [line for line in self._lines if line.ended is None]
                ready = _ready(lines, wait, self._wake_r)
                for line in ready:
                    self._take(line)
                wait = listener.ack_wait(handler.service(), idle)
                self._watch([line for line in lines if line not in ready])

    def _take(self, line: _Line) -> None:
        """What ``line``'s socket holds, to its own handler; a broken stream ends that line only."""
        try:
            data = line.read()
            if data is None:
                return
            if not data:
                self._end(line, "connection closed by server")
                return
            closed = line.listener.deliver(line.ws, line.frames, data)
        except SourceError as exc:
            self._end(line, f"protocol error ({exc})")
            return
        except (OSError, websocket.WebSocketException) as exc:
            self._end(line, f"connection lost ({type(exc).__name__})")
            return
        except Exception as exc:  # its handler's: raised again on its own thread (see serve)
            line.failure = exc
            self._end(line, f"failed ({type(exc).__name__})")
            return
        line.last = line.listener.stats.last_message = time.monotonic()
        if closed:
            self._end(line, "closed by server")

    def _watch(self, lines: list[_Line]) -> None:
        """Ends the lines (found silent this round) that were silent longer than their watchdog."""
        now = time.monotonic()
        for line in lines:
            watchdog = line.listener.watchdog
            if line.ended is None and now - line.last > watchdog:
                self._end(line, f"no message for {watchdog:.0f} s (watchdog)")

    def _end(self, line: _Line, why: str) -> None:
        with self._cond:
            line.ended = why
            self._cond.notify_all()


def _ready(lines: list[_Line], wait: float, wake: socket.socket) -> list[_Line]:
    """The lines with something to read within ``wait`` seconds, or sooner if ``wake`` is written to
    (TLS may hold bytes the descriptor does not show: then no waiting)."""
    pending = [line for line in lines if line.pending is not None and line.pending()]
    if pending:
        wait = 0.0
    found = readable([line.fd for line in lines] + [wake.fileno()], wait)
    if wake.fileno() in found:
        with contextlib.suppress(OSError):
            wake.recv(4096)
    return [line for line in lines if line.fd in found or line in pending]


def _read_now(sock: socket.socket) -> Callable[[], bytes | None]:
    """``read()``: what a socket found readable holds, None if nothing yet, b"" once it closed. A TLS
    record that arrived only in part is not waited for: that would hold up every line of the group."""
    if not isinstance(sock, ssl.SSLSocket):
        return lambda: sock.recv(RECV_BYTES)  # readable: it returns at once

    def read() -> bytes | None:
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            return sock.recv(RECV_BYTES)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        finally:
            sock.settimeout(timeout)

    return read
