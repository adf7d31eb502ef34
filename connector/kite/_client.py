"""Messages the client sends: subscribe, unsubscribe, mode; and their parser (for the simulator)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from connector.errors import MalformedFrame
from connector.kite._records import Mode

__all__ = [
    "MAX_TOKENS_PER_CONNECTION",
    "ClientRequest",
    "mode_message",
    "parse_client_message",
    "subscribe_message",
    "unsubscribe_message",
]

MAX_TOKENS_PER_CONNECTION = 3000


class ClientRequest(NamedTuple):
    """A decoded client message: ``action`` is subscribe, unsubscribe or mode."""

    action: str
    tokens: tuple[int, ...]
    mode: Mode | None = None


def _tokens(tokens: Iterable[int]) -> list[int]:
    return [int(t) for t in tokens]


def subscribe_message(tokens: Iterable[int]) -> str:
    return json.dumps({"a": "subscribe", "v": _tokens(tokens)})


def unsubscribe_message(tokens: Iterable[int]) -> str:
    return json.dumps({"a": "unsubscribe", "v": _tokens(tokens)})


def mode_message(mode: Mode | str, tokens: Iterable[int]) -> str:
    return json.dumps({"a": "mode", "v": [str(Mode(mode)), _tokens(tokens)]})


def _token_tuple(value: Any, raw: bytes) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise MalformedFrame("expected a list of integer instrument tokens", raw)
    return tuple(value)


def parse_client_message(data: str | bytes) -> ClientRequest:
    """Decode a client message; raises :class:`MalformedFrame` for anything else."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedFrame(f"client message is not JSON: {exc}", raw) from exc
    if not isinstance(msg, dict) or "a" not in msg or "v" not in msg:
        raise MalformedFrame('client message needs "a" and "v"', raw)
    action, value = msg["a"], msg["v"]
    if action in ("subscribe", "unsubscribe"):
        return ClientRequest(action, _token_tuple(value, raw))
    if action == "mode":
        if not isinstance(value, list) or len(value) != 2 or value[0] not in set(Mode):
            raise MalformedFrame('mode message needs ["ltp"|"quote"|"full", [tokens]]', raw)
        return ClientRequest("mode", _token_tuple(value[1], raw), Mode(value[0]))
    raise MalformedFrame(f"unknown client action {action!r}", raw)
