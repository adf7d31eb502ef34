"""The GET /orders client against a loopback stand-in for Kite's REST API: headers, parsing, every failure."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connector._http import reply
from connector.errors import AuthError, KiteApiError
from connector.kite import parse_text
from connector.orders import fetch_orders

pytestmark = pytest.mark.integration
TOKEN = "s3cr3t-access-token"


@dataclass
class Kite:
    """A loopback stand-in for Kite's REST API: answers GET /orders with what the test sets."""

    url: str
    code: int = 200
    body: bytes = b""
    hold: threading.Event = field(default_factory=threading.Event)
    requests: list[dict[str, str]] = field(default_factory=list)

    def answer(self, code: int, doc: Any) -> None:
        self.code, self.body = code, json.dumps(doc).encode()


@pytest.fixture
def kite() -> Iterator[Kite]:
    state = Kite("")
    state.hold.set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append({"path": self.path, **self.headers})
            state.hold.wait(10)
            reply(self, state.code, state.body, "application/json")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.hold.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_orders_are_fetched_with_kites_headers_and_parsed_like_socket_updates(
    kite: Kite, postback: dict[str, Any]
) -> None:
    rest = {
        k: v for k, v in postback.items() if k not in ("checksum", "user_id", "app_id", "unfilled_quantity")
    }
    rest |= {"order_id": "2", "status": "OPEN", "modified": False, "auction_number": None}
    bad = {**postback, "order_id": "3", "quantity": "ten"}
    kite.answer(200, {"status": "success", "data": [postback, rest, bad, "not an order"]})

    fetched = fetch_orders(kite.url + "/", "key1", TOKEN, timeout=5)

    (request,) = kite.requests
    assert request["path"] == "/orders"
    assert request["X-Kite-Version"] == "3"
    assert request["Authorization"] == f"token key1:{TOKEN}"
    socket_update = parse_text(json.dumps({"type": "order", "data": postback}))
    assert fetched.orders[0].update == socket_update
    assert parse_text(fetched.orders[0].frame) == socket_update, "the frame kept is the order as read"
    second = fetched.orders[1].update
    assert (second.order_id, second.status, second.checksum, second.user_id) == ("2", "OPEN", None, None)
    assert second.extra == {"modified": "false", "auction_number": "null"}  # REST-only fields kept
    assert second.filled_quantity == 1 and second.order_timestamp_ms == socket_update.order_timestamp_ms
    assert [m.reason for m in fetched.malformed] == [
        "order update has a bad field: invalid literal for int() with base 10: 'ten'",
        "an order in GET /orders is not a JSON object",
    ]
    # What could not be read is kept as a text frame the connector's decoder reads (for dead letters).
    assert json.loads(fetched.malformed[0].raw) == {"type": "order", "data": bad}


def test_an_expired_token_is_an_auth_error_without_the_token(kite: Kite) -> None:
    kite.answer(
        403,
        {"status": "error", "error_type": "TokenException", "message": f"Incorrect access_token {TOKEN}"},
    )
    with pytest.raises(AuthError, match="expired or was revoked; run `kite-connector login`") as caught:
        fetch_orders(kite.url, "key1", TOKEN, timeout=5)
    assert TOKEN not in str(caught.value)
    assert "TokenException" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "body", "message"),
    [
        (429, {"status": "error", "error_type": "NetworkException", "message": "Too many requests"},
         r"HTTP 429 NetworkException: Too many requests"),
        (502, "<html>bad gateway</html>", r"HTTP 502 Bad Gateway: Bad Gateway"),
        (200, {"status": "error", "message": "?"}, r"without Kite's .*check KITE_API_URL"),
        (200, {"status": "success", "data": {"order_id": "1"}}, r"without Kite's"),
    ],
)  # fmt: skip
def test_other_failures_are_kite_api_errors_that_say_what_failed(
    kite: Kite, code: int, body: Any, message: str
) -> None:
    kite.answer(code, body)
    with pytest.raises(KiteApiError, match=message):
        fetch_orders(kite.url, "key1", TOKEN, timeout=5)


def test_an_answer_that_is_not_json_is_a_kite_api_error(kite: Kite) -> None:
    kite.code, kite.body = 200, b"<html>captive portal</html>"
    with pytest.raises(KiteApiError, match="not JSON"):
        fetch_orders(kite.url, "key1", TOKEN, timeout=5)


def test_a_server_that_does_not_answer_in_time_is_a_timeout(kite: Kite) -> None:
    kite.answer(200, {"status": "success", "data": []})
    kite.hold.clear()
    with pytest.raises(KiteApiError, match=r"cannot reach .*/orders: timed out"):
        fetch_orders(kite.url, "key1", TOKEN, timeout=0.3)


def test_nothing_listening_and_a_bad_url_are_kite_api_errors() -> None:
    with socket.socket() as probe:  # a loopback port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(KiteApiError, match=rf"cannot reach http://127.0.0.1:{port}/orders: .*refused"):
        fetch_orders(f"http://127.0.0.1:{port}", "key1", TOKEN, timeout=5)
    with pytest.raises(KiteApiError, match="check KITE_API_URL"):
        fetch_orders("api.kite.trade", "key1", TOKEN, timeout=5)
