"""Text messages: JSON ``{"type": ..., "data": ...}`` from Kite, and their encoder."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from connector.errors import MalformedFrame
from connector.kite._records import IST, KITE_TIME_FORMAT, KiteError, KiteMessage, OrderUpdate

__all__ = ["encode_text", "parse_text"]

_TIME_FIELDS = ("order_timestamp", "exchange_update_timestamp", "exchange_timestamp")
_STR_FIELDS = (
    "user_id", "placed_by", "checksum", "exchange_order_id", "parent_order_id", "status_message",
    "status_message_raw", "variety", "order_type", "transaction_type", "validity", "product", "tag", "guid",
    "tradingsymbol", "exchange",
)  # fmt: skip
_INT_FIELDS = (
    "app_id", "quantity", "disclosed_quantity", "filled_quantity", "pending_quantity",
    "cancelled_quantity", "unfilled_quantity", "instrument_token",
)  # fmt: skip
_FLOAT_FIELDS = ("price", "trigger_price", "average_price", "market_protection")
_MODELLED = frozenset(
    (*_TIME_FIELDS, *_STR_FIELDS, *_INT_FIELDS, *_FLOAT_FIELDS, "order_id", "status", "meta")
)


def parse_text(data: str | bytes) -> OrderUpdate | KiteError | KiteMessage:
    """Decode one text WebSocket message; raises :class:`MalformedFrame` if it is not one Kite sends."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedFrame(f"text message is not JSON: {exc}", raw) from exc
    if not isinstance(msg, dict):
        raise MalformedFrame("text message is not a JSON object", raw)
    kind, body = msg.get("type"), msg.get("data")
    if kind == "order" and isinstance(body, dict):
        try:
            return _order_update(body)
        except (TypeError, ValueError, KeyError) as exc:
            raise MalformedFrame(f"order update has a bad field: {exc}", raw) from exc
    if kind == "error":
        return KiteError(body if isinstance(body, str) else json.dumps(body))
    if kind == "message":
        return KiteMessage(body if isinstance(body, str) else json.dumps(body))
    raise MalformedFrame(f"unknown text message type {kind!r}", raw)


def _time_ms(value: Any) -> int | None:
    if value in (None, ""):
        return None
    parsed = datetime.strptime(str(value), KITE_TIME_FORMAT).replace(tzinfo=IST)
    return int(parsed.timestamp()) * 1000


def _opt(value: Any, kind: type[Any]) -> Any:
    if value is None:
        return None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    if kind is str:
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{value!r} is not a number")
    return kind(value)


def _order_update(body: dict[str, Any]) -> OrderUpdate:
    if "order_id" not in body or "status" not in body:
        raise KeyError("order update without order_id or status")
    fields: dict[str, Any] = {name: _opt(body.get(name), str) for name in _STR_FIELDS}
    fields.update({name: _opt(body.get(name), int) for name in _INT_FIELDS})
    fields.update({name: _opt(body.get(name), float) for name in _FLOAT_FIELDS})
    fields.update({f"{name}_ms": _time_ms(body.get(name)) for name in _TIME_FIELDS})
    meta = body.get("meta")
    return OrderUpdate(
        order_id=str(body["order_id"]),
        status=str(body["status"]),
        meta_json=None if meta is None else json.dumps(meta, sort_keys=True),
        extra={k: json.dumps(v) for k, v in body.items() if k not in _MODELLED},
        **fields,
    )


def encode_text(record: OrderUpdate | KiteError | KiteMessage) -> str:
    """The text message Kite would send for ``record``."""
    if isinstance(record, OrderUpdate):
        return json.dumps({"type": "order", "data": record.to_kiteconnect()})
    kind = "error" if isinstance(record, KiteError) else "message"
    return json.dumps({"type": kind, "data": record.message})
