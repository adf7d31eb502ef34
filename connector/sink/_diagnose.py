"""Why Kafka refuses a client, from what librdkafka reports: its errors and, for some causes, its log lines.

librdkafka raises nothing for a wrong password, an untrusted certificate or a listener of the wrong kind: it
reports them through the error callback or only in a log line, and retries for ever. :func:`diagnose` turns
what it reports into a :class:`Refusal` (a metric kind and one line naming the cause) when the cause is one
that retrying cannot fix; :func:`kind_of` sorts any error into the kinds of ``kafka_errors_total``. Two
causes need one look at the listener itself (:func:`tls_verify`, :func:`speaks_tls`): whether a certificate
failed on its CA or on its host name, and whether a listener that drops a plain client speaks TLS.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from connector.errors import SinkError

__all__ = [
    "KINDS",
    "KafkaAccessError",
    "Refusal",
    "diagnose",
    "kind_of",
    "principal",
    "refusal_of",
    "speaks_tls",
    "tls_verify",
]

KINDS = ("authentication", "authorization", "tls", "transport")  # label values of kafka_errors_total{kind}
_AUTHENTICATION = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.ILLEGAL_SASL_STATE,
    KafkaError.UNSUPPORTED_SASL_MECHANISM,
}
_AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
}
_TRANSPORT = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError._SSL,
}
# TLS failures that retrying cannot fix (a broker restarting can also break a handshake: that is transport)
_TLS_FINAL = re.compile(
    r"certificate verify failed|wrong version number|PLAINTEXT broker listener|alert", re.I
)
# "sasl_ssl://host:9093/1: reason (after 3ms in state AUTH_REQ)" → broker, reason
_BROKER = re.compile(r"^(?:[a-z_]+://)?(?P<host>\[[^\]]+\]|[^\s:/]+):(?P<port>\d+)/\S*?:\s*(?P<reason>.*)$")
# a log line starts "FAIL [rdkafka#producer-1] [thrd:...]: " before the broker
_LOG_PREFIX = re.compile(r"^[A-Z_]+ \[[^\]]*\] \[thrd:[^\]]*\]:\s*")
_AFTER = re.compile(r"\s*\(after (?P<ms>\d+)ms in state (?P<state>\w+)[^)]*\)")


class KafkaAccessError(SinkError):
    """Kafka refuses this client (its credentials, its TLS, its protocol, or an ACL): retrying cannot help."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str  # one of KINDS
    cause: str  # one line, naming the setting to change

    def error(self) -> KafkaAccessError:
        return KafkaAccessError(self.kind, self.cause)


def kind_of(err: KafkaError) -> str | None:
    """The ``kafka_errors_total`` kind of a librdkafka error, or None for any other error."""
    code = err.code()
    if code in _AUTHENTICATION:
        return "authentication"
    if code in _AUTHORIZATION:
        return "authorization"
    if code in (KafkaError._SSL, KafkaError._TRANSPORT) and _TLS_FINAL.search(err.str()):
        return "tls"
    return "transport" if code in _TRANSPORT else None


def principal(config: Mapping[str, Any]) -> str:
    """Who the client is to Kafka's authorizer, as far as its configuration says."""
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    mechanism = config.get("sasl.mechanism")
    if protocol.startswith("SASL_") and mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        return f"User:{config.get('sasl.username')}"
    if protocol.startswith("SASL_"):
        return f"the {mechanism} principal"
    if config.get("ssl.certificate.location") or config.get("ssl.keystore.location"):
        return "the client certificate's principal"
    return "User:ANONYMOUS"


def _where(text: str) -> tuple[str, str, str]:
    """(host, port, reason) of a librdkafka error or log line; host and port empty when it names none."""
    found = _BROKER.match(_LOG_PREFIX.sub("", text.strip()))
    if found is None:
        return "", "", _AFTER.sub("", text.strip())
    return found["host"].strip("[]"), found["port"], _AFTER.sub("", found["reason"])


Probe = Callable[[str, int], str | None]


