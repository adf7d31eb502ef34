"""Decode the same full-mode messages (50 packets each) with this codec and with kiteconnect's decoder.

Run: python bench/decode.py [messages]. Prints both rates; the last line is the speed-up (median rates).
"""

from __future__ import annotations

import sys

from _common import compare, full_messages
from kiteconnect import KiteTicker

from connector.kite import parse_binary


def main() -> None:
    messages = full_messages(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
    official = KiteTicker("api_key", "access_token")

    def ours() -> int:
        return sum(len(parse_binary(m)[0]) for m in messages)

    def theirs() -> int:
        return sum(len(official._parse_binary(m)) for m in messages)

    assert ours() == theirs()
    print(f"packets: {ours()} in {len(messages)} messages of 50 full-mode packets")
    compare("packets", "decode_speedup_vs_kiteconnect", ("connector.kite", ours), ("kiteconnect", theirs))


if __name__ == "__main__":
    main()
