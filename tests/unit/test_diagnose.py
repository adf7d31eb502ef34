"""What librdkafka reports about a refused client, turned into one line naming the cause.

The reports are librdkafka 2.16's own words, captured against a SASL_SSL + mutual-TLS broker (the same
broker the integration tests start); the probes of the listener are given as functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from connector.config import KafkaClient
from connector.errors import ConfigError
from connector.sink import Cluster, KafkaAccessError, KafkaSink, kind_of, refusal_of
from connector.sink._diagnose import diagnose
from connector.stats import ShardStats
from tests.unit.helpers import NO_BROKER, sink_config

SCRAM = {
    "bootstrap.servers": "127.0.0.1:39092",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "connector",
    "sasl.password": "s3cret",
    "ssl.ca.location": "/certs/ca.crt",
}
AFTER = " (after 321ms in state AUTH_REQ)"


def _diagnose(code: int | None, text: str, config: dict[str, str] | None = None, **probes: object) -> str:
    refusal = diagnose(code, text, config or SCRAM, **probes)  # type: ignore[arg-type]
    assert refusal is not None, text
    return f"{refusal.kind}: {refusal.cause}"


def test_wrong_credentials_are_an_authentication_failure_naming_the_user_and_settings() -> None:
    text = (
        "sasl_ssl://127.0.0.1:39092/bootstrap: SASL authentication error: Authentication failed during "
        "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512" + AFTER
    )
    line = _diagnose(KafkaError._AUTHENTICATION, text)
    assert line.startswith(
        "authentication: Kafka authentication failed for User:connector with SCRAM-SHA-512"
    )
    assert "check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD" in line and "s3cret" not in line
    assert "(after" not in line


def test_a_mechanism_the_listener_does_not_offer_names_those_it_does() -> None:
    text = (
        "sasl_ssl://127.0.0.1:39092/bootstrap: SASL PLAIN mechanism handshake failed: Broker: Unsupported "
        "SASL mechanism: broker's supported mechanisms: SCRAM-SHA-512,SCRAM-SHA-256" + AFTER
    )
    line = _diagnose(KafkaError._AUTHENTICATION, text, {**SCRAM, "sasl.mechanism": "PLAIN"})
    assert "does not offer SASL mechanism PLAIN (it offers SCRAM-SHA-512,SCRAM-SHA-256)" in line


@pytest.mark.parametrize(
    ("code", "text", "config", "expected"),
    [
        (  # SASL against a TLS-only listener
            KafkaError._AUTHENTICATION,
            "sasl_ssl://127.0.0.1:39093/bootstrap: SASL SCRAM-SHA-512 mechanism handshake failed: Broker: "
            "Request not valid in current SASL state: broker's supported mechanisms: " + AFTER,
            SCRAM,
            "authentication: wrong protocol: the listener at 127.0.0.1:39093 does not use SASL",
        ),
        (  # TLS against a plaintext listener
            KafkaError._SSL,
            "ssl://127.0.0.1:9092/bootstrap: SSL handshake failed: error:0A00010B:SSL routines::wrong "
            "version number (connecting to a PLAINTEXT broker listener?)" + AFTER,
            {"security.protocol": "SSL"},
            "tls: wrong protocol: the listener at 127.0.0.1:9092 does not speak TLS",
        ),
        (  # TLS without the client certificate a mutual-TLS listener requires
            KafkaError._TRANSPORT,
            "ssl://127.0.0.1:39093/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert "
            "certificate required: SSL alert number 116" + AFTER,
            {"security.protocol": "SSL"},
            "tls: TLS: Kafka at 127.0.0.1:39093 requires a client certificate (mutual TLS)",
        ),
        (  # a client certificate the broker does not trust
            KafkaError._TRANSPORT,
            "ssl://127.0.0.1:39093/bootstrap: Receive failed: error:0A000416:SSL routines::ssl/tls alert "
            "certificate unknown: SSL alert number 46" + AFTER,
            {"security.protocol": "SSL", "ssl.certificate.location": "/c/other.crt"},
            "KAFKA_SSL_CERTIFICATE_LOCATION=/c/other.crt: is it signed by a CA the broker trusts?",
        ),
    ],
)
def test_the_wrong_kind_of_listener_and_mutual_tls_are_named(
    code: int, text: str, config: dict[str, str], expected: str
) -> None:
    assert expected in _diagnose(code, text, config)


VERIFY_FAILED = (
    "sasl_ssl://{host}:39092/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate "
    "verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly "
    "configured or root CA certificates are installed (install ca-certificates package)" + AFTER
)


def test_a_certificate_that_fails_verification_is_told_apart_by_a_look_at_the_listener() -> None:
    asked: list[tuple[str, int]] = []

    def hostname_mismatch(host: str, port: int) -> str:
        asked.append((host, port))
        return "Hostname mismatch, certificate is not valid for 'localhost'."

    line = _diagnose(KafkaError._SSL, VERIFY_FAILED.format(host="localhost"), verify=hostname_mismatch)
    assert asked == [("localhost", 39092)]
    assert "the certificate of localhost:39092 does not name localhost" in line
    assert "KAFKA_SSL_ENDPOINT_IDENTIFICATION=false" in line
    line = _diagnose(
        KafkaError._SSL,
        VERIFY_FAILED.format(host="127.0.0.1"),
        verify=lambda host, port: "self-signed certificate in certificate chain",
    )
    assert line == (
        "tls: TLS: the certificate of 127.0.0.1:39092 is not signed by a CA in "
        "KAFKA_SSL_CA_LOCATION=/certs/ca.crt (self-signed certificate in certificate chain)"
    )


def test_a_plain_client_dropped_by_a_listener_is_a_wrong_protocol_only_if_the_listener_speaks_tls() -> None:
    line = (
        "FAIL [rdkafka#producer-7] [thrd:127.0.0.1:39092/bootstrap]: 127.0.0.1:39092/bootstrap: "
        "Disconnected: "
        "connection closed by peer: receive 0 after POLLIN (after 1ms in state APIVERSION_QUERY)"
    )
    plain = {"bootstrap.servers": "127.0.0.1:39092"}
    assert "the listener at 127.0.0.1:39092 speaks TLS, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in _diagnose(
        None, line, plain, tls_listener=lambda host, port: True
    )
    # the same line from a broker still starting behind Docker's port proxy: wait, do not conclude
    assert diagnose(None, line, plain, tls_listener=lambda host, port: False) is None


def test_a_connection_closed_after_the_first_request_is_a_listener_that_needs_sasl() -> None:
    line = (
        "FAIL [rdkafka#producer-13] [thrd:ssl://127.0.0.1:39092/bootstrap]: ssl://127.0.0.1:39092/bootstrap: "
        "Disconnected: SSL connection closed by peer (after {ms}ms in state UP)"
    )
    tls = {"security.protocol": "SSL"}
    assert "needs SASL (KAFKA_SECURITY_PROTOCOL=SASL_SSL" in _diagnose(None, line.format(ms=4), tls)
    assert diagnose(None, line.format(ms=600_000), tls) is None, "an idle connection closed is no sign"


def test_an_unreachable_broker_is_no_refusal_but_counts_as_transport() -> None:
    text = "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused" + AFTER
    assert diagnose(KafkaError._TRANSPORT, text, SCRAM) is None
    assert kind_of(KafkaError(KafkaError._TRANSPORT, text)) == "transport"
    assert kind_of(KafkaError(KafkaError._ALL_BROKERS_DOWN)) == "transport"
    assert kind_of(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)) == "authorization"
    assert kind_of(KafkaError(KafkaError._SSL, VERIFY_FAILED.format(host="h"))) == "tls"
    assert kind_of(KafkaError(KafkaError._SSL, "h:1/b: SSL handshake failed: unexpected eof")) == "transport"
    assert kind_of(KafkaError(KafkaError._MSG_TIMED_OUT)) is None


def test_an_authorization_error_of_a_call_names_the_acl_it_lacks() -> None:
    def refused(code: int) -> KafkaAccessError | None:
        exc = KafkaException(KafkaError(code))
        return refusal_of(exc, SCRAM, topic="kite.ticks", group="g", transactional_id="g-1")

    assert str(refused(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)) == (
        "Kafka authorization: User:connector may not use transactional id g-1 "
        "(missing ACL: WRITE on TransactionalId:g-1)"
    )
    assert "may not write to topic kite.ticks (missing ACL: WRITE on Topic:kite.ticks)" in str(
        refused(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    )
    assert "(missing ACL: READ on Group:g)" in str(refused(KafkaError.GROUP_AUTHORIZATION_FAILED))
    assert refused(KafkaError._MSG_TIMED_OUT) is None
    assert refusal_of(ValueError("not Kafka's"), SCRAM) is None


# -- the producer at run time -----------------------------------------------------------------------------
def _sink() -> KafkaSink:
    return KafkaSink(sink_config(NO_BROKER), ShardStats())


def test_credentials_that_stop_working_are_raised_by_the_next_service_and_counted() -> None:
    sink = _sink()
    sink.service()
    sink._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    sink.service()  # an unreachable broker is waited out by librdkafka: nothing to raise
    text = (
        "sasl_ssl://b:9093/1: SASL authentication error: Authentication failed: invalid credentials" + AFTER
    )
    sink._on_error(KafkaError(KafkaError._AUTHENTICATION, text))
    with pytest.raises(KafkaAccessError, match="Kafka authentication failed") as info:
        sink.service()
    assert info.value.kind == "authentication"
    errors = sink.stats.kafka_errors  # the producer's own attempts at 127.0.0.1:1 count as transport too
    assert (
        errors["authentication"] == 1
        and errors["transport"] >= 1
        and set(errors) == {"transport", "authentication"}
    )
    assert sink.stats.kafka_refused is not None and "authentication failed" in sink.stats.kafka_refused
    sink.service()  # raised once: the supervisor has it
    sink.close(0)


def test_a_record_refused_for_a_missing_acl_is_raised_and_shown_until_one_is_delivered() -> None:
    sink = _sink()
    sink.stats.in_flight = 2
    sink._on_tick(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), Message(topic="kite.ticks"))
    with pytest.raises(KafkaAccessError, match=r"may not write to topic kite\.ticks"):
        sink.service()
    stats = sink.stats
    assert stats.kafka_errors["authorization"] == 1
    assert "may not write to topic kite.ticks" in (stats.refused() or "")
    sink._on_tick(None, Message(topic="kite.ticks"))
    assert stats.refused() is None, "a record delivered again: /healthz is fine again"
    sink.close(0)


def test_a_property_librdkafka_does_not_know_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=u\nsasl.password=hunter2\n"
        "key.serializer=org.apache.kafka.common.serialization.StringSerializer\n"  # a Java client's
    )
    client = KafkaClient.load(environ={"KAFKA_CONFIG_FILE": str(properties)})
    with pytest.raises(ConfigError, match=r'"key\.serializer".*Java client.*KAFKA_CONFIG_FILE') as info:
        Cluster(client.client_config())  # librdkafka refuses it before it opens any connection
    assert "hunter2" not in str(info.value)


def _failing(code: int) -> Callable[[], object]:
    def describe() -> object:
        raise KafkaException(KafkaError(code))

    return describe


def test_a_group_describe_meets_a_timeout_and_a_loading_coordinator_as_passing() -> None:
    """A broker busy at start-up let the consumer's group describe time out, and `consume` exited 2: a
    timeout is now waited out like a coordinator that loads."""
    from connector.sink._admin import _group_transient

    assert _group_transient(KafkaError(KafkaError._TIMED_OUT))
    assert _group_transient(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS))
    assert not _group_transient(KafkaError(KafkaError.INVALID_REQUEST))


@pytest.mark.parametrize(
    ("what", "denied", "again"),
    [
        ("topic t", KafkaError.TOPIC_AUTHORIZATION_FAILED, "_transient"),
        ("consumer group g", KafkaError.GROUP_AUTHORIZATION_FAILED, "_group_transient"),
    ],
    ids=["topic", "group"],
)
def test_a_describe_that_keeps_timing_out_is_asked_again_then_not_checked_and_any_other_error_stops(
    caplog: pytest.LogCaptureFixture, what: str, denied: int, again: str
) -> None:
    """A cluster busy after a pause answers metadata but times out describes: the connector starts anyway
    (a missing ACL then shows at run time); any other error is named."""
    from connector.errors import SinkError
    from connector.sink import _admin

    passes = getattr(_admin, again)
    cluster = Cluster(dict(NO_BROKER))
    calls: list[int] = []

    def times_out() -> object:
        calls.append(1)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    allowed = cluster._operations_of(what, times_out, denied, passes, time.monotonic() + 0.5)
    assert allowed is None and len(calls) >= 2
    assert f"could not check the ACLs on {what} in " in caplog.text
    with pytest.raises(SinkError, match=f"cannot describe {what}"):
        cluster._operations_of(
            what, _failing(KafkaError.INVALID_REQUEST), denied, passes, time.monotonic() + 5
        )
