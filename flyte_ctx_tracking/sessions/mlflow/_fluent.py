"""MLflow's fluent API (``mlflow.log_metric``, ``mlflow.active_run()``) inside a session's block.

Three pieces of MLflow state are process- or thread-wide, and a block needs them as its own:

* the active-run stack is a thread-local: asyncio tasks on one thread would share it. It is made a
  context variable (still one per thread, and now one per task), and a block pushes its run onto a
  copy of the stack, so sibling tasks never see each other's runs;
* the tracking URI is one per process: a block makes it its store's while it runs (MLflow's setting,
  not the environment), and the last one out puts back what was there. A
  run's own calls reach its store whatever the URI says (:mod:`._store` routes them);
* autologging is one per process: it is switched on for a block and off when the last block that
  asked for it ends.
"""

from __future__ import annotations

import contextvars
import importlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

__all__ = ["active_run", "autolog", "holding_tracking_uri", "install", "user_tracking_uri"]

TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"

_LOCK = threading.RLock()
_installed = False


def install() -> None:
    """Make MLflow's active-run stack a context variable (once per process).

    Runs a thread started before keep their stack: a context that never set one reads the thread's.
    """
    global _installed
    with _LOCK:
        if _installed:
            return
        from mlflow.tracking import fluent
        from mlflow.utils.thread_utils import ThreadLocalVariable

        previous = fluent._active_run_stack

        class ContextRunStack(ThreadLocalVariable):  # type: ignore[misc]
            """MLflow's active-run stack, one per context (thread or asyncio task)."""

            def __init__(self) -> None:
                super().__init__(default_factory=list)
                self.stacks: contextvars.ContextVar[tuple[list[Any], int] | None] = contextvars.ContextVar(
                    "mlflow_active_run_stack", default=None
                )

            def get(self) -> Any:
                value = self.stacks.get()
                if value is None or value[1] != os.getpid():
                    stack = previous.get() if value is None else []
                    self.set(stack)
                    return stack
                return value[0]

            def set(self, value: Any) -> None:
                super().set(value)  # keeps MLflow's per-thread record of every stack
                self.stacks.set((value, os.getpid()))

        fluent._active_run_stack = ContextRunStack()
        _installed = True


@contextmanager
def active_run(run: Any) -> Iterator[None]:
    """``run`` on top of this context's active-run stack, for the block."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack
    stack.set([*stack.get(), run])  # a copy: a sibling task holding the old list is unaffected
    try:
        yield
    finally:
        remaining = [entry for entry in stack.get() if entry is not run]
        stack.set(remaining)


# ------------------------------------------------------------------------------ the tracking URI

_holders: list[tuple[object, str]] = []
_saved: dict[str, Any] = {}


def user_tracking_uri() -> str | None:
    """The tracking URI the user configured (``mlflow.set_tracking_uri`` or ``MLFLOW_TRACKING_URI``),
    not one a session set for its block."""
    with _LOCK:
        if _holders:
            return _saved.get("configured")
    configured = os.environ.get(TRACKING_URI_ENV_VAR) or None
    from mlflow.tracking._tracking_service import utils

    return utils._tracking_uri or configured


@contextmanager
def holding_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI is ``uri`` while the block runs (the most recent block's
    wins while several run); the last block out restores the user's.

    Only MLflow's own setting changes, never ``os.environ``: other threads read the environment
    while they make requests (``requests`` looks for proxies in it), and a variable removed under
    them fails their call.
    """
    from mlflow.tracking._tracking_service import utils

    holder = object()
    with _LOCK:
        if not _holders:
            _saved.update(
                global_uri=utils._tracking_uri,
                configured=utils._tracking_uri or os.environ.get(TRACKING_URI_ENV_VAR) or None,
            )
        _holders.append((holder, uri))
        utils._tracking_uri = uri
    try:
        yield
    finally:
        with _LOCK:
            _holders[:] = [entry for entry in _holders if entry[0] is not holder]
            if _holders:
                utils._tracking_uri = _holders[-1][1]
            else:
                utils._tracking_uri = _saved.pop("global_uri", None)
                _saved.pop("configured", None)


# ------------------------------------------------------------------------------ autologging

_autolog_users: dict[str, int] = {}


def autolog_module(framework: str | ModuleType | None) -> ModuleType:
    """The MLflow module whose ``autolog`` a framework names: ``mlflow`` for all frameworks,
    ``mlflow.sklearn`` for ``"sklearn"`` or ``"mlflow.sklearn"``, or the module given."""
    if isinstance(framework, ModuleType):
        module = framework
    else:
        name = "mlflow" if framework is None else framework
        module = importlib.import_module(name if name.startswith("mlflow") else f"mlflow.{name}")
    if not callable(getattr(module, "autolog", None)):
        raise ValueError(f"mlflow_session: framework={module.__name__!r} has no autolog() function")
    return module


@contextmanager
def autolog(framework: str | ModuleType | None) -> Iterator[None]:
    """Autologging of ``framework`` on for the block, and off after the last block that wanted it."""
    module = autolog_module(framework)
    name = module.__name__
    with _LOCK:
        _autolog_users[name] = _autolog_users.get(name, 0) + 1
        if _autolog_users[name] == 1:
            try:
                module.autolog(silent=True)
            except BaseException:
                _autolog_users[name] -= 1
                raise
    try:
        yield
    finally:
        with _LOCK:
            _autolog_users[name] -= 1
            if _autolog_users[name] == 0:
                del _autolog_users[name]
                module.autolog(disable=True, silent=True)
