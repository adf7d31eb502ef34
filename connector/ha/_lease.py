"""The lease of an HA set: membership of a Kafka consumer group on a one-partition topic.

Every instance of the set joins the group ``kite-connector.ha.<HA_GROUP>`` subscribed to the lease topic;
the member the group assigns partition 0 holds the lease. Nothing is ever written to or read from that
topic: the group coordinator is the election. A member that stops heartbeating (killed, stopped, cut
off) loses it after the session timeout; one that leaves (:meth:`Lease.close`, on a clean stop) at once.

The classic group protocol with the cooperative-sticky assignor: an instance joining (a restarted one)
does not move the lease away from its holder. The newer protocol (KIP-848) would serve as well, but
brokers refuse per-group session timeouts below ``group.consumer.min.session.timeout.ms`` (45 s by
default, not changeable at run time) and heartbeat intervals below 5 s, so out of the box it would take
over in about 50 s; a classic group's floor is the broker's ``group.min.session.timeout.ms`` (6 s by
default), and both need a broker setting to go below. ``HA_SESSION_TIMEOUT_MS`` is the client's session
timeout; the heartbeat interval is a tenth of it, so a standby learns of a takeover soon after.

The lease is for liveness only: safety comes from the transactional producers (a new active's
``init_transactions`` fences the old one), so two instances that both believe they hold it for a moment
still write nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connector.logs import sample

__all__ = ["Lease"]

log = logging.getLogger("connector.ha")


class Lease:
    """Group membership; :attr:`held` says whether partition 0 is this member's. Driven by :meth:`poll`."""

    def __init__(
        self, client: Mapping[str, Any], group: str, topic: str, session_timeout_ms: int, instance: str
    ) -> None:
        self.group, self.topic = group, topic
        self.session_timeout = session_timeout_ms / 1000
        self.held = False
        self.lost: str | None = None  # why a lease once held is no longer this member's
        self.error: str | None = None  # why the group refuses this member (a setting to change)
        self.consumer = Consumer(
            {
                **client,
                "group.id": group,
                "client.id": f"kite-connector-ha-{instance}",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(100, session_timeout_ms // 10),
                "max.poll.interval.ms": 60_000,
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
            },
            logger=sample(logging.getLogger("librdkafka")),
        )

    def join(self) -> None:
        self.consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def poll(self, timeout: float) -> None:
        """Serve the group's callbacks (and keep the membership alive) for up to ``timeout`` seconds."""
        msg = self.consumer.poll(timeout)
        error = msg.error() if msg is not None else None
        if error is None:
            return
        if error.code() == KafkaError.INVALID_SESSION_TIMEOUT:
            self.error = (
                f"group {self.group} refuses this member: {error.str()} (is HA_SESSION_TIMEOUT_MS below the "
                "brokers' group.min.session.timeout.ms?)"
            )
        elif error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            self.error = (
                f"group {self.group} refuses this member: {error.str()} (missing ACL: READ on "
                f"Group:{self.group})"
            )
        elif error.fatal():
            self.error = f"group {self.group}: {error.str()}"
        else:
            log.warning("HA lease (group %s): %s", self.group, error.str())

    def close(self) -> None:
        """Leave the group at once: a standby is assigned the lease without waiting for a timeout."""
        self.held = False  # given up, not lost: the revocation that closing brings is expected
        self.consumer.close()

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        if any(tp.partition == 0 for tp in partitions):
            self.held, self.lost = True, None
            log.info("HA lease (group %s) acquired", self.group)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_unassign(partitions)
        self._release(partitions, "revoked by a rebalance")

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_unassign(partitions)
        self._release(partitions, "lost: this member's session expired")

    def _release(self, partitions: list[TopicPartition], why: str) -> None:
        if self.held and any(tp.partition == 0 for tp in partitions):
            self.held = False
            self.lost = f"the HA lease (group {self.group}) was {why}"
            log.warning("%s", self.lost)  # an active then stops; one taking over waits for it a little
