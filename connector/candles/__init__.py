"""``kite-connector candles``: OHLCV bars from the ticks topic, in event time, exactly once."""

from connector.candles._bars import Candle, Interval, PartitionBars, bar_start, parse_intervals
from connector.candles._decode import TickDecoder, TickFacts
from connector.candles._processor import CandleProcessor, serve

__all__ = [
    "Candle",
    "CandleProcessor",
    "Interval",
    "PartitionBars",
    "TickDecoder",
    "TickFacts",
    "bar_start",
    "parse_intervals",
    "serve",
]
