"""The listener's parts that need no server: reconnect delays, the access token source, the socket reader."""

from __future__ import annotations

import itertools
import os
import resource
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from connector.errors import ConfigError
from connector.source import LineGroup, TokenSource, backoff
from connector.source._frames import FrameReader
from connector.source._listener import _socket_reader


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    delays = list(itertools.islice(backoff(0.5, 8.0), 12))
    assert 0.25 <= delays[0] <= 0.5
    assert all(4.0 <= d <= 8.0 for d in delays[6:])
    assert len(set(delays)) == len(delays)


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    tokens = TokenSource(None, path)
    assert tokens.get() == "one"
    path.write_text("second\n")
    assert tokens.get() == "second"


def test_no_token_at_all_is_a_config_error_and_a_missing_file_says_which() -> None:
    with pytest.raises(ConfigError, match="KITE_ACCESS_TOKEN"):
        TokenSource(None, None)
    with pytest.raises(ConfigError, match="cannot read KITE_ACCESS_TOKEN_FILE /nonexistent/token"):
        TokenSource(None, "/nonexistent/token").get()


@pytest.mark.parametrize("high", [False, True], ids=["select", "poll past FD_SETSIZE"])
def test_the_socket_reader_waits_on_either_side_of_selects_descriptor_limit(high: bool) -> None:
    """A short ack wait goes through select() (it keeps microseconds); a descriptor select() cannot take
    goes through poll() instead of failing the listener."""
    ours, theirs = socket.socketpair()
    if high:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard <= 1100:
            pytest.skip(f"RLIMIT_NOFILE {hard} leaves no descriptor past 1024")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1101), hard))
        fd = os.dup2(ours.fileno(), 1100)
        ours.close()
        ours = socket.socket(fileno=fd)
    try:
        read = _socket_reader(ours)
        assert read(0.0003) is None
        theirs.sendall(b"\x81\x00")
        assert read(1) == b"\x81\x00"
        theirs.close()
        assert read(1) == b""
    finally:
        ours.close()


def test_a_closed_line_group_keeps_its_wake_sockets_until_its_last_line_leaves() -> None:
    group = LineGroup()
    wake = group._wake_r, group._wake_w
    line = object()
    group._lines.append(line)  # type: ignore[arg-type]
    group._leave(line)  # type: ignore[arg-type]  # a reconnect: the group lives on
    assert all(sock.fileno() != -1 for sock in wake)
    group._lines.append(line)  # type: ignore[arg-type]  # a line that outlived its join
    group.close()
    assert all(sock.fileno() != -1 for sock in wake)
    group._leave(line)  # type: ignore[arg-type]
    assert all(sock.fileno() == -1 for sock in wake)


def test_a_line_joining_a_closed_group_ends_if_stopping_and_is_refused_loudly_if_not() -> None:
    group = LineGroup()
    group.close()
    ours, theirs = socket.socketpair()
    try:
        ws = SimpleNamespace(sock=ours)
        stopping, running = SimpleNamespace(stopping=True), SimpleNamespace(stopping=False)
        assert group.serve(stopping, ws, FrameReader()) == "stopped"  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="closed line group"):
            group.serve(running, ws, FrameReader())  # type: ignore[arg-type]
        assert group._lines == []
    finally:
        ours.close()
        theirs.close()
