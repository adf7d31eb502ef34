"""Server-to-client WebSocket frames (RFC 6455, section 5.2) parsed from bytes; no socket here.

websocket-client opens the connection and sends; the listener reads the socket itself through this
parser. One ``recv`` then yields every frame it holds (websocket-client makes about three system calls
per frame), and the listener can wait on the socket with a short bound without an exception per wait.
"""

from __future__ import annotations

from typing import NamedTuple

from connector.errors import SourceError

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG", "OP_TEXT", "Frame", "FrameReader"]

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (OP_TEXT, OP_BINARY)
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)


class Frame(NamedTuple):
    """A whole message (text or binary, fragments joined) or a control frame."""

    opcode: int
    payload: bytes


class FrameReader:
    """Feed it what the socket gives; it returns the frames completed so far and keeps the rest.

    A frame that breaks the protocol raises :class:`SourceError`: the connection cannot be trusted
    after it, so the listener drops it and connects again.
    """

    def __init__(self, max_message: int = 64 << 20) -> None:
        self.max_message = max_message  # Kite's largest (3000 instruments in full mode) is ~0.6 MB
        self._rest = b""
        self._fragments: list[bytes] = []
        self._fragmented_opcode = 0

    def feed(self, data: bytes) -> list[Frame]:
        src = self._rest + data if self._rest else data
        frames: list[Frame] = []
        pos, end = 0, len(src)
        while end - pos >= 2:
            b0, b1 = src[pos], src[pos + 1]
            size, head = b1 & 0x7F, 2
            if size == 126:
                head = 4
                if end - pos < head:
                    break
                size = int.from_bytes(src[pos + 2 : pos + 4], "big")
            elif size == 127:
                head = 10
                if end - pos < head:
                    break
                size = int.from_bytes(src[pos + 2 : pos + 10], "big")
            self._check_header(b0, b1, size)
            stop = pos + head + size
            if stop > end:
                break
            self._complete(b0, src[pos + head : stop], frames)
            pos = stop
        self._rest = src[pos:]
        return frames

    def _check_header(self, b0: int, b1: int, size: int) -> None:
        if b1 & 0x80:
            raise SourceError("the server sent a masked frame (RFC 6455 forbids it)")
        if b0 & 0x70:
            raise SourceError("the server set reserved frame bits without a negotiated extension")
        opcode = b0 & 0x0F
        if opcode not in _CONTROL and opcode not in _DATA and opcode != OP_CONTINUATION:
            raise SourceError(f"the server sent unknown opcode {opcode:#x}")
        if opcode in _CONTROL and (size > 125 or not b0 & 0x80):
            raise SourceError("the server sent a fragmented or oversized control frame")
        if size > self.max_message:
            raise SourceError(f"a {size}-byte frame exceeds the {self.max_message}-byte limit")

    def _complete(self, b0: int, payload: bytes, frames: list[Frame]) -> None:
        opcode, final = b0 & 0x0F, b0 & 0x80
        if opcode in _CONTROL:  # may arrive between the fragments of a message
            frames.append(Frame(opcode, payload))
        elif opcode != OP_CONTINUATION:
            if self._fragmented_opcode:
                raise SourceError("a new message started before the fragmented one ended")
            if final:
                frames.append(Frame(opcode, payload))
            else:
                self._fragmented_opcode, self._fragments = opcode, [payload]
        else:
            if not self._fragmented_opcode:
                raise SourceError("a continuation frame arrived outside a fragmented message")
            self._fragments.append(payload)
            if sum(map(len, self._fragments)) > self.max_message:
                raise SourceError(f"a fragmented message exceeds the {self.max_message}-byte limit")
            if final:
                frames.append(Frame(self._fragmented_opcode, b"".join(self._fragments)))
                self._fragmented_opcode, self._fragments = 0, []