def diagnose(
    code: int | None,
    text: str,
    config: Mapping[str, Any],
    verify: Probe = lambda host, port: None,
    tls_listener: Callable[[str, int], bool] = lambda host, port: False,
) -> Refusal | None:
    """The refusal an error (``code``) or a log line (``code`` None) of a client with ``config`` reports,
    or None when it is not one (the broker may just be unreachable for now).

    ``verify`` says why a TLS handshake with a broker fails verification (see :func:`tls_verify`),
    ``tls_listener`` whether a broker speaks TLS (:func:`speaks_tls`): each is asked only when needed.
    """
    host, port, reason = _where(text)
    broker = f"{host}:{port}" if host else str(config.get("bootstrap.servers"))
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    if code in _AUTHENTICATION:
        return _authentication(reason, broker, config)
    if code in (KafkaError._SSL, KafkaError._TRANSPORT) and _TLS_FINAL.search(reason):
        return _tls(reason, host, port, broker, config, verify)
    after = _AFTER.search(text)
    if code is None and "closed by peer" in reason and after is not None and int(after["ms"]) < 1000:
        # closed as soon as the client spoke (an idle connection closed later on is no sign of anything)
        return _dropped(after["state"], host, port, broker, protocol, tls_listener)
    return None


def _authentication(reason: str, broker: str, config: Mapping[str, Any]) -> Refusal:
    mechanism = config.get("sasl.mechanism")
    offered = re.search(r"broker's supported mechanisms:\s*([^(]*?)\s*(?:\(|$)", reason)
    if "current SASL state" in reason or (offered is not None and not offered[1]):
        return Refusal(
            "authentication",
            f"wrong protocol: the listener at {broker} does not use SASL, but KAFKA_SECURITY_PROTOCOL="
            f"{config.get('security.protocol')}: set SSL (or PLAINTEXT) to match it",
        )
    if offered is not None:
        return Refusal(
            "authentication",
            f"Kafka at {broker} does not offer SASL mechanism {mechanism} (it offers {offered[1]}): "
            "set KAFKA_SASL_MECHANISM to one of them",
        )
    if mechanism == "OAUTHBEARER":
        check = "the KAFKA_SASL_OAUTHBEARER_* settings"
    else:
        check = "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
    return Refusal(
        "authentication",
        f"Kafka authentication failed for {principal(config)} with {mechanism} at {broker}: check {check} "
        f"({reason})",
    )


def _tls(reason: str, host: str, port: str, broker: str, config: Mapping[str, Any], verify: Probe) -> Refusal:
    protocol = config.get("security.protocol")
    if re.search(r"wrong version number|PLAINTEXT broker listener", reason, re.I):
        return Refusal(
            "tls",
            f"wrong protocol: the listener at {broker} does not speak TLS, but KAFKA_SECURITY_PROTOCOL="
            f"{protocol}: is it a PLAINTEXT or SASL_PLAINTEXT listener?",
        )
    if "certificate required" in reason:
        return Refusal(
            "tls",
            f"TLS: Kafka at {broker} requires a client certificate (mutual TLS): set "
            "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION",
        )
    if re.search(r"certificate unknown|bad certificate|unknown ca", reason, re.I):
        return Refusal(
            "tls",
            f"TLS: Kafka at {broker} does not accept the client certificate KAFKA_SSL_CERTIFICATE_LOCATION="
            f"{config.get('ssl.certificate.location')}: is it signed by a CA the broker trusts?",
        )
    why = verify(host, int(port)) if host and "certificate verify failed" in reason else None
    if why and "hostname" in why.lower():
        return Refusal(
            "tls",
            f"TLS: the certificate of {broker} does not name {host} ({why}): dial a name it lists in "
            "KAFKA_BOOTSTRAP_SERVERS (the broker's advertised listeners too), or set "
            "KAFKA_SSL_ENDPOINT_IDENTIFICATION=false",
        )
    if "certificate verify failed" in reason:
        ca = config.get("ssl.ca.location")
        trusted = (
            f"KAFKA_SSL_CA_LOCATION={ca}" if ca else "the system's trust store (KAFKA_SSL_CA_LOCATION unset)"
        )
        return Refusal(
            "tls",
            f"TLS: the certificate of {broker} is not signed by a CA in {trusted} ({why or reason})",
        )
    return Refusal("tls", f"TLS handshake with {broker} failed: {reason}")


