"""Supervision: no thread of the process ends unseen.

Every thread the process starts is either a :class:`SupervisedThread` (a body run again after it raises,
within a failure budget) or something else the :class:`Supervisor` watches (a listener, which rebuilds
its own pipeline). Each says whether it is up and, once it gave up or ended while nobody asked it to,
why: :meth:`Supervisor.failure` is what ``/healthz`` shows and what makes ``run`` exit for its restart
policy. Failures are logged with their traceback and counted by thread name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["FailureBudget", "SupervisedThread", "Supervisor", "Watched"]

log = logging.getLogger("connector.supervise")
RESTART_DELAY = 1.0  # a body that raised starts again after this long


class FailureBudget:
    """At most ``limit`` failures within ``window`` seconds; None: no limit."""

    def __init__(self, limit: int | None, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._times: deque[float] = deque()

    def spend(self) -> bool:
        """Records a failure; False once there were more than ``limit`` within ``window``."""
        now = self._clock()
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return self.limit is None or len(self._times) <= self.limit


class Watched(Protocol):
    @property
    def name(self) -> str: ...

    def up(self) -> bool:
        """Running (or not started yet, or stopped on request)."""
        ...

    def failure(self) -> str | None:
        """Why it no longer does its work, or None."""
        ...


class SupervisedThread:
    """Runs ``body(stop)`` on a daemon thread until ``stop`` is set.

    An exception from the body is logged with its traceback, counted in ``failures[name]`` and the body
    is started again after :data:`RESTART_DELAY`, as long as ``budget`` allows; then the thread gives
    up. A body that returns while ``stop`` is not set has ended unexpectedly: that is a failure too.
    """

    def __init__(
        self,
        name: str,
        body: Callable[[threading.Event], None],
        budget: FailureBudget,
        failures: Counter[str],
    ) -> None:
        self._name, self.body, self.budget, self.failures = name, body, budget, failures
        self.stop_event = threading.Event()
        self.gave_up: str | None = None
        self.last_failure: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def name(self) -> str:
        return self._name

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def up(self) -> bool:
        started = self._thread.ident is not None
        return self.gave_up is None and (not started or self._thread.is_alive() or self.stop_event.is_set())

    def failure(self) -> str | None:
        if self.gave_up is not None:
            return f"thread {self._name} gave up: {self.gave_up}"
        if not self.up():
            return f"thread {self._name} ended"
        return None

    def _run(self) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    self.body(self.stop_event)
                except Exception as exc:  # the thread's top: nothing may end it unseen
                    self._failed(f"{type(exc).__name__}: {exc}", exc)
                    if self.gave_up is not None:
                        return
                    self.stop_event.wait(RESTART_DELAY)
                    continue
                if not self.stop_event.is_set():
                    self._failed("returned while still needed", None)
                    if self.gave_up is not None:
                        return
        except BaseException as exc:  # not an Exception: recorded, and the thread ends as it must
            self.gave_up = f"{type(exc).__name__}: {exc}"
            log.critical("thread %s ended by %s", self._name, self.gave_up)
            raise

    def _failed(self, reason: str, exc: BaseException | None) -> None:
        self.failures[self._name] += 1
        self.last_failure = reason
        if self.budget.spend():
            log.error("thread %s failed (%s); starting it again", self._name, reason, exc_info=exc)
        else:
            self.gave_up = reason
            log.critical("thread %s failed too often (%s); giving up", self._name, reason, exc_info=exc)


class Supervisor:
    """The threads of one process, and how they are doing."""

    def __init__(self, limit: int | None = 5, window: float = 600.0) -> None:
        self.limit, self.window = limit, window
        self.failures: Counter[str] = Counter()  # by thread name
        self.watched: list[Watched] = []

    def spawn(self, name: str, body: Callable[[threading.Event], None]) -> SupervisedThread:
        """A supervised thread running ``body`` (not started yet)."""
        thread = SupervisedThread(name, body, FailureBudget(self.limit, self.window), self.failures)
        self.watched.append(thread)
        return thread

    def watch(self, thing: Watched) -> None:
        self.watched.append(thing)

    def failure(self) -> str | None:
        """The first reason a watched thread no longer works, or None."""
        return next((why for w in self.watched if (why := w.failure()) is not None), None)

    def states(self) -> list[tuple[str, bool]]:
        """(thread name, up) of every watched thread."""
        return [(w.name, w.up() and w.failure() is None) for w in self.watched]
