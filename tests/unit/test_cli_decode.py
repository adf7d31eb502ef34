from __future__ import annotations

import base64
import io
import json
from typing import Any

from connector.cli import decode_stream
from connector.kite import encode_message
from tests.conftest import fixture_packet


def test_decode_prints_ticks_and_orders_and_reports_bad_lines(postback: dict[str, Any]) -> None:
    lines = [
        base64.b64encode(encode_message([fixture_packet("ticker_full")])).decode(),
        "not base64!",
        base64.b64encode(json.dumps({"type": "order", "data": postback}).encode()).decode(),
        base64.b64encode(b"\x00\x01\x00\x05abcde").decode(),
    ]
    out, err = io.StringIO(), io.StringIO()
    failed = decode_stream(io.StringIO("\n".join(lines)), out, err)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert failed == 2
    assert [r["type"] for r in records] == ["Tick", "OrderUpdate"]
    assert records[0]["last_price"] == 1573.7
    assert records[0]["exchange_timestamp"] == "2021-07-05T05:11:27Z"
    assert records[1]["order_timestamp"] == "2022-03-03T03:54:25Z"
    assert "line 2:" in err.getvalue() and "line 4:" in err.getvalue()
