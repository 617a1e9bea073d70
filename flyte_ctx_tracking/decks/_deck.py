"""Adding a deck to the running task, and doing nothing harmful outside one."""

from __future__ import annotations

from typing import Any


def _task_params() -> Any:
    """The running task's user-space params, or None outside a task execution."""
    from flytekit.core.context_manager import FlyteContextManager

    ctx = FlyteContextManager.current_context()
    state = ctx.execution_state
    if state is None or state.mode is None:
        return None
    return ctx.user_space_params


def decks_enabled() -> bool:
    """True inside a task execution whose decks are on (``@task(enable_deck=True)``)."""
    try:
        params = _task_params()
    except Exception:  # flytekit internals changed: behave as outside a task
        return False
    return params is not None and bool(getattr(params, "enable_deck", False))


def add_deck(title: str, html: str) -> bool:
    """Add an HTML deck named ``title`` to the running task.

    Returns True when the deck was added. Outside a task, or when the task's decks are off, it
    does nothing and returns False, so sessions can call it unconditionally (building the HTML of
    a big report is skipped by checking :func:`decks_enabled` first).
    """
    if not decks_enabled():
        return False
    from flytekit import Deck

    Deck(title, html)
    return True
