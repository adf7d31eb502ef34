"""The takeover's wait for the producer ids, with a lease that is lost meanwhile (a broker back from a
pause answers "not coordinator" for a moment): regained, the takeover goes on; not regained, it fails."""

from __future__ import annotations

import threading
from typing import Any

from connector.ha import HaCoordinator, HaStats


class _Lease:
    """Held, lost at the first poll, held again at poll ``back`` (never, if None)."""

    def __init__(self, back: int | None) -> None:
        self.back, self.polls = back, 0
        self.held = True
        self.lost: str | None = None
        self.session_timeout = 0.05

    def poll(self, timeout: float) -> None:
        self.polls += 1
        if self.polls == 1:
            self.held, self.lost = False, "the HA lease (group g) was lost: this member's session expired"
        elif self.polls == self.back:
            self.held, self.lost = True, None


class _Sink:
    def __init__(self) -> None:
        self.prepared = threading.Event()

    def failure(self) -> None:
        return None


def _coordinator(lease: _Lease, sink: _Sink) -> HaCoordinator:
    none: Any = None
    return HaCoordinator(lease, [sink], none, HaStats(), none, {}, "orders")  # type: ignore[arg-type, list-item]


def _done(lease: _Lease, sink: _Sink) -> bool:
    if lease.polls >= 2:
        sink.prepared.set()  # the producer id comes while the lease is away
    return lease.held and sink.prepared.is_set()


def test_a_lease_lost_and_regained_during_the_takeover_lets_it_go_on() -> None:
    lease, sink = _Lease(back=5), _Sink()
    coordinator = _coordinator(lease, sink)
    assert coordinator._wait(threading.Event(), lambda: _done(lease, sink))
    assert coordinator.failure() is None and lease.polls == 5


def test_a_lease_not_regained_within_a_few_session_timeouts_fails_the_takeover() -> None:
    lease, sink = _Lease(back=None), _Sink()
    coordinator = _coordinator(lease, sink)
    assert not coordinator._wait(threading.Event(), lambda: _done(lease, sink))
    assert coordinator.failure() == "the HA lease (group g) was lost: this member's session expired"
