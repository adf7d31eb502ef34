"""The reconciler: Kite's order book, fetched after every (re)connect and on an interval, on a thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from connector.logs import sample
from connector.orders._book import OrderBook
from connector.orders._desk import OrderDesk
from connector.orders._rest import fetch_orders

__all__ = ["Reconciler"]

log = logging.getLogger("connector.orders")


class Reconciler:
    """Hands what the order book knows and the socket did not say to the desk, which the listener
    that owns a producer publishes. :meth:`run` is the body of a supervised thread."""

    def __init__(
        self,
        url: str,
        api_key: str,
        token: Callable[[], str],
        book: OrderBook,
        desk: OrderDesk,
        interval: float | None,
    ) -> None:
        self.url, self.api_key, self.token = url, api_key, token
        self.book, self.desk, self.interval = book, desk, interval
        self._wake = threading.Event()
        self._sampled = sample(logging.getLogger("connector.orders.reconcile"), interval=300)

    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if stop.is_set():
                return
            try:
                self.reconcile()
            except Exception as exc:  # Kite unreachable, token expired: the next round tries again
                self.desk.stats.reconcile_errors += 1
                self._sampled.error(
                    "order reconciliation failed: %s", exc, exc_info=not isinstance(exc, OSError)
                )

    def reconcile(self) -> None:
        """One round: fetch, compare with what was seen, hand over what was missed."""
        fetched = fetch_orders(self.url, self.api_key, self.token())
        missed = {id(u) for u in self.book.reconcile(o.update for o in fetched.orders)}
        orders = [o for o in fetched.orders if id(o.update) in missed]
        self.desk.hand_over(orders, fetched.malformed)
        self.desk.stats.reconciled_at = time.time()
        if orders:
            log.warning("reconciliation: %d order updates the socket did not deliver", len(orders))
