"""The simulator's REST side: Kite's session endpoint (login), the instruments dump and the order book,
plus test controls (``/control/...``) answered only to loopback clients."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connector._http import reply
from connector.instruments import Instrument
from connector.kite import OrderUpdate

__all__ = ["ConnectionInfo", "SimulatorHttp", "order_book_entry"]

# Fields of the order-update postback that Kite's order book (GET /orders) does not carry.
_POSTBACK_ONLY = ("user_id", "app_id", "checksum", "unfilled_quantity")

_COLUMNS = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,"
    "instrument_type,segment,exchange"
)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """An open WebSocket connection, as ``GET /control/connections`` lists it."""

    conn: int  # its id in the sent log
    slot: int  # its connection number (what SIM_FAULT_CONNECTIONS names)
    opened_at: float  # unix time
    instruments: int


def _csv(instruments: list[Instrument]) -> bytes:
    rows = [_COLUMNS]
    for i in instruments:
        rows.append(
            f"{i.instrument_token},{i.instrument_token >> 8},{i.tradingsymbol},{i.name},{i.last_price},,0.0,"
            f"{i.tick_size},{i.lot_size},{i.instrument_type},{i.segment},{i.exchange}"
        )
    return ("\n".join(rows) + "\n").encode()


def order_book_entry(update: OrderUpdate) -> dict[str, Any]:
    """One order as Kite's ``GET /orders`` lists it: the postback's fields (IST time strings, ``meta``
    object) less the postback-only ones, plus ``modified`` and ``validity_ttl``."""
    entry = update.to_kiteconnect()
    for name in _POSTBACK_ONLY:
        entry.pop(name, None)
    entry.setdefault("modified", False)
    entry.setdefault("validity_ttl", 0)
    return entry


class SimulatorHttp:
    """``POST /session/token`` checks the SHA-256 checksum and issues a token the ticker then accepts;
    ``GET /instruments`` serves the instruments as Kite's CSV dump and ``GET /orders`` the day's orders
    in their latest state (``{"status": "success", "data": [...]}``), both behind Kite's
    ``Authorization: token api_key:access_token`` header.

    Test controls, for loopback clients only (403 for others): ``GET /control/connections`` lists the
    open WebSocket connections; ``POST /control/drop?conn=ID`` (or ``?slot=N``, a connection number)
    cuts one as the drop fault does."""

    def __init__(
        self,
        host: str,
        port: int,
        api_key: str,
        api_secret: str,
        instruments: list[Instrument],
        issue_token: Callable[[str], None],
        valid: Callable[[str], bool],
        orders: Callable[[], list[OrderUpdate]] = list,
        connections: Callable[[], list[ConnectionInfo]] = list,
        drop: Callable[[int], bool] = lambda conn: False,
    ) -> None:
        dump = _csv(instruments)

        def control(method: str, path: str, query: dict[str, str]) -> tuple[int, dict[str, object]]:
            if (method, path) == ("GET", "/control/connections"):
                return 200, {"status": "success", "data": [asdict(c) for c in connections()]}
            if (method, path) != ("POST", "/control/drop"):
                return 404, {"status": "error", "message": "not found"}
            by = "slot" if "slot" in query else "conn"
            try:
                wanted = int(query[by])
            except (KeyError, ValueError):
                return 400, {"status": "error", "message": "give conn=<id> or slot=<number>"}
            conn = next((c.conn for c in connections() if getattr(c, by) == wanted), None)
            if conn is None or not drop(conn):
                return 404, {"status": "error", "message": f"no open connection with {by} {wanted}"}
            return 200, {"status": "success", "data": {"conn": conn}}

        class Handler(BaseHTTPRequestHandler):
            def _control(self) -> bool:
                """Answer a /control request (True), to loopback clients only."""
                parts = urlsplit(self.path)
                if not parts.path.startswith("/control/"):
                    return False
                if not ipaddress.ip_address(self.client_address[0]).is_loopback:
                    self._json(403, {"status": "error", "message": "controls answer loopback clients only"})
                    return True
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                try:
                    self._json(*control(self.command, parts.path, query))
                except RuntimeError as exc:  # before the WebSocket server runs, or after it stopped
                    self._json(503, {"status": "error", "message": str(exc)})
                return True

            def do_POST(self) -> None:
                if self._control():
                    return
                if self.path != "/session/token":
                    return self._json(404, {"status": "error", "message": "not found"})
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                request_token = form.get("request_token", "")
                expected = hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()
                if (
                    form.get("api_key") != api_key
                    or not request_token
                    or not hmac.compare_digest(form.get("checksum", ""), expected)
                ):
                    return self._json(
                        403,
                        {"status": "error", "error_type": "TokenException", "message": "Invalid `checksum`."},
                    )
                token = "sim-" + secrets.token_hex(16)
                issue_token(token)
                self._json(
                    200,
                    {
                        "status": "success",
                        "data": {
                            "user_id": "SIM001",
                            "api_key": api_key,
                            "access_token": token,
                            "public_token": secrets.token_hex(8),
                            "login_time": "2026-01-01 09:00:00",
                        },
                    },
                )

            def do_GET(self) -> None:
                if self._control():
                    return
                path = self.path.split("?")[0]
                if path not in ("/instruments", "/orders"):
                    return self._json(404, {"status": "error", "message": "not found"})
                auth = self.headers.get("Authorization", "")
                key, _, token = auth.removeprefix("token ").partition(":")
                if key != api_key or not valid(token):
                    return self._json(
                        403,
                        {
                            "status": "error",
                            "error_type": "TokenException",
                            "message": "Incorrect `api_key` or `access_token`.",
                        },
                    )
                if path == "/orders":
                    return self._json(
                        200, {"status": "success", "data": [order_book_entry(u) for u in orders()]}
                    )
                reply(self, 200, dump, "text/csv")

            def _json(self, code: int, body: dict[str, object]) -> None:
                reply(self, code, json.dumps(body).encode(), "application/json")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="simulator-http", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
