from connector.kite._records import Mode, Tick

# message must be bytes (a bytearray or memoryview raises TypeError); tick must be a tuple subclass
def decode(message: bytes, tick: type[Tick], modes: tuple[Mode, ...], /) -> list[Tick] | None: ...
