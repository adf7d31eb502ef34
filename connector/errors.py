"""Every error the connector raises on purpose.

ConnectorError
├── ConfigError            bad or missing configuration; the message names the variable to fix
├── MalformedFrame         a Kite WebSocket message that cannot be decoded (carries the raw bytes)
├── SerializationError     a record that does not fit its Avro schema, or bytes that are not ours
├── RegistryError          the Schema Registry refused a schema, or was not reachable at start-up
├── AuthError              Kite refused the api_key / access_token (HTTP 403), or the login failed
├── SourceError            the WebSocket connection broke the protocol; the listener connects again
├── SinkError              Kafka refused or could not take a record
├── OrderLogError          the local order-update log cannot be opened or written (locked, disk full)
└── KiteApiError           Kite's REST API could not be reached or answered something unexpected

Interrupted (a KeyboardInterrupt, not a ConnectorError): SIGTERM or SIGINT while a command starts.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "ConnectorError",
    "Interrupted",
    "KiteApiError",
    "MalformedFrame",
    "OrderLogError",
    "RegistryError",
    "SerializationError",
    "SinkError",
    "SourceError",
]


class ConnectorError(Exception):
    """Base class of the connector's own errors."""


class ConfigError(ConnectorError):
    """Configuration that cannot work; the message says what to change."""


class MalformedFrame(ConnectorError):
    """A WebSocket message from Kite that the codec cannot decode.

    ``raw`` holds the bytes as received, so the frame can be dead-lettered and replayed later.
    """

    def __init__(self, reason: str, raw: bytes, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{reason}{where} ({len(raw)} bytes)")
        self.reason = reason
        self.raw = raw
        self.offset = offset


class SerializationError(ConnectorError):
    """A record could not be written with, or bytes could not be read by, an Avro schema."""


class RegistryError(ConnectorError):
    """The Schema Registry refused a schema (the message names the subject and its reason), or did not
    answer within SCHEMA_REGISTRY_TIMEOUT_SECONDS at start-up."""


class AuthError(ConnectorError):
    """Kite rejected the credentials; a new access token is needed (run `kite-connector login`)."""


class SourceError(ConnectorError):
    """The WebSocket peer sent something RFC 6455 forbids; the connection is dropped and opened again."""


class SinkError(ConnectorError):
    """Kafka could not take or acknowledge a record."""


class OrderLogError(ConnectorError):
    """The local log of order updates cannot be opened, locked or written; nothing was appended."""


class KiteApiError(ConnectorError):
    """A Kite REST call failed (unreachable, HTTP error, or an answer that is not Kite's format)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT while a command starts: whatever it waits for (Kafka, the registry), it ends now,
    with exit status 128 + the signal's number. Once started, a signal asks for a clean stop instead."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum} during start-up")
        self.signum = signum
