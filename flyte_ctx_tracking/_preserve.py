"""Offline data that outlives the pod: where a session's local data is copied when it closes, and the copy.

In a cluster, what a tracker writes offline sits on the pod's disk, and the pod is deleted when the
task ends: exactly when the offline fallback was needed, its data would be lost. So a session that
closes offline copies its run's files, through flytekit's own data persistence, to durable storage:
by default under the execution's raw output prefix, at

    <prefix>/flyte-ctx-tracking/<execution>/<node>/<attempt>/<kind>/<the run's files>

``flyte-ctx-tracking sync <prefix>`` finds and uploads them from there. The copy is bounded in time,
never deletes the local data, and a failed copy never fails the task.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from . import _flyte
from ._context import ExecutionContext

__all__ = [
    "COPY_FOLDER",
    "COPY_TIMEOUT_ENV_VAR",
    "OFFLINE_COPY_ENV_VAR",
    "CopyTimeout",
    "copy_destination",
    "copy_out",
    "copy_timeout",
]

OFFLINE_COPY_ENV_VAR = "FLYTE_CTX_TRACKING_OFFLINE_COPY"
COPY_TIMEOUT_ENV_VAR = "FLYTE_CTX_TRACKING_COPY_TIMEOUT"
DEFAULT_COPY_TIMEOUT = 300.0
"""Seconds the copy of one session's data may take (a big capture to a slow bucket takes long)."""
COPY_FOLDER = "flyte-ctx-tracking"
_OFF = frozenset({"0", "false", "no", "off", "none"})
_ON = frozenset({"1", "true", "yes", "on"})


class CopyTimeout(TimeoutError):
    """The copy did not finish within its deadline (it goes on in the background, abandoned)."""


def _configured(option: bool | str | None) -> bool | str | None:
    """The session's ``offline_copy``, else ``FLYTE_CTX_TRACKING_OFFLINE_COPY`` read as a switch or a prefix."""
    if option is not None:
        return option
    value = os.environ.get(OFFLINE_COPY_ENV_VAR, "").strip()
    if not value:
        return None
    if value.lower() in _OFF:
        return False
    if value.lower() in _ON:
        return True
    return value


def copy_destination(
    option: bool | str | None, context: ExecutionContext, kind: str, *, by_default: bool
) -> str | None:
    """Where this session's data goes when it closes, or None for no copy.

    ``by_default``: whether the kind copies without being asked (trackers, in a remote run).
    """
    configured = _configured(option)
    if configured is False:
        return None
    if isinstance(configured, str):
        prefix: str | None = configured
    elif configured is True or (by_default and context.is_remote):
        prefix = context.raw_output_prefix
    else:
        return None
    if not prefix:
        return None
    node = context.node_id or "-"
    if context.map_index is not None:
        node = f"{node}-{context.map_index}"
    if context.is_distributed:
        node = f"{node}-rank{context.rank}"
    parts = [COPY_FOLDER, context.execution_name or "local", node, str(context.attempt), kind]
    return "/".join([prefix.rstrip("/"), *parts])


def copy_timeout() -> float:
    """``FLYTE_CTX_TRACKING_COPY_TIMEOUT`` seconds, else 300; a typo falls back to the default."""
    try:
        value = float(os.environ.get(COPY_TIMEOUT_ENV_VAR, "") or DEFAULT_COPY_TIMEOUT)
    except ValueError:
        return DEFAULT_COPY_TIMEOUT
    return value if value > 0 else DEFAULT_COPY_TIMEOUT


def copy_out(items: Sequence[tuple[Path, str]], destination: str, deadline: float) -> list[str]:
    """Copy each ``(local file or folder, relative name)`` to ``destination/relative name``.

    Runs in a thread bounded by ``deadline`` seconds in all (:class:`CopyTimeout` after it; the copy
    is abandoned, not waited for). Returns the addresses written. The local data is never touched.
    """
    put = _flyte.file_writer()  # taken here: flytekit's context belongs to the caller's thread
    written: list[str] = []
    outcome: list[BaseException] = []
    done = threading.Event()

    def copy_all() -> None:
        try:
            for local, relative in items:
                target = f"{destination}/{relative.strip('/')}"
                put(local, target)
                written.append(target)
        except BaseException as error:
            outcome.append(error)
        finally:
            done.set()

    threading.Thread(target=copy_all, name="flyte-ctx-tracking-copy", daemon=True).start()
    if not done.wait(deadline):
        raise CopyTimeout(f"copying to {destination} did not finish within {deadline:g} s")
    if outcome:
        raise outcome[0]
    return written


def relative_to_data(path: Path, directory: Path, default: Callable[[Path], str] = lambda p: p.name) -> str:
    """``path`` relative to the session's data directory when inside it, else ``default(path)``."""
    try:
        return path.resolve().relative_to(directory.resolve()).as_posix()
    except ValueError:
        return default(path)
