"""Kite's order book over REST (``GET /orders``): fetched, and parsed by the same decoder as the socket."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import NamedTuple, cast

from connector.errors import AuthError, KiteApiError, MalformedFrame
from connector.kite import OrderUpdate, parse_text
from connector.logs import redact

__all__ = ["MAX_ORDERS_BODY", "FetchedOrder", "OrderList", "fetch_orders", "parse_orders"]

MAX_ORDERS_BODY = 64 << 20  # far above a day's order book; a larger answer is not Kite's


class FetchedOrder(NamedTuple):
    """An order of the book, and the text frame it was read from (its identity, and its dead letter)."""

    update: OrderUpdate
    frame: bytes


class OrderList(NamedTuple):
    """``GET /orders`` parsed: the orders, and those that could not be read (for the dead-letter topic).

    Each order is kept as an order-update text frame (sorted keys), which the connector's own decoder
    reads: the same state fetched again gives the same bytes, so the same record id.
    """

    orders: list[FetchedOrder]
    malformed: list[MalformedFrame]


def parse_orders(body: bytes) -> OrderList:
    """Kite's ``{"status": "success", "data": [order, ...]}``; each order has the postback's fields."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KiteApiError(f"GET /orders answered with something that is not JSON ({exc})") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("status") != "success" or not isinstance(data, list):
        raise KiteApiError(
            'GET /orders answered without Kite\'s {"status": "success", "data": [...]}: '
            "check KITE_API_URL points at Kite's REST API"
        )
    orders: list[FetchedOrder] = []
    malformed: list[MalformedFrame] = []
    for element in data:
        frame = json.dumps({"type": "order", "data": element}, sort_keys=True).encode()
        if not isinstance(element, dict):
            malformed.append(MalformedFrame("an order in GET /orders is not a JSON object", frame))
            continue
        try:
            # type "order" with an object always parses to an OrderUpdate, or raises
            orders.append(FetchedOrder(cast(OrderUpdate, parse_text(frame)), frame))
        except MalformedFrame as exc:
            malformed.append(exc)
    return OrderList(orders, malformed)


def fetch_orders(base_url: str, api_key: str, access_token: str, timeout: float = 10.0) -> OrderList:
    """The day's orders from ``{base_url}/orders``.

    Raises :class:`AuthError` when Kite refuses the token, :class:`KiteApiError` for any other failure
    (unreachable, timeout, HTTP error, an answer that is not Kite's). No message carries the token.
    """
    url = f"{base_url.rstrip('/')}/orders"
    try:
        request = urllib.request.Request(
            url, headers={"X-Kite-Version": "3", "Authorization": f"token {api_key}:{access_token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_ORDERS_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise _refused(url, exc, access_token, api_key) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, timed out, cut
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise KiteApiError(
            f"cannot reach {url}: {redact(str(reason), access_token, api_key) or type(reason).__name__}"
        ) from None
    except ValueError as exc:  # urllib's word for a URL it cannot use
        raise KiteApiError(f"cannot fetch orders from {url!r}: {exc}; check KITE_API_URL") from None
    if len(body) > MAX_ORDERS_BODY:
        raise KiteApiError(f"GET {url} answered more than {MAX_ORDERS_BODY >> 20} MiB: not Kite's order book")
    return parse_orders(body)


def _refused(url: str, exc: urllib.error.HTTPError, *secrets: str) -> KiteApiError | AuthError:
    try:
        answer = json.loads(exc.read(1 << 16))
    except (ValueError, OSError):
        answer = None
    answer = answer if isinstance(answer, dict) else {}
    kind = str(answer.get("error_type") or "")
    message = redact(str(answer.get("message") or exc.reason), *secrets)
    if exc.code == 403 or kind == "TokenException":
        return AuthError(
            f"Kite refused the access token for GET {url} (HTTP {exc.code} {kind}: {message}): it has "
            "expired or was revoked; run `kite-connector login` for today's token"
        )
    return KiteApiError(f"GET {url} failed: HTTP {exc.code} {kind or exc.reason}: {message}")
