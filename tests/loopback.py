"""Servers on 127.0.0.1 that fail the way production servers do: refuse, answer 500, answer 401
echoing the credentials they were sent, or accept and never answer.

Every loop is bounded in count and time, and every server stops when its ``with`` block ends.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BEHAVIOURS = ("refuse", "error500", "unauthorized", "silent")
_MAX_CONNECTIONS = 200
_ACCEPT_POLL = 0.2


class _Answering(http.server.BaseHTTPRequestHandler):
    status = 500
    served = 0

    def _answer(self) -> None:
        type(self).served += 1
        # A 401 echoes what it was sent, as real servers' error pages often do: the test then
        # checks that no form of the key survives in what the library prints or writes.
        body = f"{self.headers.get('Authorization', '')} {self.headers.get('X-Api-Key', '')} {self.path}".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def loopback_server(behaviour: str) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a server that fails as ``behaviour`` says, while the block runs."""
    if behaviour == "refuse":
        yield f"http://127.0.0.1:{_free_port()}"  # nothing listens: connections are refused
        return
    if behaviour == "silent":
        with _silent_server() as url:
            yield url
        return
    status = {"error500": 500, "unauthorized": 401}[behaviour]
    handler = type("Handler", (_Answering,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": _ACCEPT_POLL}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def _silent_server() -> Iterator[str]:
    """Accepts connections (at most ``_MAX_CONNECTIONS``) and never sends a byte."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(_ACCEPT_POLL)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set() and len(held) < _MAX_CONNECTIONS:
            try:
                connection, _ = listener.accept()
            except OSError:  # the poll timed out, or the listener closed
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=10)
        for connection in held:
            connection.close()
        listener.close()
