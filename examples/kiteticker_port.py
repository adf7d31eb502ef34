"""The official KiteTicker example, ported: two changed lines (the import and, optionally, `kafka=`).

Callbacks print ticks and order updates from the listener thread while the main thread keeps working.
Run against the simulator:
    kite-connector simulate &        # or docker compose
    KITE_API_KEY=simulator KITE_ACCESS_TOKEN=simulator-token KITE_WS_URL=ws://127.0.0.1:8765 \
        python examples/kiteticker_port.py
Set KAFKA_BOOTSTRAP_SERVERS to also write every tick and order update to Kafka.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from connector.ticker import KafkaOutput, KiteTicker  # was: from kiteconnect import KiteTicker

logging.basicConfig(level=logging.INFO)
TOKENS = [int(t) for t in os.environ.get("EXAMPLE_TOKENS", "256265,3813889,4645121").split(",")]
SECONDS = float(os.environ.get("EXAMPLE_SECONDS", "10"))


_stdout = threading.Lock()  # print() writes text and newline separately, so two threads could share a line


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "thread": threading.current_thread().name, **fields})
    with _stdout:
        print(line, flush=True)


bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
kws = KiteTicker(
    os.environ["KITE_API_KEY"],
    os.environ["KITE_ACCESS_TOKEN"],
    root=os.environ.get("KITE_WS_URL"),
    kafka=KafkaOutput(bootstrap) if bootstrap else None,
)


def on_ticks(ws: KiteTicker, ticks: list[Any]) -> None:
    for tick in ticks:
        emit("tick", token=tick.instrument_token, last_price=tick.last_price, mode=str(tick.mode))


def on_connect(ws: KiteTicker, response: Any) -> None:
    ws.subscribe(TOKENS)
    ws.set_mode(ws.MODE_FULL, TOKENS)


def on_order_update(ws: KiteTicker, data: Any) -> None:
    emit("order", order_id=data.order_id, status=data.status)


def on_close(ws: KiteTicker, code: int, reason: str) -> None:
    emit("close", code=code, reason=reason)


kws.on_ticks = on_ticks
kws.on_connect = on_connect
kws.on_order_update = on_order_update
kws.on_close = on_close
kws.connect(threaded=True)

deadline = time.monotonic() + SECONDS
while time.monotonic() < deadline:  # the main thread is free for other work
    emit("main", connected=kws.is_connected())
    time.sleep(0.5)
kws.close()
emit("done", callback_errors=kws.callback_errors)
