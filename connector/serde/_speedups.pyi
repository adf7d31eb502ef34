from connector.kite import Tick

# Both raise ValueError, TypeError or OverflowError on what does not fit; message and prefix must be
# bytes (a bytearray or memoryview raises TypeError).
def encode_tick(tick: Tick, received_at_ms: int, /) -> bytes: ...
def transcode(
    message: bytes,
    received_at_ms: int,
    prefix: bytes,
    window_ms: int = -1,
    tokens: set[int] | None = None,
    /,
) -> tuple[list[tuple[bytes, bytes, int]], int, int, int] | None: ...
