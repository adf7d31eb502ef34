"""The one helper the small built-in HTTP endpoints (metrics, simulator REST) share."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

__all__ = ["reply"]


def reply(handler: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
    handler.send_response(code)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
