"""``kite-connector``: one command, one subcommand per job."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from connector import kite
from connector.errors import ConnectorError, MalformedFrame

__all__ = ["main"]


def _decode_line(line: str) -> list[dict[str, Any]]:
    try:
        data = base64.b64decode(line, validate=True)
    except binascii.Error as exc:
        raise MalformedFrame(f"not base64: {exc}", line.encode()) from exc
    if data[:1] == b"{":
        record = kite.parse_text(data)
        kind = type(record).__name__
        return [
            {
                "type": kind,
                **(record.to_json_dict() if isinstance(record, kite.OrderUpdate) else record._asdict()),
            }
        ]
    ticks, errors = kite.parse_binary(data)
    if errors:
        if not ticks:
            raise errors[0]
        for error in errors:
            print(f"warning: {error}", file=sys.stderr)
    return [{"type": "Tick", **t.to_json_dict()} for t in ticks]


def decode_stream(lines: TextIO, out: TextIO, err: TextIO) -> int:
    """Base64 WebSocket messages in, one JSON object per record out; returns how many lines failed."""
    failed = 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            for record in _decode_line(line):
                out.write(json.dumps(record) + "\n")
        except MalformedFrame as exc:
            failed += 1
            err.write(f"line {number}: {exc}\n")
    return failed


def _cmd_decode(_: argparse.Namespace) -> int:
    return 1 if decode_stream(sys.stdin, sys.stdout, sys.stderr) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kite-connector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    decode = sub.add_parser(
        "decode", help="decode base64 WebSocket messages (one per line) from stdin to JSON"
    )
    decode.set_defaults(func=_cmd_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConnectorError as exc:
        print(f"kite-connector: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
