"""The HA set as one process takes part in it: the lease, a standby's upkeep, and the takeover.

One supervised thread (:meth:`HaCoordinator.run`) polls the lease. While standby it also prunes the order
log of what the active has committed. Once the lease is this instance's, the takeover:

1. every shard's sink gets its producer id (``init_transactions``, on the sinks' own threads, together):
   from then on nothing the old active had not committed can become visible;
2. the tail of the checked topics is read back (``read_committed``) from a little before the oldest
   buffered record, and of the order-update topic from before the oldest update no sink produced: the
   bulk while step 1 is under way, the rest once it is done;
3. order updates found there leave the order log; each shard produces what Kafka lacks of its buffer,
   flagged ``kite.replayed``, then its live records; the order updates still waiting follow, flagged too.
   (On a cold start, with nothing in Kafka within the window, nothing written can repeat anything: no
   flag then.)

Active, it makes the first shard's sink adopt any order update left with no sink, and watches that the
lease stays: an active that loses it (its session expired) stops, so that the process exits and comes
back as a standby.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer

from connector.ha._lease import Lease
from connector.ha._sink import HaSink
from connector.ha._stats import HaStats
from connector.ha._tail import IdentOf, OrderWatcher, Tail, order_ident
from connector.orders import OrderDesk

__all__ = ["ORDER_LOOKBACK_MS", "TICK_LOOKBACK_MS", "HaCoordinator"]

log = logging.getLogger("connector.ha")
# How far before a buffered record's Kafka timestamp the same record may be stamped by the old active: a
# tick without an exchange time is stamped on receipt, which differs between instances by their lines'
# delays. Order updates from reconciliation are stamped when fetched, up to a reconcile interval apart.
TICK_LOOKBACK_MS = 10_000
ORDER_LOOKBACK_MS = 600_000
_POLL = 0.05
# A lease lost while taking over (nothing produced yet), in session timeouts, before giving up: a broker
# back from a pause answers "not coordinator" for a moment, the session expires, and the member, alone,
# is assigned the lease again on rejoining. Regained, the takeover goes on; if another member took it
# meanwhile, its init_transactions fenced these producers, so nothing written here can become visible.
_REGAIN_SESSIONS = 5


class HaCoordinator:
    """See the module's docstring; ``checked``: topic → how its records are named (ticks, dead letters)."""

    def __init__(
        self,
        lease: Lease,
        sinks: list[HaSink],
        desk: OrderDesk,
        stats: HaStats,
        tail: Consumer,
        checked: Mapping[str, IdentOf],
        order_topic: str,
        watcher: OrderWatcher | None = None,
    ) -> None:
        self.lease, self.sinks, self.desk, self.stats = lease, sinks, desk, stats
        self.tail, self.checked, self.order_topic, self.watcher = tail, checked, order_topic, watcher
        self._failure: str | None = None
        self._joined = False
        self._taking_over = False

    # -- what the supervisor and /healthz read ---------------------------------------------------------
    @property
    def name(self) -> str:
        return "ha"

    def up(self) -> bool:
        return self.failure() is None

    def failure(self) -> str | None:
        return self._failure or next((why for s in self.sinks if (why := s.failure()) is not None), None)

    def role(self) -> str:
        if self.stats.active:
            return "active"
        return "taking over" if self._taking_over else "standby"

    # -- the thread --------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        if not self._joined:
            self.lease.join()
            self._joined = True
        while not stop.is_set() and self.failure() is None:
            self.lease.poll(_POLL)
            if self.lease.error is not None:
                self._failure = self.lease.error
            elif self.stats.active:
                self._keep()
            elif self.lease.held:
                self._take_over(stop)
            elif self.watcher is not None and self.watcher.poll():
                self.desk.settle_delivered(self.watcher.seen)
        stop.wait()  # a failure is the runtime's to act on (it exits); the thread stays until asked

    def _keep(self) -> None:
        if not self.lease.held:
            log.error("the HA lease is no longer this instance's: stopping, to come back as a standby")
            self._failure = self.lease.lost or "the HA lease is no longer this instance's"
            return
        self.desk.attach(self.sinks[0])  # updates committed with no sink while a shard was standby

    def _take_over(self, stop: threading.Event) -> None:
        started = time.monotonic()
        self._taking_over = True
        log.info("HA lease acquired: taking over")
        for sink in self.sinks:
            sink.prepare()
        tail = self._tail()
        tail.read_to_end()  # the bulk, while the producer ids come
        if not self._wait(stop, lambda: self.lease.held and all(s.prepared.is_set() for s in self.sinks)):
            return
        fenced = time.monotonic()
        tail.read_to_end()  # what the old active committed meanwhile: nothing more can come now
        present, read = tail.present, tail.read
        settled = self.desk.settle_delivered({i[2].decode() for i in present if i[0] == self.order_topic})
        # Nothing written within the window (a cold start): nothing written now can repeat anything.
        replayed = sum(sink.activate(present, flag=read > 0) for sink in self.sinks)
        if self.watcher is not None:
            self.watcher.stop()
        if read:
            with self.sinks[0].replaying_orders():
                orders = self.desk.attach(self.sinks[0])
        else:
            orders = self.desk.attach(self.sinks[0])
        took = time.monotonic() - started
        stats = self.stats
        stats.active, self._taking_over = True, False
        stats.takeovers += 1
        stats.last_takeover_seconds = took
        log.info(
            "HA: active in %.2f s (producer ids after %.2f s; %d records read back; %d buffered records and "
            "%d order updates produced from the standby's buffer and log, %d already in Kafka)",
            took, fenced - started, read, replayed, orders, settled + stats.present,
            extra={"fields": {"ha_active_at": time.time(), "ha_takeover_seconds": round(took, 3),
                              "ha_replayed": replayed + orders, "ha_read_back": read}},
        )  # fmt: skip

    def _tail(self) -> Tail:
        """What to read back: the checked topics from a little before the oldest buffered record, the
        order updates from before the oldest one no sink produced."""
        topics: dict[str, tuple[int, IdentOf]] = {}
        oldest = [ms for s in self.sinks if (ms := s.oldest_timestamp_ms()) is not None]
        if oldest:
            topics.update({t: (min(oldest) - TICK_LOOKBACK_MS, f) for t, f in self.checked.items()})
        orders_since = self.desk.unsent_since_ms()
        if orders_since is not None:
            topics[self.order_topic] = (orders_since - ORDER_LOOKBACK_MS, order_ident)
        return Tail(self.tail, topics)

    def _wait(self, stop: threading.Event, done: Callable[[], bool]) -> bool:
        """Poll the lease until ``done`` (which needs it held); False (with the failure said) if a sink
        fails first, or the lease is lost and not regained within a few session timeouts."""
        lost_at: float | None = None
        while not done():
            if stop.is_set():
                return False
            now = time.monotonic()
            if self.lease.held:
                lost_at = None
            elif lost_at is None:
                lost_at = now
                log.warning("HA lease lost during the takeover: waiting for it to come back")
            elif now - lost_at > _REGAIN_SESSIONS * self.lease.session_timeout:
                self._failure = self.lease.lost or "the HA lease was lost during the takeover"
            if self.failure() is not None:
                self._failure = self.failure()
                return False
            self.lease.poll(_POLL)
        return True

    def close(self) -> None:
        """After the sinks committed: leave the group, so that a standby takes over at once."""
        self.lease.close()
        self.tail.close()
        if self.watcher is not None:
            self.watcher.consumer.close()
