"""Hot standby across processes: an active/standby set elected through Kafka, with takeover by buffer.

Instances with the same ``HA_GROUP`` form one set. The lease is membership of a Kafka consumer group
(:mod:`~connector.ha._lease`); the active produces transactionally, so a newer active fences an older one
(:mod:`~connector.ha._sink`); a standby buffers what it would have produced (:mod:`~connector.ha._buffer`)
and at takeover writes what Kafka lacks (:mod:`~connector.ha._coordinator`, :mod:`~connector.ha._tail`).
"""

from connector.ha._buffer import Entry, Ident, RecordBuffer
from connector.ha._coordinator import ORDER_LOOKBACK_MS, TICK_LOOKBACK_MS, HaCoordinator
from connector.ha._ident import (
    INSTANCE_HEADER,
    REPLAYED,
    REPLAYED_HEADER,
    TICK_ID_HEADER,
    dead_letter_ident,
    header,
    tick_ident,
)
from connector.ha._lease import Lease
from connector.ha._metrics import HaCollector
from connector.ha._sink import TRANSACTION_TIMEOUT_MS, HaSink, HaSinkConfig, Role
from connector.ha._stats import HaStats
from connector.ha._tail import OrderWatcher, Tail, committed_consumer, order_ident

__all__ = [
    "INSTANCE_HEADER",
    "ORDER_LOOKBACK_MS",
    "REPLAYED",
    "REPLAYED_HEADER",
    "TICK_ID_HEADER",
    "TICK_LOOKBACK_MS",
    "TRANSACTION_TIMEOUT_MS",
    "Entry",
    "HaCollector",
    "HaCoordinator",
    "HaSink",
    "HaSinkConfig",
    "HaStats",
    "Ident",
    "Lease",
    "OrderWatcher",
    "RecordBuffer",
    "Role",
    "Tail",
    "committed_consumer",
    "dead_letter_ident",
    "header",
    "order_ident",
    "tick_ident",
]