def _dropped(
    state: str,
    host: str,
    port: str,
    broker: str,
    protocol: str,
    tls_listener: Callable[[str, int], bool],
) -> Refusal | None:
    """A broker that closes the connection as soon as the client speaks: a listener of another kind."""
    if state == "UP" and "SASL" not in protocol:
        # TLS (if any) and the API version exchange went through, then the first request was refused
        return Refusal(
            "authentication",
            f"wrong protocol: Kafka at {broker} closes the connection after the first request: its listener "
            f"needs SASL (KAFKA_SECURITY_PROTOCOL=SASL_{'SSL' if protocol == 'SSL' else 'PLAINTEXT'} with "
            "KAFKA_SASL_MECHANISM)",
        )
    plain = protocol in ("PLAINTEXT", "SASL_PLAINTEXT")
    if state == "APIVERSION_QUERY" and plain and host and tls_listener(host, int(port)):
        return Refusal(
            "tls",
            f"wrong protocol: the listener at {broker} speaks TLS, but KAFKA_SECURITY_PROTOCOL={protocol}: "
            f"set {'SASL_SSL' if protocol == 'SASL_PLAINTEXT' else 'SSL or SASL_SSL'}",
        )
    return None


def refusal_of(
    error: BaseException | KafkaError,
    config: Mapping[str, Any],
    *,
    topic: str = "?",
    group: str = "?",
    transactional_id: str = "?",
) -> KafkaAccessError | None:
    """A :class:`KafkaAccessError` naming the missing ACL (or the refused credentials) for an error, or
    the exception of a Kafka call, that is a refusal; else None. ``topic``, ``group`` and
    ``transactional_id`` are what the call used."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if not isinstance(error, KafkaError):
        return None
    err = error
    tid = transactional_id
    denied = {
        KafkaError.TOPIC_AUTHORIZATION_FAILED: (
            f"write to topic {topic} (missing ACL: WRITE on Topic:{topic})"
        ),
        KafkaError.GROUP_AUTHORIZATION_FAILED: (
            f"join consumer group {group} (missing ACL: READ on Group:{group})"
        ),
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: (
            f"use transactional id {tid} (missing ACL: WRITE on TransactionalId:{tid})"
        ),
        KafkaError.CLUSTER_AUTHORIZATION_FAILED: (
            "produce idempotently (missing ACL: WRITE on a topic, or IDEMPOTENT_WRITE on the cluster)"
        ),
    }.get(err.code())
    if denied is not None:
        return KafkaAccessError("authorization", f"Kafka authorization: {principal(config)} may not {denied}")
    refusal = diagnose(err.code(), err.str(), config)
    return refusal.error() if refusal is not None else None


# -- one look at the listener -----------------------------------------------------------------------------
def _context(config: Mapping[str, Any]) -> ssl.SSLContext:
    """A TLS client context that verifies as librdkafka does with ``config``."""
    ca = config.get("ssl.ca.location")
    context = ssl.create_default_context(cafile=ca if ca and ca != "probe" else None)
    if str(config.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    return context


def tls_verify(host: str, port: int, config: Mapping[str, Any], timeout: float = 3.0) -> str | None:
    """Why a TLS handshake with ``host:port`` fails verification with ``config``'s CA and host name check
    (OpenSSL's words, e.g. "Hostname mismatch, ..."), or None when it verifies (or cannot be tried)."""
    try:
        with (
            socket.create_connection((host, port), timeout) as sock,
            _context(config).wrap_socket(sock, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message)
    except (OSError, ValueError):
        return None


def speaks_tls(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate not checked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except (OSError, ValueError):
        return False
