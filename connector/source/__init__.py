"""Kite WebSocket listener threads: connect, subscribe, read, reconnect."""

from connector.source._group import LineGroup
from connector.source._listener import KiteListener, MessageHandler, TokenSource, backoff

__all__ = ["KiteListener", "LineGroup", "MessageHandler", "TokenSource", "backoff"]
