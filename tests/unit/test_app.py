"""``run``'s start-up: which instruments, over how many connections."""

from __future__ import annotations

import pytest

from connector.app import parse_subscriptions, shard
from connector.errors import ConfigError
from connector.instruments import Instruments, read_instruments
from connector.kite import Mode
from tests.conftest import FIXTURES


def test_subscriptions_by_token_and_symbol_with_modes() -> None:
    instruments = Instruments(read_instruments(FIXTURES / "instruments_all.csv"))
    subs = parse_subscriptions("256265@ltp, NSE:EMMBI-BL ,3813889@quote", "full", instruments)
    assert subs == {256265: Mode.LTP, 4645121: Mode.FULL, 3813889: Mode.QUOTE}
    with pytest.raises(ConfigError, match="not in the instruments file"):
        parse_subscriptions("NSE:NOSUCH", "full", instruments)
    with pytest.raises(ConfigError, match="needs KITE_INSTRUMENTS_FILE"):
        parse_subscriptions("NSE:INFY", "full", None)
    with pytest.raises(ConfigError, match="mode must be"):
        parse_subscriptions("1@turbo", "full", None)
    with pytest.raises(ConfigError, match="empty"):
        parse_subscriptions(" ", "full", None)


def test_more_than_3000_instruments_are_sharded_and_9000_is_the_limit() -> None:
    assert [len(s) for s in shard({t: Mode.FULL for t in range(7000)})] == [3000, 3000, 1000]
    with pytest.raises(ConfigError, match="at most 9000 instruments with KITE_LINES=1"):
        shard({t: Mode.FULL for t in range(9001)})
