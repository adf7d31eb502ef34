"""Kite Connect ticker protocol: pure functions over bytes and text, no I/O.

Server → client: :func:`parse_binary` (tick packets) and :func:`parse_text` (order updates, errors,
messages). Client → server: :func:`subscribe_message`, :func:`unsubscribe_message`, :func:`mode_message`
and their inverse :func:`parse_client_message`. The encoders (:func:`encode_message`, :func:`encode_text`)
produce what Kite would send, for the simulator and tests. The byte layout is declared once, in
``_layout.py``, from which the Python and C code are derived; ``docs/protocol.md`` shows it.
"""

from connector.kite._binary import encode_message, encode_packet, parse_binary
from connector.kite._client import (
    MAX_TOKENS_PER_CONNECTION,
    ClientRequest,
    mode_message,
    parse_client_message,
    subscribe_message,
    unsubscribe_message,
)
from connector.kite._ids import packet_ids
from connector.kite._records import (
    EXCHANGES,
    INDICES_SEGMENT,
    DepthLevel,
    KiteError,
    KiteMessage,
    Mode,
    OrderUpdate,
    Tick,
    exchanges_of,
    pack_depth,
    price_divisor,
)
from connector.kite._text import encode_text, parse_text

__all__ = [
    "EXCHANGES",
    "INDICES_SEGMENT",
    "MAX_TOKENS_PER_CONNECTION",
    "ClientRequest",
    "DepthLevel",
    "KiteError",
    "KiteMessage",
    "Mode",
    "OrderUpdate",
    "Tick",
    "encode_message",
    "encode_packet",
    "encode_text",
    "exchanges_of",
    "mode_message",
    "pack_depth",
    "packet_ids",
    "parse_binary",
    "parse_client_message",
    "parse_text",
    "price_divisor",
    "subscribe_message",
    "unsubscribe_message",
]
