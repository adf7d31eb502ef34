"""The WebSocket frame reader (sans-I/O), against frames built by websocket-client's own encoder."""

from __future__ import annotations

import pytest
import websocket
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import SourceError
from connector.source._frames import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, Frame, FrameReader


def frame(opcode: int, payload: bytes, fin: bool = True, rsv1: int = 0, mask: int = 0) -> bytes:
    return websocket.ABNF(int(fin), rsv1, 0, 0, opcode, mask, payload).format()


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Frame]:
    reader, out, start = FrameReader(), [], 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += reader.feed(data[start:cut])
        start = cut
    return out


payloads = st.binary(max_size=70_000)


@given(st.lists(st.tuples(st.sampled_from([OP_TEXT, OP_BINARY]), payloads), max_size=5), st.data())
@settings(max_examples=60, deadline=None)
def test_messages_come_out_whole_however_the_bytes_are_split(
    messages: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(frame(op, payload) for op, payload in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    assert feed_in_pieces(stream, cuts) == [Frame(op, payload) for op, payload in messages]


def test_fragments_are_joined_and_control_frames_may_come_between_them() -> None:
    stream = (
        frame(OP_BINARY, b"ab", fin=False)
        + frame(OP_PING, b"are you there")
        + frame(0x0, b"cd", fin=False)
        + frame(0x0, b"ef")
        + frame(OP_CLOSE, b"\x03\xe8")
    )
    assert FrameReader().feed(stream) == [
        Frame(OP_PING, b"are you there"),
        Frame(OP_BINARY, b"abcdef"),
        Frame(OP_CLOSE, b"\x03\xe8"),
    ]


@pytest.mark.parametrize(
    ("stream", "complaint"),
    [
        (frame(OP_BINARY, b"x", mask=1), "masked"),
        (frame(OP_BINARY, b"x", rsv1=1), "reserved"),
        (b"\x83\x01x", "unknown opcode"),  # FIN + opcode 3, which RFC 6455 reserves
        (frame(0x0, b"x"), "continuation"),
        (frame(OP_PING, b"x", fin=False), "control frame"),
        (frame(OP_PING, b"x" * 126), "control frame"),
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), "before the fragmented one ended"),
        (frame(OP_BINARY, b"x" * 200), "exceeds"),
    ],
)
def test_protocol_violations_are_errors(stream: bytes, complaint: str) -> None:
    with pytest.raises(SourceError, match=complaint):
        FrameReader(max_message=100).feed(stream)
