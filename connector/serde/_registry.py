"""The Schema Registry at start-up: each value schema registered once, its id kept for the whole run.

Subjects follow TopicNameStrategy (``<topic>-value``). A subject the connector creates gets BACKWARD
compatibility, so consumers holding the current schema can read what older connectors wrote; a subject
that already exists keeps the level its owner set (a stricter one is respected, a weaker one is named in
a warning). A schema the registry refuses stops start-up with a :class:`RegistryError` that names the
subject and quotes the registry's reason. After start nothing calls the registry again: the ids are in
the serializers, so a registry outage mid-stream changes nothing.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from connector.errors import RegistryError
from connector.serde._schemas import AvroSchema

__all__ = [
    "BACKWARD_OR_STRICTER",
    "RETRY_SECONDS",
    "check_registry",
    "register_value_schemas",
    "registry_client",
    "shown_url",
]

log = logging.getLogger("connector.serde.registry")

# Levels under which a reader with the newest schema reads every older version it is checked against.
BACKWARD_OR_STRICTER = frozenset({"BACKWARD", "BACKWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"})
RETRY_SECONDS = 1.0
T = TypeVar("T")


def _transport_errors(name: str) -> tuple[type[Exception], ...]:
    """An exception class of the HTTP library under confluent-kafka's client (httpx2 or httpx)."""
    found: list[type[Exception]] = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(getattr(__import__(module), name))
        except ImportError:
            continue
    return tuple(found)


# "No answer" (refused, reset, DNS failure, timeout) is worth waiting for; a URL scheme the client cannot
# speak (also a TransportError) is not.
_UNREACHABLE = _transport_errors("TransportError")
_BAD_URL = _transport_errors("UnsupportedProtocol")
_UNAVAILABLE = frozenset({408, 429, 500, 502, 503, 504})  # the registry answered but cannot serve yet


def shown_url(url: str) -> str:
    """``url`` without any user:password part, for logs and errors."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def registry_client(registry: str | Mapping[str, Any], retries: int = 3) -> Any:
    """confluent-kafka's ``SchemaRegistryClient`` for a URL (``mock://`` gives its in-memory mock), or for
    the ``Registry`` settings' ``client_config()`` (URL, basic auth, CA): the one way every command and
    reader of the project builds it."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    config = {"url": registry} if isinstance(registry, str) else dict(registry)
    return SchemaRegistryClient.new_client({**config, "max.retries": retries})


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "http_status_code", None)
    return status if isinstance(status, int) else None


class _Patient:
    """Calls the registry, waiting while it cannot be reached, until one deadline for all calls."""

    def __init__(
        self, url: str, timeout: float, sleep: Callable[[float], None], clock: Callable[[], float]
    ) -> None:
        self.url, self.timeout, self.sleep, self.clock = shown_url(url), timeout, sleep, clock
        self.deadline = clock() + timeout
        self.waited = False

    def __call__(self, what: Callable[..., T], *args: Any) -> T:
        while True:
            try:
                return what(*args)
            except Exception as exc:
                tls = _tls_failure(exc)
                if tls is not None:  # a certificate that does not verify will not verify later either
                    raise RegistryError(
                        f"TLS: the Schema Registry at {self.url} is not trusted ({tls}): set "
                        "SCHEMA_REGISTRY_CA_LOCATION to the CA that signed its certificate"
                    ) from None
                unreachable = isinstance(exc, _UNREACHABLE) and not isinstance(exc, _BAD_URL)
                if not (unreachable or _status(exc) in _UNAVAILABLE):
                    raise
                reason = f"{type(exc).__name__}: {exc}"
            if self.clock() >= self.deadline:
                raise RegistryError(
                    f"Schema Registry at {self.url} not reachable within {self.timeout:.0f} s ({reason}): "
                    "start it, or fix SCHEMA_REGISTRY_URL (SCHEMA_REGISTRY_TIMEOUT_SECONDS waits longer)"
                )
            if not self.waited:
                log.warning(
                    "Schema Registry at %s not reachable (%s): retrying every %.0f s for up to %.0f s",
                    self.url,
                    reason,
                    RETRY_SECONDS,
                    self.timeout,
                )
                self.waited = True
            self.sleep(min(RETRY_SECONDS, max(0.0, self.deadline - self.clock())))


def _tls_failure(exc: BaseException) -> str | None:
    """Why TLS verification failed somewhere in ``exc``'s chain (the HTTP library wraps the ssl error)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message)
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _refused(exc: Exception, url: str) -> RegistryError:
    """The error that stops start-up when the registry answers with an error."""
    status = _status(exc)
    message = getattr(exc, "error_message", str(exc))
    if status in (401, 403):
        return RegistryError(
            f"Schema Registry at {url} refused the credentials (HTTP {status}): check "
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO (or its _FILE)"
        )
    return RegistryError(f"Schema Registry at {url} failed: HTTP {status}: {message}")


def check_registry(client: Any, url: str, timeout: float = 60.0) -> None:
    """Start-up check of a reader's registry: it answers, and takes the credentials (the writers' check is
    :func:`register_value_schemas`). Waits up to ``timeout`` s for a registry that cannot be reached."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    call = _Patient(url, timeout, time.sleep, time.monotonic)
    try:
        call(client.get_subjects)
    except SchemaRegistryError as exc:
        raise _refused(exc, call.url) from None


def _compatibility(call: _Patient, client: Any, subject: str) -> str:
    """The level that applies to ``subject``: its own, else the registry's global one."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    try:
        level: str = call(client.get_compatibility, subject)
    except SchemaRegistryError as exc:
        if _status(exc) != 404:
            raise
        level = call(client.get_compatibility)
    return level.upper()


def register_value_schemas(
    client: Any,
    schemas: Mapping[str, AvroSchema],
    url: str,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, int]:
    """Subject → schema id, registering each schema under its subject (see the module's docstring).

    Waits up to ``timeout`` seconds in all for a registry that cannot be reached, logging that once.
    """
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    call = _Patient(url, timeout, sleep, clock)
    try:
        existing = set(call(client.get_subjects))
        ids: dict[str, int] = {}
        for subject, schema in schemas.items():
            level = _compatibility(call, client, subject) if subject in existing else None
            try:
                ids[subject] = int(call(client.register_schema, subject, Schema(schema.text, "AVRO")))
            except SchemaRegistryError as exc:
                if _status(exc) == 409:
                    raise RegistryError(
                        f"Schema Registry refused {schema.name} under subject {subject!r} as incompatible "
                        f"(compatibility {level}): {exc.error_message}. Evolve the schema compatibly, or "
                        "write to a new topic"
                    ) from None
                raise RegistryError(
                    f"Schema Registry refused {schema.name} under subject {subject!r}: "
                    f"HTTP {_status(exc)}: {exc.error_message}"
                ) from None
            if level is None:
                call(client.set_compatibility, subject, "BACKWARD")
                log.info("new subject %s: %s as id %d, BACKWARD", subject, schema.name, ids[subject])
            elif level not in BACKWARD_OR_STRICTER:
                log.warning(
                    "subject %s has compatibility %s, weaker than BACKWARD: consumers with the newest "
                    "schema may fail on older records; the connector leaves the subject's setting alone",
                    subject,
                    level,
                )
        if call.waited:
            log.info("Schema Registry at %s reachable; schemas registered", call.url)
        return ids
    except SchemaRegistryError as exc:
        raise _refused(exc, call.url) from None
