"""Decode the same full-mode messages (50 packets each) with this codec and with kiteconnect's decoder.

Run: python bench/decode.py [messages]. Prints both rates; the last line is the speed-up (median rates).
"""

from __future__ import annotations

import sys

from _common import best_rate, full_messages
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
    ours_rate, ours_best = best_rate(ours)
    theirs_rate, theirs_best = best_rate(theirs)
    print(f"packets: {ours()} in {len(messages)} messages of 50 full-mode packets")
    print(f"connector.kite  {ours_rate:12,.0f} packets/s (best {ours_best:,.0f})")
    print(f"kiteconnect     {theirs_rate:12,.0f} packets/s (best {theirs_best:,.0f})")
    print(f"decode_speedup_vs_kiteconnect={ours_rate / theirs_rate:.1f}")


if __name__ == "__main__":
    main()
