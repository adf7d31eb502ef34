from connector.kite import Tick
from connector.serde._transcode import Transcoder

# Both raise ValueError, TypeError or OverflowError on what does not fit; message and prefix must be
# bytes (a bytearray or memoryview raises TypeError).
def encode_tick(tick: Tick, received_at_ms: int, /) -> bytes: ...

transcode: Transcoder  # the rules and the return shape: connector/serde/_transcode.py
