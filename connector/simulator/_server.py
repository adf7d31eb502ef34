"""The simulator's WebSocket server: a thin asyncio shell around the market's fan-out and the codec.

One clock task drives the market (ticks of every subscribed instrument, order lifecycles); each
connection has a sender task that sends what is due from its queue, heartbeats when idle, and its
faults (drop, stall). Every message is logged once it is sent, or as undelivered if it never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from connector.errors import MalformedFrame
from connector.instruments import Instrument
from connector.kite import KiteError, OrderUpdate, encode_message, encode_text, parse_client_message
from connector.simulator._config import SimulatorConfig
from connector.simulator._fanout import Fanout, LogLine, Outgoing, Subscriber
from connector.simulator._http import ConnectionInfo, SimulatorHttp
from connector.simulator._market import Market

__all__ = ["Simulator", "SimulatorConfig", "running_simulator"]

log = logging.getLogger("connector.simulator")

_T = TypeVar("_T")


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    sub: Subscriber
    opened_at: float
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # something queued, or a drop asked for
    drop_asked: bool = False
    ended: str = "closed"  # why what is still queued never left: closed (by the client), dropped, stopped


class Simulator:
    """Serves Kite's ticker protocol for one api_key; accepted tokens can be added at run time (login)."""

    def __init__(self, config: SimulatorConfig, instruments: list[Instrument]) -> None:
        self.config = config
        self.market = Market(instruments, config.seed)
        self.fanout = Fanout(self.market, config)
        self.valid_tokens = {config.access_token}
        self.connections = 0  # connections accepted so far
        self._open: dict[int, _Connection] = {}
        self._log: IO[str] | None = open(config.sent_log, "a") if config.sent_log else None  # noqa: SIM115
        self._log_lock = threading.Lock()
        self.paused = False  # stops ticks and orders (heartbeats and queued messages go on): tests drain
        self.http: SimulatorHttp | None = None
        self.replayed = 0
        self._finals = 0  # final order updates so far, for order_hide_every
        self._stopping = False  # set on shutdown: senders finish their message and return
        self._senders: set[asyncio.Task[None]] = set()
        self._drained = asyncio.Event()  # a connection's queue ran empty (paces SIM_RATE=0)
        self._loop: asyncio.AbstractEventLoop | None = None
        if config.http_port is not None:
            self.http = SimulatorHttp(
                config.host,
                config.http_port,
                config.api_key,
                config.api_secret,
                instruments,
                self.valid_tokens.add,
                self.valid_tokens.__contains__,
                lambda: list(self.market.order_book.values()),
                self.open_connections,
                self.drop,
            )
            log.info("Kite REST (login, instruments, orders) on http://%s:%d", config.host, self.http.port)

    # -- handshake -------------------------------------------------------------------------------------
    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        api_key = query.get("api_key", [""])[0]
        token = query.get("access_token", [""])[0]
        if api_key != self.config.api_key or token not in self.valid_tokens:
            # Kite answers a bad or expired token at the handshake, before any WebSocket frame.
            return Response(
                HTTPStatus.FORBIDDEN.value, "Forbidden", Headers(), b"invalid api_key or access_token"
            )
        return None

    # -- a connection ----------------------------------------------------------------------------------
    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        c = _Connection(ws, self.fanout.open(self.connections), time.time())
        conn_id = c.sub.conn
        self._open[conn_id] = c
        self._record(conn_id, "connect", {"slot": c.sub.slot, "at": c.opened_at})
        loop = self._replay_loop if self.config.replay_ticks else self._send_loop
        sender = asyncio.create_task(loop(c))
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)
        try:
            async for message in ws:
                await self._on_client_message(c, message)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
            del self._open[conn_id]
            ended = self._ended(c)
            lines = [line for out in self.fanout.close(conn_id) for line in out.unsent(ended)]
            lines.append(("disconnect", {"slot": c.sub.slot, "at": time.time(), "reason": ended}))
            self._record_all(conn_id, lines)

    def _ended(self, c: _Connection) -> str:
        return "stopped" if self._stopping else c.ended

    async def _on_client_message(self, c: _Connection, message: str | bytes) -> None:
        try:
            request = parse_client_message(message)
        except MalformedFrame as exc:
            await c.ws.send(encode_text(KiteError(f"invalid message: {exc.reason}")))
            return
        known = tuple(t for t in request.tokens if self.market.ensure(t))
        if len(known) < len(request.tokens):
            bad = sorted(set(request.tokens) - set(known))
            log.warning("not instrument tokens (no Kite segment in the low byte), ignored: %s", bad[:10])
        error = self.fanout.apply(c.sub, request._replace(tokens=known))
        if error is not None:
            await c.ws.send(encode_text(error))

    # -- the market clock ------------------------------------------------------------------------------
    async def _clock(self) -> None:
        """Every subscribed instrument ticks once per interval, and orders move on, while a connection
        is open and the simulator is not paused; the ticks and updates are queued on each connection."""
        cfg, fanout = self.config, self.fanout
        next_cycle = last_order = time.monotonic()
        while True:
            now = time.monotonic()
            live = bool(self._open) and not self.paused
            if live and cfg.order_rate and now - last_order >= 1 / cfg.order_rate:
                last_order = now
                self._publish(self.market.place_order(time.time()), now)
            if live:
                for update in self.market.due_orders(time.time()):
                    self._publish(update, now)
            interval = fanout.interval()
            # With no interval (SIM_RATE=0), the next cycle waits until a connection has sent the last.
            ready = live and fanout.subscribed and (interval > 0 or fanout.idle())
            if not (live and fanout.subscribed):
                next_cycle = now  # start at once when something is subscribed
            elif ready and now >= next_cycle:
                self._cycle(now)
                next_cycle = max(next_cycle + interval, now - 1.0)
            # Look again by the next cycle, within 50 ms (orders), or when a connection runs dry.
            wake = min(next_cycle, now + 0.05) if ready else now + 0.05
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), max(0.0, wake - time.monotonic()))

    def _cycle(self, now: float) -> None:
        refused = self.fanout.cycle(now, time.time())
        for sub, out in refused:
            self._record_all(sub.conn, out.unsent("backlog"))
        self._wake_senders()

    def _publish(self, update: OrderUpdate, now: float) -> None:
        if self._hidden(update):
            # Never on the socket: only GET /orders shows it, as when Kite misses a postback.
            self._record(None, "order_update_hidden", update.to_json_dict())
            return
        self.fanout.order(update, now)
        self._wake_senders()

    def _wake_senders(self) -> None:
        for c in self._open.values():
            c.wake.set()

    def _hidden(self, update: OrderUpdate) -> bool:
        # Only final states: they stay the latest in the order book, so a reconciler can recover them.
        every = self.config.order_hide_every
        if every <= 0 or update.status == "OPEN":
            return False
        self._finals += 1
        return self._finals % every == 0

    # -- a connection's sender -------------------------------------------------------------------------
    async def _send_loop(self, c: _Connection) -> None:
        cfg, sub = self.config, c.sub
        started = last_sent = time.monotonic()
        never = float("inf")
        next_drop = started + cfg.drop_every if cfg.drop_every and sub.faulty else never
        next_stall = started + cfg.stall_every if cfg.stall_every and sub.faulty else never
        while not self._stopping:
            now = time.monotonic()
            if c.drop_asked or now >= next_drop:
                log.info("connection %d: dropping (fault injection)", sub.conn)
                c.ended = "dropped"
                await self._drop(c.ws)
                return
            if now >= next_stall:
                next_stall = now + cfg.stall_every + cfg.stall_seconds
                await asyncio.sleep(cfg.stall_seconds)  # what is queued meanwhile waits, up to the backlog
                continue
            out = sub.pop_due(now)
            if out is not None:
                await self._send(c, out)
                last_sent = time.monotonic()
                if not sub.queue:
                    self._drained.set()
                continue
            if now - last_sent >= 1.0:
                await c.ws.send(b"\x00")  # heartbeat, as Kite sends when idle
                last_sent = now
                continue
            c.wake.clear()
            wake = min(sub.next_due(), last_sent + 1.0, next_drop, next_stall)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.wake.wait(), max(0.0, wake - now))

    async def _send(self, c: _Connection, out: Outgoing) -> None:
        try:
            await c.ws.send(out.data)
        except (ConnectionClosed, asyncio.CancelledError):
            self._record_all(c.sub.conn, out.unsent(self._ended(c)))
            raise
        self._record_all(c.sub.conn, out.sent())

    async def _drop(self, ws: ServerConnection) -> None:
        """Cut the TCP connection with no close frame, once what was sent has left for the kernel (so
        the sent log holds what the client can still read; the kernel delivers it before the FIN)."""
        deadline = time.monotonic() + 2
        while ws.transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        ws.transport.abort()

    async def _replay_loop(self, c: _Connection) -> None:
        """Benchmark feed: messages encoded once, then sent back to back so the source is never the limit.
        No market clock, faults or sent log."""
        cfg = self.config
        while not c.sub.modes:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # let mode messages that follow the subscription arrive
        wall = time.time()
        sent, started, cycle = 0, time.monotonic(), 0
        while sent < cfg.replay_ticks:
            for data, batch in self.fanout.replay(c.sub, wall, cycle):
                left = cfg.replay_ticks - sent
                if left <= 0:
                    break
                if len(batch) > left:  # the last message carries exactly what is left
                    data, batch = encode_message(batch[:left]), batch[:left]
                await c.ws.send(data)
                sent += len(batch)
                if cfg.max_rate > 0:
                    ahead = started + sent / cfg.max_rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            cycle += 1
        self.replayed += sent
        log.info("connection %d: replayed %d ticks in %.1f s", c.sub.conn, sent, time.monotonic() - started)
        while not self._stopping:
            await c.ws.send(b"\x00")
            await asyncio.sleep(1)

    # -- control, from any thread (tests, and the loopback-only /control endpoints) --------------------
    def open_connections(self) -> list[ConnectionInfo]:
        return self._call(
            lambda: [
                ConnectionInfo(c.sub.conn, c.sub.slot, c.opened_at, len(c.sub.modes))
                for c in self._open.values()
            ]
        )

    def drop(self, conn: int) -> bool:
        """Cut connection ``conn`` as SIM_DROP_EVERY does (what is queued for it is logged undelivered);
        False if no such connection is open."""

        def ask() -> bool:
            c = self._open.get(conn)
            if c is not None:
                c.drop_asked = True
                c.wake.set()
            return c is not None

        return self._call(ask)

    def _call(self, func: Callable[[], _T]) -> _T:
        """Run ``func`` on the simulator's event loop, which owns the connections (from another thread)."""
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError("the simulator is not serving")

        async def run() -> _T:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    # -- the sent log ----------------------------------------------------------------------------------
    def _record(self, conn_id: int | None, kind: str, body: dict[str, Any]) -> None:
        self._record_all(conn_id, [(kind, body)])

    def _record_all(self, conn_id: int | None, lines: list[LogLine]) -> None:
        """Log what was just sent (or not), flushed at once: a stop or a crash of this process never
        leaves a message sent but unlogged or a line cut in half (one write per message, whole lines)."""
        if self._log is None or not lines:
            return
        text = "".join(json.dumps({"kind": kind, "conn": conn_id, **body}) + "\n" for kind, body in lines)
        with self._log_lock:
            if self._log is not None:  # not closed meanwhile (a stop that outlasted its wait)
                self._log.write(text)
                self._log.flush()

    def flush_log(self) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.flush()

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        if self._log is not None:
            with self._log_lock:
                self._log.close()
                self._log = None

    async def serve(self, ready: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        async with serve(
            self.handle,
            self.config.host,
            self.config.port,
            process_request=self.process_request,
            ping_interval=None,  # Kite keeps connections alive with 1-byte heartbeats, not pings
            max_size=2**20,
        ) as server:
            self._bound_port = _port_of(server)
            log.info("Kite simulator listening on ws://%s:%d", self.config.host, self._bound_port)
            clock = None if self.config.replay_ticks else asyncio.create_task(self._clock())
            if ready is not None:
                ready.set()
            await (stop.wait() if stop is not None else asyncio.Future())
            # Clean stop: the market stops, every sender finishes the message it is on (so the log
            # matches the socket), then leaving this block closes each connection with a close frame;
            # what was still queued is logged as undelivered ("stopped").
            self._stopping = True
            if clock is not None:
                clock.cancel()
            self._wake_senders()
            if self._senders:
                await asyncio.wait(set(self._senders), timeout=5)
            log.info("Kite simulator stopping: %d connection(s) closed", len(server.connections))

    @property
    def port(self) -> int:
        return self._bound_port


def _port_of(server: Server) -> int:
    port: int = next(iter(server.sockets)).getsockname()[1]
    return port


@contextlib.contextmanager
def running_simulator(config: SimulatorConfig, instruments: list[Instrument]) -> Iterator[Simulator]:
    """Run a simulator on a background thread (its own event loop) for tests and benchmarks."""
    sim = Simulator(config, instruments)
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(sim.serve(ready, stop),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("simulator did not start")
    try:
        yield sim
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        sim.close()
