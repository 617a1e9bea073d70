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
    """Add an HTML deck named ``title`` (numbered ``#2``, ``#3``... when taken) to the running task.

    Returns True when the deck was added. Outside a task, or when the task's decks are off, it
    does nothing and returns False, so sessions can call it unconditionally (building the HTML of
    a big report is skipped by checking :func:`decks_enabled` first).
    """
    params = _task_params() if decks_enabled() else None
    if params is None:
        return False
    from flytekit import Deck

    # Flyte shows decks as tabs keyed by title: a second "Weights & Biases" deck (a nested run)
    # would replace the first, so later ones are numbered.
    taken = {getattr(deck, "name", None) for deck in params.decks}
    unique, number = title, 1
    while unique in taken:
        number += 1
        unique = f"{title} #{number}"
    Deck(unique, html)
    return True
