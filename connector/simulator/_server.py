"""The simulator's WebSocket server: a thin asyncio shell around :class:`Market` and the codec."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from connector.errors import MalformedFrame
from connector.instruments import Instrument
from connector.kite import (
    MAX_TOKENS_PER_CONNECTION,
    KiteError,
    Mode,
    OrderUpdate,
    Tick,
    encode_message,
    encode_text,
    parse_client_message,
)
from connector.simulator._http import SimulatorHttp
from connector.simulator._market import Market

__all__ = ["Simulator", "SimulatorConfig", "running_simulator"]

log = logging.getLogger("connector.simulator")


@dataclass(slots=True)
class SimulatorConfig:
    api_key: str = "simulator"
    access_token: str = "simulator-token"
    api_secret: str = "simulator-secret"
    host: str = "127.0.0.1"
    port: int = 8765
    http_port: int | None = None  # login and instruments endpoints; None: off
    rate: float = 1.0  # ticks per second per subscribed instrument
    max_rate: float = 0.0  # ticks per second per connection in all; 0 = no cap
    packets_per_message: int = 50
    order_rate: float = 0.0  # new orders per second per connection
    drop_every: float = 0.0  # seconds between forced disconnects; 0 = never
    malformed_probability: float = 0.0
    stall_every: float = 0.0  # seconds between stalls; 0 = never
    stall_seconds: float = 0.0
    seed: int = 0
    sent_log: str | None = None  # JSON lines of every record sent
    order_hide_every: int = 0  # >0: every Nth final order update is left out of the socket (GET /orders only)
    replay_ticks: int = 0  # >0: send this many pre-encoded ticks per connection, as fast as max_rate allows


class Simulator:
    """Serves Kite's ticker protocol for one api_key; accepted tokens can be added at run time (login)."""

    def __init__(self, config: SimulatorConfig, instruments: list[Instrument]) -> None:
        self.config = config
        self.market = Market(instruments, config.seed)
        self.valid_tokens = {config.access_token}
        self.connections = 0
        self._log: IO[str] | None = open(config.sent_log, "a") if config.sent_log else None  # noqa: SIM115
        self._log_lock = threading.Lock()
        self.paused = False  # stops ticks and orders (heartbeats go on), so tests can drain the stream
        self.http: SimulatorHttp | None = None
        self.replayed = 0
        self._finals = 0  # final order updates so far, for order_hide_every
        self._stopping = False  # set on shutdown: send loops finish their message and return
        self._senders: set[asyncio.Task[None]] = set()
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
        conn_id = self.connections
        modes: dict[int, Mode] = {}
        loop = self._replay_loop if self.config.replay_ticks else self._send_loop
        self._record(conn_id, "connect", {"at": time.time()})
        sender = asyncio.create_task(loop(ws, conn_id, modes))
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)
        try:
            async for message in ws:
                await self._on_client_message(ws, message, modes)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _on_client_message(
        self, ws: ServerConnection, message: str | bytes, modes: dict[int, Mode]
    ) -> None:
        try:
            request = parse_client_message(message)
        except MalformedFrame as exc:
            await ws.send(encode_text(KiteError(f"invalid message: {exc.reason}")))
            return
        known = [t for t in request.tokens if self.market.ensure(t)]
        if len(known) < len(request.tokens):
            bad = sorted(set(request.tokens) - set(known))
            log.warning("not instrument tokens (no Kite segment in the low byte), ignored: %s", bad[:10])
        if request.action == "unsubscribe":
            for token in known:
                modes.pop(token, None)
            return
        new = [t for t in known if t not in modes]
        if len(modes) + len(new) > MAX_TOKENS_PER_CONNECTION:
            await ws.send(encode_text(KiteError(f"more than {MAX_TOKENS_PER_CONNECTION} instruments")))
            new = new[: MAX_TOKENS_PER_CONNECTION - len(modes)]
        for token in new:
            modes[token] = Mode.QUOTE
        if request.action == "mode" and request.mode is not None:
            for token in known:
                if token in modes:
                    modes[token] = request.mode

    async def _send_loop(self, ws: ServerConnection, conn_id: int, modes: dict[int, Mode]) -> None:
        cfg, market = self.config, self.market
        started = last_sent = last_order = time.monotonic()
        next_drop = started + cfg.drop_every if cfg.drop_every else float("inf")
        next_stall = started + cfg.stall_every if cfg.stall_every else float("inf")
        next_cycle = started
        while not self._stopping:
            now = time.monotonic()
            if now >= next_drop:
                log.info("connection %d: dropping (fault injection)", conn_id)
                await self._drop(ws)
                return
            if now >= next_stall:
                next_stall = now + cfg.stall_every + cfg.stall_seconds
                await asyncio.sleep(cfg.stall_seconds)
                continue
            if self.paused:
                next_cycle = now  # resume at once
            else:
                if cfg.order_rate and now - last_order >= 1 / cfg.order_rate:
                    last_order = now
                    await self._send_orders(ws, conn_id, [market.place_order(time.time())])
                await self._send_orders(ws, conn_id, list(market.due_orders(time.time())))
            ticking = bool(modes) and not self.paused
            if ticking and now >= next_cycle:
                await self._send_ticks(ws, conn_id, [market.tick(t, m) for t, m in list(modes.items())])
                last_sent = time.monotonic()
                next_cycle = max(next_cycle + self._cycle_interval(len(modes)), now - 1.0)
            elif now - last_sent >= 1.0:
                await ws.send(b"\x00")  # heartbeat, as Kite sends when idle
                last_sent = now
            # Idle or paused, look again every 50 ms (for orders and heartbeats), never spin.
            wake = min(next_cycle, now + 0.05) if ticking else now + 0.05
            await asyncio.sleep(max(0.0, wake - time.monotonic()))

    async def _drop(self, ws: ServerConnection) -> None:
        """Cut the TCP connection with no close frame, once what was sent has left for the kernel (so
        the sent log holds what the client can still read; the kernel delivers it before the FIN)."""
        deadline = time.monotonic() + 2
        while ws.transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        ws.transport.abort()

    async def _replay_loop(self, ws: ServerConnection, conn_id: int, modes: dict[int, Mode]) -> None:
        """Benchmark feed: messages encoded once, then sent back to back so the source is never the limit."""
        cfg = self.config
        while not modes:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # let mode messages that follow the subscription arrive
        ticks = [self.market.tick(t, m) for _ in range(20) for t, m in list(modes.items())]
        size = max(1, cfg.packets_per_message)
        batches = [ticks[i : i + size] for i in range(0, len(ticks), size)]
        messages = [(encode_message(batch), len(batch)) for batch in batches]
        sent, started = 0, time.monotonic()
        while sent < cfg.replay_ticks:
            for (data, count), batch in zip(messages, batches, strict=True):
                left = cfg.replay_ticks - sent
                if left <= 0:
                    break
                if count > left:  # the last message carries exactly what is left
                    data, count = encode_message(batch[:left]), left
                await ws.send(data)
                sent += count
                if cfg.max_rate > 0:
                    ahead = started + sent / cfg.max_rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        self.replayed += sent
        log.info("connection %d: replayed %d ticks in %.1f s", conn_id, sent, time.monotonic() - started)
        while not self._stopping:
            await ws.send(b"\x00")
            await asyncio.sleep(1)

    def _cycle_interval(self, subscribed: int) -> float:
        cfg = self.config
        interval = 1 / cfg.rate if cfg.rate > 0 else 0.0
        if cfg.max_rate > 0:
            interval = max(interval, subscribed / cfg.max_rate)
        return interval

    async def _send_ticks(self, ws: ServerConnection, conn_id: int, ticks: list[Tick]) -> None:
        size = max(1, self.config.packets_per_message)
        for i in range(0, len(ticks), size):
            batch = ticks[i : i + size]
            if self._malformed():
                await ws.send(encode_message(batch)[:-3])  # truncated: only the last packet is broken
                lines = [("malformed", {"packets": len(batch)})]
                lines += [("tick", tick.to_json_dict()) for tick in batch[:-1]]
            else:
                await ws.send(encode_message(batch))
                lines = [("tick", tick.to_json_dict()) for tick in batch]
            self._record_all(conn_id, lines)

    async def _send_orders(self, ws: ServerConnection, conn_id: int, updates: list[OrderUpdate]) -> None:
        for update in updates:
            if self._hidden(update):
                # Never on the socket: only GET /orders shows it, as when Kite misses a postback.
                self._record(conn_id, "order_update_hidden", update.to_json_dict())
                continue
            if self._malformed():
                await ws.send('{"type": "order", "data": {broken')
                self._record(conn_id, "malformed", {"text": True})
                continue
            await ws.send(encode_text(update))
            self._record(conn_id, "order", update.to_json_dict())

    def _hidden(self, update: OrderUpdate) -> bool:
        # Only final states: they stay the latest in the order book, so a reconciler can recover them.
        every = self.config.order_hide_every
        if every <= 0 or update.status == "OPEN":
            return False
        self._finals += 1
        return self._finals % every == 0

    def _malformed(self) -> bool:
        p = self.config.malformed_probability
        return p > 0 and self.market.rng.random() < p

    def _record(self, conn_id: int, kind: str, body: dict[str, Any]) -> None:
        self._record_all(conn_id, [(kind, body)])

    def _record_all(self, conn_id: int, lines: list[tuple[str, dict[str, Any]]]) -> None:
        """Log what was just sent, flushed at once: a stop or a crash of this process never leaves a
        message sent but unlogged or a line cut in half (one write per message, whole lines)."""
        if self._log is None:
            return
        text = "".join(json.dumps({"kind": kind, "conn": conn_id, **body}) + "\n" for kind, body in lines)
        with self._log_lock:
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
            self._log.close()
            self._log = None

    async def serve(self, ready: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
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
            if ready is not None:
                ready.set()
            await (stop.wait() if stop is not None else asyncio.Future())
            # Clean stop: every send loop finishes the message it is on (so the log matches the
            # socket), then leaving this block closes each connection with a close frame.
            self._stopping = True
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
