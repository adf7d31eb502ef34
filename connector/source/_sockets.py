"""Waiting on and reading the listeners' sockets: shared by one line's reader and a group's."""

from __future__ import annotations

import math
import select
import socket
from collections.abc import Callable, Sequence

__all__ = ["RECV_BYTES", "readable", "tls_pending"]

RECV_BYTES = 1 << 16  # under glibc's mmap threshold: recv buffers come from the heap


def readable(fds: Sequence[int], wait: float) -> set[int]:
    """The descriptors of ``fds`` readable within ``wait`` seconds.

    select() keeps the microseconds of a short ack wait, which poll() would round up to a whole
    millisecond; past select()'s descriptor limit, poll() it is."""
    try:
        return set(select.select(fds, (), (), wait)[0])
    except ValueError:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return {fd for fd, _ in poller.poll(math.ceil(wait * 1000))}


def tls_pending(sock: socket.socket) -> Callable[[], int] | None:
    """How many decrypted bytes TLS holds that the descriptor does not show (a read needs no wait for
    them); None for a plain socket."""
    return getattr(sock, "pending", None)
