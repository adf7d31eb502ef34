from connector.kite import Tick
from connector.serde._transcode import Transcoder

# Both raise ValueError, TypeError or OverflowError on what does not fit; message and prefix must be
# bytes (a bytearray or memoryview raises TypeError).
def encode_tick(tick: Tick, received_at_ms: int, /) -> bytes: ...

transcode: Transcoder  # the rules and the return shape: connector/serde/_transcode.py

def use_crc_fold(on: bool, /) -> bool:
    """Tick ids fold with PCLMULQDQ if ``on`` and the CPU can (else the tables alone: tests compare both);
    whether they did before."""

class Arbiter:
    """connector.arbiter.ArbiterPy in C: tokens and tick ids in 0..2**32-1 (else OverflowError), times in
    64 bits."""

    def __init__(self, window_ms: int = 5000, per_token: int = 256) -> None: ...
    @property
    def window_ms(self) -> int: ...
    @property
    def per_token(self) -> int: ...
    def first(self, token: int, tick_id: int, now_ms: int, /) -> bool: ...
