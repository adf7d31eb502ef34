"""Supervision: a thread that raises is started again within its budget, and nothing ends unseen."""

from __future__ import annotations

import logging
import threading

import pytest

from connector import supervise
from connector.supervise import FailureBudget, Supervisor


def test_the_failure_budget_counts_within_its_window_only() -> None:
    now = [0.0]
    budget = FailureBudget(2, 60, clock=lambda: now[0])
    assert budget.spend() and budget.spend()
    now[0] = 61
    assert budget.spend() and budget.spend(), "old failures leave the window"
    assert not budget.spend(), "the third within 60 s is one too many"
    assert all(FailureBudget(None, 60).spend() for _ in range(100))


@pytest.fixture(autouse=True)
def _no_restart_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "RESTART_DELAY", 0.0)


def test_a_body_that_raises_is_run_again_then_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    def body(stop: threading.Event) -> None:
        runs.append(1)
        raise RuntimeError(f"bug {len(runs)}")

    supervisor = Supervisor(limit=2, window=600)
    thread = supervisor.spawn("worker", body)
    assert supervisor.failure() is None and thread.up(), "not started is not failed"
    with caplog.at_level(logging.ERROR, "connector.supervise"):
        thread.start()
        thread.join(5)
    assert len(runs) == 3, "run, restarted twice, then the budget is spent"
    assert supervisor.failures["worker"] == 3
    assert supervisor.failure() == "thread worker gave up: RuntimeError: bug 3"
    assert supervisor.states() == [("worker", False)]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 3, "each failure logged with its traceback"


def test_a_body_that_returns_while_needed_is_a_failure_and_one_that_is_stopped_is_not() -> None:
    supervisor = Supervisor(limit=0, window=600)
    quitter = supervisor.spawn("quitter", lambda stop: None)
    quitter.start()
    quitter.join(5)
    assert supervisor.failure() == "thread quitter gave up: returned while still needed"

    def wait(stop: threading.Event) -> None:
        stop.wait()

    polite = Supervisor().spawn("polite", wait)
    polite.start()
    polite.stop()
    polite.join(5)
    assert polite.failure() is None and polite.up()


def test_a_base_exception_ends_the_thread_but_not_unseen() -> None:
    def body(stop: threading.Event) -> None:
        raise SystemExit("from a callback")

    supervisor = Supervisor()
    thread = supervisor.spawn("victim", body)
    original = threading.excepthook
    threading.excepthook = lambda args: None  # the thread's own traceback is expected here
    try:
        thread.start()
        thread.join(5)
    finally:
        threading.excepthook = original
    assert supervisor.failure() == "thread victim gave up: SystemExit: from a callback"
