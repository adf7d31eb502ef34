"""``kite-connector login``: the daily Kite Connect login, ending in the token file the runtime watches.

1. The user opens the login URL for the api_key and signs in; Kite redirects with a ``request_token``.
2. The request token is exchanged at ``/session/token`` with checksum = SHA-256(api_key + request_token +
   api_secret).
3. The access token is written atomically, mode 0600, to ``KITE_ACCESS_TOKEN_FILE``; a running connector
   picks it up without a restart. Neither the secret nor any token is ever printed or logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from connector.config import LoginSettings
from connector.errors import AuthError

__all__ = ["exchange_request_token", "login", "login_url", "write_token_file"]


def login_url(base: str, api_key: str) -> str:
    return f"{base}?{urllib.parse.urlencode({'v': '3', 'api_key': api_key})}"


def exchange_request_token(api_url: str, api_key: str, request_token: str, api_secret: str) -> str:
    """The access token for a request token; raises :class:`AuthError` with Kite's reason (no secrets)."""
    checksum = hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()
    body = urllib.parse.urlencode({"api_key": api_key, "request_token": request_token, "checksum": checksum})
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/session/token",
        data=body.encode(),
        method="POST",
        headers={"X-Kite-Version": "3"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("message", exc.reason)
        except ValueError:
            reason = exc.reason
        raise AuthError(
            f"Kite refused the login (HTTP {exc.code}: {reason}); check KITE_API_SECRET and use a "
            "fresh request_token (they are single-use and short-lived)"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AuthError(f"cannot reach {api_url}: {type(exc).__name__}") from None
    token = answer.get("data", {}).get("access_token") if isinstance(answer, dict) else None
    if not token:
        raise AuthError("Kite's session answer has no access_token")
    return str(token)


def write_token_file(path: str | Path, token: str) -> None:
    """Replace ``path`` with the token, atomically, readable by the owner only."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def login(v: LoginSettings, prompt: Callable[[str], str] = input) -> Path:
    """The whole flow; returns the token file's path."""
    api_key, path = str(v.kite_api_key), Path(str(v.kite_access_token_file))
    print(f"Log in to Kite at:\n  {login_url(v.kite_login_url, api_key)}")
    print("then copy request_token from the address Kite redirects you to.")
    request_token = v.kite_request_token or prompt("request_token: ").strip()
    token = exchange_request_token(v.kite_api_url, api_key, request_token, str(v.kite_api_secret))
    write_token_file(path, token)
    print(f"access token written to {path} (mode 0600); a running connector picks it up by itself")
    return path
