"""A real WebSocket server that plays a fixed script to every connection: for faults the simulator lacks."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from connector.kite import encode_message, encode_packet, parse_binary
from tests.conftest import fixture_packet

__all__ = ["fresh_ticks_message", "scripted_kite"]


def fresh_ticks_message(tokens: Sequence[int], exchange_ms: int | None = None) -> bytes:
    """One binary message of full-mode ticks (the real captured packet), one per token, timed now (or at
    ``exchange_ms``)."""
    (tick,), _ = parse_binary(encode_message([fixture_packet("ticker_full")]))
    now = exchange_ms or time.time_ns() // 1_000_000 // 1000 * 1000
    return encode_message(
        encode_packet(tick._replace(instrument_token=t, exchange_timestamp_ms=now, last_trade_time_ms=now))
        for t in tokens
    )


@contextlib.contextmanager
def scripted_kite(script: Sequence[bytes | str]) -> Iterator[int]:
    """Yields the port; each connection gets ``script``, then heartbeats each 0.5 s."""

    def handle(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            for message in script:
                ws.send(message)
            while True:
                ws.send(b"\x00")
                time.sleep(0.5)

    with serve(handle, "127.0.0.1", 0, max_size=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port: int = server.socket.getsockname()[1]
            yield port
        finally:
            server.shutdown()
            thread.join(5)
