"""Structured logging: one JSON object per line (default) or plain text, on stderr."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

__all__ = ["SampledLog", "redact", "sample", "setup_logging"]

_NUMBERS = re.compile(r"\d+")


def redact(text: str, *secrets: str) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class SampledLog(logging.Filter):
    """Lets the first of a kind of message through, then one per ``interval`` with how many were held back.

    Messages of a kind differ only in their numbers (sizes, ports, offsets): a storm of malformed frames or
    a broker outage writes a line every ``interval`` seconds per kind, not one per event.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._clock = time.monotonic
        self._kinds: dict[str, tuple[float, int]] = {}  # kind → (when last let through, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        kind = f"{record.name}:{record.levelno}:{_NUMBERS.sub('#', text)}"
        now = self._clock()
        last, held = self._kinds.get(kind, (-self.interval, 0))
        if now - last < self.interval:
            self._kinds[kind] = (last, held + 1)
            return False
        if len(self._kinds) > 1000:  # kinds are few; this only bounds memory against odd messages
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        if held:
            record.msg = f"{text} ({held} more like it in the last {now - last:.0f} s)"
            record.args = None
        return True


def sample(logger: logging.Logger, interval: float = 10.0) -> logging.Logger:
    """``logger`` with a :class:`SampledLog` filter (added once)."""
    if not any(isinstance(f, SampledLog) for f in logger.filters):
        logger.addFilter(SampledLog(interval))
    return logger


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The WebSocket libraries can log handshake URLs, which carry the access token: never below WARNING.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("websocket").setLevel(logging.WARNING)
    # The Schema Registry client's HTTP library logs every request URL, which may carry user:password.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
