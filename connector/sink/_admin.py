"""Kafka at start-up, for ``run``, ``candles`` and ``consume``: reach the cluster, create the topics that are
missing, and check that the client may do what the command needs.

A :class:`Cluster` watches its admin client's error callback and log lines while it waits, so a refusal
that librdkafka would only log and retry for ever (a wrong password, an untrusted certificate, a listener
of the other kind) stops start-up at once with one line naming the cause (:mod:`._diagnose`); a cluster
that cannot be reached yet is waited for. Then the ACLs: the brokers say which operations the client may
do on each topic and group (``include_authorized_operations``), so a missing ACL is named before the
command reads anything, rather than found by the first record that fails.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclOperation
from confluent_kafka.admin._metadata import ClusterMetadata
from confluent_kafka.cimpl import NewTopic

from connector.errors import ConfigError, SinkError
from connector.logs import redact
from connector.sink._diagnose import KafkaAccessError, diagnose, principal, speaks_tls, tls_verify

__all__ = ["Access", "Cluster", "TopicSpec", "ensure_topics"]

log = logging.getLogger("connector.sink")
_CREATE_TIMEOUT = 30.0
_CHECK_TIMEOUT = 20.0
# A broker back from a pause answers metadata before its admin requests find the controller ("waiting for
# controller: timed out"): a describe (topic or group) is asked in short attempts for as long as metadata
# is waited for.
_DESCRIBE_ATTEMPT = 5.0
_RECOVERY_TIMEOUT = 60.0
_SLICE = 0.5  # each wait is this short, so a signal and a refusal are both seen at once
_WAITING_LOG_EVERY = 10.0
_FIRST_WAITING_LOG = 2.0
_VERBS = {AclOperation.READ: "read", AclOperation.WRITE: "write to"}
_COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}
_SECRETS = ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Access:
    """What a command does in Kafka: the topics it writes and reads, the consumer groups it joins."""

    write: Sequence[str] = ()
    read: Sequence[str] = ()
    groups: Sequence[str] = ()


class _Lines(logging.Handler):
    def __init__(self, lines: deque[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class Cluster:
    """One admin client for a command's start-up checks (see the module's docstring)."""

    def __init__(self, client: Mapping[str, Any]) -> None:
        self.config = dict(client)
        self.errors: deque[KafkaError] = deque(maxlen=200)
        self.lines: deque[str] = deque(maxlen=200)
        self.principal = principal(client)
        self._seen: dict[str, int] = {}  # refusals read from log lines: how often each was seen
        self._probed: dict[tuple[str, str, int], Any] = {}
        # librdkafka's own lines are read here, not printed: the cause is reported once, in words
        librdkafka = logging.Logger("librdkafka.start-up")
        librdkafka.addHandler(_Lines(self.lines))
        try:
            self.admin = AdminClient(dict(client), error_cb=self.errors.append, logger=librdkafka)
        except KafkaException as exc:
            raise ConfigError(self._settings_refused(exc)) from None

    def _settings_refused(self, exc: KafkaException) -> str:
        text = redact(str(exc.args[0].str()), *(str(self.config.get(k) or "") for k in _SECRETS))
        if "No such configuration property" in text:
            return (
                f"{text}: librdkafka has no such property (is it a Java client's?); it comes from "
                "KAFKA_CONFIG_FILE (librdkafka's properties: CONFIGURATION.md in its repository)"
            )
        return f"librdkafka refuses the Kafka client settings (KAFKA_* and KAFKA_CONFIG_FILE): {text}"

    # -- reaching the cluster --------------------------------------------------------------------------
    def metadata(self, timeout: float = 60.0) -> ClusterMetadata:
        """The cluster's metadata once it answers. Waits up to ``timeout`` s for a cluster that cannot be
        reached; raises :class:`KafkaAccessError` as soon as it refuses this client."""
        where = self.config.get("bootstrap.servers")
        deadline = time.monotonic() + timeout
        next_log = time.monotonic() + _FIRST_WAITING_LOG  # a refusal is named first, in one line
        while True:
            try:
                meta: ClusterMetadata = self.admin.list_topics(timeout=_SLICE)
                return meta
            except KafkaException as exc:
                last = exc.args[0].str()
            reason = self.raise_refusal() or last
            now = time.monotonic()
            if now > deadline:
                raise SinkError(
                    f"Kafka at {where} did not answer in {timeout:.0f} s ({reason}): check "
                    "KAFKA_BOOTSTRAP_SERVERS and that the broker is up"
                )
            if now >= next_log:
                log.warning("waiting for Kafka at %s (%s)", where, reason)
                next_log = now + _WAITING_LOG_EVERY

    def raise_refusal(self) -> str | None:
        """Reads what librdkafka reported since the last call: raises :class:`KafkaAccessError` for a
        refusal; returns the last other error (the reason of a wait), or None."""
        self.admin.poll(0)  # serves the error callback and the logger
        last = None
        while self.errors:
            err = self.errors.popleft()
            refusal = diagnose(err.code(), err.str(), self.config, self._verify, self._speaks_tls)
            if refusal is not None:
                raise refusal.error()
            last = err.str()
        while self.lines:
            refusal = diagnose(None, self.lines.popleft(), self.config, self._verify, self._speaks_tls)
            if refusal is not None:  # a line is a weaker sign than an error: the same cause twice
                self._seen[refusal.cause] = self._seen.get(refusal.cause, 0) + 1
                if self._seen[refusal.cause] >= 2:
                    raise refusal.error()
        return last

    def _verify(self, host: str, port: int) -> str | None:
        key = ("verify", host, port)
        if key not in self._probed:
            self._probed[key] = tls_verify(host, port, self.config)
        result: str | None = self._probed[key]
        return result

    def _speaks_tls(self, host: str, port: int) -> bool:
        key = ("tls", host, port)
        if key not in self._probed:
            self._probed[key] = speaks_tls(host, port)
        return bool(self._probed[key])

    # -- topics and ACLs -------------------------------------------------------------------------------
    def create(self, topics: Sequence[TopicSpec], meta: ClusterMetadata) -> None:
        """Creates those of ``topics`` that ``meta`` does not list."""
        missing = [
            NewTopic(t.name, t.partitions, t.replication, config=dict(t.config))
            for t in topics
            if t.name not in meta.topics
        ]
        created = (
            self.admin.create_topics(
                missing, request_timeout=_CREATE_TIMEOUT, operation_timeout=_CREATE_TIMEOUT
            ).items()
            if missing
            else ()
        )
        for name, future in created:
            try:
                future.result(timeout=_CREATE_TIMEOUT + 5)
                log.info("created topic %s", name)
            except TimeoutError:
                raise SinkError(
                    f"Kafka did not create topic {name} in {_CREATE_TIMEOUT:.0f} s: is its controller up?"
                ) from None
            except KafkaException as exc:
                code = exc.args[0].code()
                if code == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
                    raise KafkaAccessError(
                        "authorization",
                        f"Kafka authorization: {self.principal} may not create topic {name}, which does not "
                        f"exist or which it may not see (missing ACL: CREATE on Topic:{name}; or create it "
                        "and grant access to it)",
                    ) from None
                self.raise_refusal()
                raise SinkError(f"cannot create topic {name}: {exc}") from exc

    def check(self, access: Access) -> None:
        """Raises :class:`KafkaAccessError` naming the first operation ``access`` needs that the brokers do
        not allow this client. A topic that does not exist yet, or a broker that does not tell (before
        Kafka 2.3), is not checked."""
        needs: dict[str, set[AclOperation]] = {}
        for topics, operation in ((access.read, AclOperation.READ), (access.write, AclOperation.WRITE)):
            for topic in topics:
                needs.setdefault(topic, set()).add(operation)
        deadline = time.monotonic() + _RECOVERY_TIMEOUT  # for all of them: a busy cluster is waited for once
        for topic, operations in needs.items():
            allowed = self._topic_operations(topic, deadline)
            lacking = sorted(operations - allowed, key=str) if allowed is not None else []
            if lacking:
                raise KafkaAccessError(
                    "authorization",
                    f"Kafka authorization: {self.principal} may not "
                    f"{' or '.join(_VERBS[op] for op in lacking)} topic {topic} (missing ACL: "
                    f"{' and '.join(op.name for op in lacking)} on Topic:{topic})",
                )
        for group in access.groups:
            allowed = self._group_operations(group, deadline)
            if allowed is not None and AclOperation.READ not in allowed:
                raise KafkaAccessError(
                    "authorization",
                    f"Kafka authorization: {self.principal} may not join consumer group {group} "
                    f"(missing ACL: READ on Group:{group})",
                )

    def _topic_operations(self, topic: str, deadline: float) -> set[AclOperation] | None:
        """What the client may do on a topic; waits (bounded) while a broker just back has no controller."""
        return self._operations_of(
            f"topic {topic}",
            lambda: self.admin.describe_topics(
                TopicCollection([topic]),
                include_authorized_operations=True,
                request_timeout=_DESCRIBE_ATTEMPT,
            )[topic],
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            _transient,
            deadline,
        )

    def _group_operations(self, group: str, deadline: float) -> set[AclOperation] | None:
        """What the client may do on a consumer group; waits (bounded) while its coordinator loads or
        a busy broker lets the describe time out."""
        return self._operations_of(
            f"consumer group {group}",
            lambda: self.admin.describe_consumer_groups(
                [group], include_authorized_operations=True, request_timeout=_DESCRIBE_ATTEMPT
            )[group],
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            _group_transient,
            deadline,
        )

    def _operations_of(
        self,
        what: str,
        describe: Callable[[], Any],
        denied: int,
        again: Callable[[KafkaError], bool],
        deadline: float,
    ) -> set[AclOperation] | None:
        """Describes a resource until it answers, asking again after an error ``again`` says will pass,
        until ``deadline`` (monotonic); then it is not checked (None). A cluster that serves metadata but
        is too busy to describe (just back from a pause, with every producer's backlog arriving) must not
        keep the connector from streaming: a missing ACL then shows at run time, counted and on /healthz."""
        started = time.monotonic()
        while True:
            try:
                return _operations(describe(), denied)
            except KafkaException as exc:
                self.raise_refusal()  # a refusal is named at once, never waited out
                if not again(exc.args[0]):
                    raise SinkError(f"cannot describe {what}: {exc.args[0].str()}") from exc
                if time.monotonic() > deadline:
                    log.warning(
                        "could not check the ACLs on %s in %.0f s (%s): going on without", what,
                        time.monotonic() - started, exc.args[0].str(),
                    )  # fmt: skip
                    return None
            # A broker back from a pause may have told us it had no controller; without fresh metadata
            # librdkafka waits for one until its next periodic refresh (minutes), each describe timing out.
            with contextlib.suppress(KafkaException):
                self.admin.list_topics(timeout=_SLICE)
            time.sleep(0.2)


def _transient(error: KafkaError) -> bool:
    """An error a describe may meet while a broker recovers (a pause, a restart): asked again, it passes."""
    return bool(error.retriable()) or error.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT)


def _group_transient(error: KafkaError) -> bool:
    """A group describe also meets a coordinator still loading (a fresh or restarted broker)."""
    return _transient(error) or error.code() in _COORDINATOR_NOT_READY


def _operations(future: Any, denied: int) -> set[AclOperation] | None:
    """The operations the brokers allow on a described resource: empty when ``denied`` was the answer,
    None when they do not say (a topic that does not exist yet, a broker before Kafka 2.3)."""
    try:
        description = future.result(timeout=_CHECK_TIMEOUT + 5)
    except KafkaException as exc:
        code = exc.args[0].code()
        if code == denied:
            return set()
        if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise
    operations = description.authorized_operations
    return None if operations is None else set(operations)


def ensure_topics(
    client: Mapping[str, Any],
    topics: Sequence[TopicSpec],
    timeout: float = 60.0,
    *,
    read: Sequence[str] = (),
    groups: Sequence[str] = (),
    write: Sequence[str] | None = None,
) -> ClusterMetadata:
    """Reaches the cluster, creates the ``topics`` that do not exist yet and checks the client may write
    ``write`` (default: all of them), read ``read`` and join ``groups``; returns the metadata read before
    creating them."""
    cluster = Cluster(client)
    meta = cluster.metadata(timeout)
    cluster.create(topics, meta)
    written = [t.name for t in topics] if write is None else write
    cluster.check(Access(write=written, read=read, groups=groups))
    return meta
