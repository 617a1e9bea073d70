"""A real ``mlflow server`` on 127.0.0.1 (SQLite backend, a free port), and a recording proxy for it.

``running_server`` starts one in its own process group, waits for ``/health`` (bounded in count and
time) and kills the whole group when the block ends. MLflow's job runner is switched off: the tests
need the tracking API only, and the runner's worker processes would double the start-up cost.

``RecordingProxy`` forwards every request to a server and records, per request, the path and the
``Authorization`` header it carried; ``stop()`` closes it like a server going away.
"""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STARTUP_LIMIT = 90.0  # seconds: about 9 s on an idle two-core machine, much longer under load
HEALTH_POLLS = 400  # and never more than this many polls
_POLL_INTERVAL = 0.25
_STOP_LIMIT = 15.0

# The client's own settings must not reach the server (nor a developer's shell reach either).
_CLIENT_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class MlflowServer:
    """A running server: its URL, its SQLite file and artifact folder, and its process."""

    url: str
    store: Path
    artifacts: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def store_uri(self) -> str:
        """The server's own database, readable directly (also once the server is stopped)."""
        return f"sqlite:///{self.store}"

    def client(self) -> Any:
        """``MlflowClient`` of the server, over HTTP."""
        from mlflow import MlflowClient

        return MlflowClient(self.url)

    def stop(self) -> None:
        """Kill the server's whole process group (uvicorn's worker included) and wait for it."""
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=_STOP_LIMIT)
        with suppress(ProcessLookupError, PermissionError):  # the worker outlived its parent
            os.killpg(self.process.pid, signal.SIGKILL)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def running_server(directory: Path) -> Iterator[MlflowServer]:
    """An ``mlflow server`` with its data under ``directory``, for the block."""
    directory.mkdir(parents=True, exist_ok=True)
    store, artifacts, log = directory / "mlflow.db", directory / "artifacts", directory / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_VARIABLES}
    env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "HOME": str(directory)})
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{store}", "--default-artifact-root", str(artifacts)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=directory, env=env, start_new_session=True
        )
    server = MlflowServer(url=url, store=store, artifacts=artifacts, process=process, log=log)
    try:
        deadline = time.monotonic() + STARTUP_LIMIT
        for _ in range(HEALTH_POLLS):
            if _healthy(url):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(_POLL_INTERVAL)
        if not _healthy(url):
            raise RuntimeError(f"mlflow server did not come up on {url}:\n{log.read_text(errors='replace')[-3000:]}")
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------ the recording proxy


@dataclass
class Recorded:
    """One request the proxy forwarded."""

    method: str
    path: str
    body: str
    authorization: str | None


@dataclass
class RecordingProxy:
    """``http://127.0.0.1:<port>`` forwarding to ``target``, recording each request's credentials."""

    target: str
    requests: list[Recorded] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> RecordingProxy:
        proxy = self
        host, port = self.target.removeprefix("http://").split(":")

        class Forward(http.server.BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so that once stopped no kept-alive one still forwards.
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                text = (body or b"").decode(errors="replace")
                with proxy._lock:
                    proxy.requests.append(Recorded(self.command, self.path, text, self.headers.get("Authorization")))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream = http.client.HTTPConnection(host, int(port), timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: later connections are refused, as by a server that went away."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def authorizations(self, marker: str) -> set[str | None]:
        """The ``Authorization`` headers of the requests whose path or body mention ``marker``."""
        with self._lock:
            return {r.authorization for r in self.requests if marker in r.path or marker in r.body}


@contextmanager
def recording_proxy(target: str) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(target).start()
    try:
        yield proxy
    finally:
        proxy.stop()
