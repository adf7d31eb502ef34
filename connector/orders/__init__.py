"""Order updates end to end: identity, the write-ahead log, the desk (dedup and outbox) and reconciliation.

An order update must never be lost: it is durable in the log before it is produced, produced again
until Kafka acknowledges it, and what the socket missed is fetched from Kite's order book.
"""

from connector.orders._book import OrderBook
from connector.orders._desk import OrderDesk, OrderStats, Taken
from connector.orders._identity import (
    ORIGIN_HEADER,
    ORIGIN_RECONCILIATION,
    ORIGIN_WEBSOCKET,
    ORIGINS,
    RECORD_ID_HEADER,
    OrderRecord,
    record_id,
)
from connector.orders._log import ORDER_LOG_FILE, OrderLog, open_order_log
from connector.orders._reconciler import Reconciler
from connector.orders._rest import MAX_ORDERS_BODY, FetchedOrder, OrderList, fetch_orders, parse_orders

__all__ = [
    "MAX_ORDERS_BODY",
    "ORDER_LOG_FILE",
    "ORIGINS",
    "ORIGIN_HEADER",
    "ORIGIN_RECONCILIATION",
    "ORIGIN_WEBSOCKET",
    "RECORD_ID_HEADER",
    "FetchedOrder",
    "OrderBook",
    "OrderDesk",
    "OrderList",
    "OrderLog",
    "OrderRecord",
    "OrderStats",
    "Reconciler",
    "Taken",
    "fetch_orders",
    "open_order_log",
    "parse_orders",
    "record_id",
]
