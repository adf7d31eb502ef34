from connector.kite import Tick
from connector.serde._transcode import Transcoded

# Both raise ValueError, TypeError or OverflowError on what does not fit; message and prefix must be
# bytes (a bytearray or memoryview raises TypeError). transcode: see connector/serde/_transcode.py.
def encode_tick(tick: Tick, received_at_ms: int, /) -> bytes: ...
def transcode(
    message: bytes,
    received_at_ms: int,
    prefix: bytes,
    window_ms: int,
    tokens: set[int] | frozenset[int] | None,
    /,
) -> Transcoded | None: ...
