"""Closing open runs when the process is told to stop (SIGTERM: Kubernetes' abort, eviction, preemption).

While a session has a handle open in the main thread's process, a SIGTERM handler is installed.
When the process would die of the signal (the default handling), it first closes every open handle
as failed (the error is :class:`Terminated`), each in its own thread, all within
``FLYTE_CTX_TRACKING_TERMINATION_TIMEOUT`` seconds (default 20, well inside Kubernetes' 30 s grace
period), then dies of it as it would have without us (same exit status). When the process has a
SIGTERM handler of its own, that handler is called instead and decides: the runs close as the
blocks end. When the last handle closes, the previous handler is put back.
SIGINT is never touched. A process that ignores SIGTERM is left alone.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["TERMINATION_TIMEOUT_ENV_VAR", "Terminated", "forget", "track"]

TERMINATION_TIMEOUT_ENV_VAR = "FLYTE_CTX_TRACKING_TERMINATION_TIMEOUT"
DEFAULT_TERMINATION_TIMEOUT = 20.0

Closer = Callable[[BaseException], None]

_LOCK = threading.RLock()
_LIVE: dict[int, Closer] = {}
_installed: dict[str, Any] = {}  # "previous": the handler we replaced, while ours is installed


class Terminated(BaseException):
    """What a run is closed with when the process received a termination signal mid-block."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        """The exit status of a process that dies of the signal, as shells and Kubernetes report it."""
        super().__init__(f"the process received {signal.Signals(signum).name} (terminated) while the block ran")


def track(key: int, close: Closer) -> None:
    """Close ``close``'s handle if the process is terminated before :func:`forget` is called."""
    with _LOCK:
        _LIVE[key] = close
        _install()


def forget(key: int) -> None:
    """The handle closed: no need to close it on termination any more."""
    with _LOCK:
        _LIVE.pop(key, None)
        if not _LIVE:
            _uninstall()


def _timeout() -> float:
    try:
        value = float(os.environ.get(TERMINATION_TIMEOUT_ENV_VAR, "") or DEFAULT_TERMINATION_TIMEOUT)
    except ValueError:
        return DEFAULT_TERMINATION_TIMEOUT
    return value if 0 < value < float("inf") else DEFAULT_TERMINATION_TIMEOUT


def _install() -> None:
    # Python runs signal handlers in the main thread only, and only the main thread may install them.
    if "previous" in _installed or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is signal.SIG_IGN or current is None:  # ignored, or installed outside Python: leave it
        return
    _installed["previous"] = current
    signal.signal(signal.SIGTERM, _on_terminate)


def _uninstall() -> None:
    if "previous" not in _installed or threading.current_thread() is not threading.main_thread():
        return  # a worker thread closed the last handle: the main thread's next open or close tidies up
    previous = _installed.pop("previous")
    if signal.getsignal(signal.SIGTERM) is _on_terminate:  # someone else's handler since: keep it
        signal.signal(signal.SIGTERM, previous)


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    with _LOCK:
        previous = _installed.pop("previous", signal.SIG_DFL)
        signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            # A handler of the process's own (save a checkpoint, set a flag and finish) decides what
            # happens: the runs close as the blocks end, normally or by its exception.
            closers: list[Closer] = []
        else:
            closers = list(_LIVE.values())
            _LIVE.clear()
    if callable(previous):
        previous(signum, frame)
        return
    _close_all(closers, Terminated(signum), deadline=time.monotonic() + _timeout())
    os.kill(os.getpid(), signum)  # die of the signal, with the status the process would have had


def _close_all(closers: list[Closer], error: BaseException, *, deadline: float) -> None:
    """Close every handle in parallel; whatever has not closed by ``deadline`` is given up on."""

    def close(closer: Closer) -> None:
        try:
            closer(error)
        except BaseException:  # nothing may stop the others, or the signal from being handed on
            return

    threads = [threading.Thread(target=close, args=(closer,), daemon=True) for closer in closers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
