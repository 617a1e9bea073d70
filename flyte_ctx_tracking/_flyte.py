"""The one boundary with flytekit: everything the library reads from or puts into a running Flyte task.

The current execution state and its parameters, decks, secrets, writing files through flytekit's
data persistence, telling a task object from a
function, publishing a handle into flytekit's context, and the decorator base class flytekit
reads console-link config from all go through here, so a change in flytekit (or a port to
Flyte 2) touches this module only. flytekit is imported inside each function: importing this
module costs nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TaskRun",
    "add_deck",
    "current_task",
    "deck_titles",
    "decks_enabled",
    "download",
    "file_writer",
    "is_flyte_secret",
    "is_flyte_task",
    "local_map_index",
    "published_in_context",
    "read_flyte_secret",
    "recognise_task_decorator",
    "task_scope",
]


@dataclass(frozen=True)
class TaskRun:
    """The task flytekit is executing right now."""

    is_remote: bool
    params: Any
    """flytekit's ``ExecutionParameters`` (``current_context()``)."""


def current_task() -> TaskRun | None:
    """The task flytekit is executing in this context, or ``None`` outside one.

    Without flytekit loaded no task can run, and loading it here would install flytekit's
    process-wide SIGINT handler (which turns Ctrl-C into ``exit(1)``) in the user's plain script.
    """
    if "flytekit.core.context_manager" not in sys.modules:
        return None
    try:
        from flytekit.core.context_manager import FlyteContextManager

        ctx = FlyteContextManager.current_context()
        state = ctx.execution_state
        if state is None or state.mode is None:
            return None
        return TaskRun(is_remote=not state.is_local_execution(), params=ctx.user_space_params)
    except Exception:  # flytekit internals changed: behave as outside a task
        return None


# id of parameters published by `published_in_context` -> the scope of the task they belong to.
_PUBLISHED_SCOPES: dict[int, int | None] = {}


def task_scope() -> int | None:
    """What tells one task execution from another in this process (``None`` outside any task).

    A local workflow runs its tasks in one process, a child task inside its parent's call; in a
    cluster they are separate pods. Sessions are visible only within the task execution (scope)
    that opened them, so local runs behave as remote ones.
    """
    task = current_task()
    if task is None:
        return None
    # The parameters this module pushed (publishing a handle) keep the task's scope; parameters
    # flytekit builds from them for a child task are new objects, with a scope of their own.
    return _PUBLISHED_SCOPES.get(id(task.params), id(task.params))


def local_map_index() -> int | None:
    """The index of the map-task element running in this local execution, else ``None``.

    flytekit runs a local map task's elements one after the other in the map task's own context and
    says nothing of the index there; its loop over the elements is the one place that knows it.
    """
    if "flytekit.core.array_node_map_task" not in sys.modules:
        return None
    from flytekit.core.array_node_map_task import ArrayNodeMapTask

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_raw_execute" and isinstance(frame.f_locals.get("self"), ArrayNodeMapTask):
            index = frame.f_locals.get("i")
            return index if isinstance(index, int) else None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def decks_enabled() -> bool:
    """True inside a task execution whose decks are on (``@task(enable_deck=True)``)."""
    task = current_task()
    return task is not None and bool(getattr(task.params, "enable_deck", False))


def deck_titles() -> list[str]:
    """The titles of the decks the running task has so far (empty outside a task)."""
    task = current_task()
    if task is None:
        return []
    return [str(getattr(deck, "name", "")) for deck in getattr(task.params, "decks", ())]


def add_deck(title: str, html: str) -> bool:
    """Add an HTML deck named ``title`` (numbered ``#2``, ``#3``... when taken) to the running task.

    Returns True when the deck was added. Outside a task, or when the task's decks are off, it
    does nothing and returns False, so sessions can call it unconditionally (building the HTML of
    a big report is skipped by checking :func:`decks_enabled` first).
    """
    if not decks_enabled():
        return False
    from flytekit import Deck

    # Flyte shows decks as tabs keyed by title: a second deck of the same title would replace the
    # first, so later ones are numbered.
    taken = set(deck_titles())
    unique, number = title, 1
    while unique in taken:
        number += 1
        unique = f"{title} #{number}"
    Deck(unique, html)
    return True


def file_writer() -> Callable[[Path, str], None]:
    """A function copying a local file or folder to an address flytekit's data persistence writes
    (``s3://``, ``gs://``, a path...): the running task's file access, else a new one."""
    from flytekit import FlyteContextManager
    from flytekit.core.data_persistence import FileAccessProvider

    context = FlyteContextManager.current_context()
    access = getattr(context, "file_access", None)
    if access is None:
        sandbox = tempfile.mkdtemp(prefix="flyte-ctx-tracking-")
        access = FileAccessProvider(local_sandbox_dir=sandbox, raw_output_prefix=sandbox)

    def put(local: Path, remote: str) -> None:
        access.put_data(str(local), remote, is_multipart=local.is_dir())

    return put


def download(remote: str, local: Path) -> None:
    """Copy everything under ``remote`` (a prefix flytekit reads) into the folder ``local``."""
    from flytekit import FlyteContextManager

    access = FlyteContextManager.current_context().file_access
    access.get_data(remote.rstrip("/") + "/", str(local), is_multipart=True)


def is_flyte_secret(value: object) -> bool:
    """True for a flytekit ``Secret`` (checked by name first: no flytekit import for other values)."""
    if type(value).__name__ != "Secret":
        return False
    from flytekit import Secret

    return isinstance(value, Secret)


def read_flyte_secret(secret: Any) -> str | None:
    """The value of a flytekit ``Secret`` where a pod or a laptop has it, else ``None``.

    Reads ``Secret(env_var=...)``'s variable first, then flytekit's secrets manager (the variables
    and files a Flyte pod mounts, ``_FSEC_<GROUP>_<KEY>``, and locally ``<GROUP>_<KEY>``).
    """
    if getattr(secret, "env_var", None) and os.environ.get(secret.env_var):
        return str(os.environ[secret.env_var]).strip() or None
    from flytekit.core.context_manager import FlyteContextManager

    manager = FlyteContextManager.current_context().user_space_params.secrets
    try:
        value = manager.get(group=secret.group, key=secret.key, group_version=secret.group_version)
    except (ValueError, OSError):
        return None
    if not isinstance(value, str):
        return None
    return value.strip() or None


def is_flyte_task(value: object) -> bool:
    """True for a flytekit task object (what ``@task`` returns), as opposed to a plain function."""
    if "flytekit.core.base_task" not in sys.modules:  # no task object can exist before flytekit loads
        return False
    from flytekit.core.base_task import Task

    return isinstance(value, Task)


def recognise_task_decorator(cls: type) -> None:
    """Make flytekit take ``cls``'s instances for its ``ClassDecorator`` (whose console-link config it
    reads when it serializes a task), once flytekit is loaded, without importing it before."""
    if "flytekit.core.utils" not in sys.modules:
        return  # not loaded yet: no task can be defined; the next decoration checks again
    from flytekit.core.utils import ClassDecorator

    if not issubclass(cls, ClassDecorator):
        ClassDecorator.register(cls)


# Where flytekit's debug log says our context was pushed from (a fixed origin: walking the stack costs).
_PUSHED_FROM = traceback.FrameSummary(__file__, 0, "flyte_ctx_tracking")


@contextmanager
def published_in_context(attribute: str, value: Any) -> Iterator[None]:
    """Make ``value`` ``flytekit.current_context().<attribute lowercased>`` for the duration.

    Pushes a flytekit context whose parameters carry the value, as flytekit's own plugins do, with
    two differences: the parameters get their own copy of the attributes (flytekit's builder shares
    the dict, which would leave the value visible after the block), and the context stack is copied
    first and restored on exit, so asyncio tasks sharing the stack's list never pop each other's
    contexts. Outside a task there is nothing to extend, and nothing is published.
    """
    if "flytekit.core.context_manager" not in sys.modules:  # nobody can read flytekit's context
        yield
        return
    from flytekit.core import context_manager as fcm

    ctx = fcm.FlyteContextManager.current_context()
    state, params = ctx.execution_state, ctx.user_space_params
    if state is None or params is None:
        yield
        return
    scope = task_scope()
    builder = params.builder()
    builder.attrs = {**builder.attrs, attribute: value}
    published = builder.build()
    pushed = ctx.with_execution_state(state.with_params(user_space_params=published)).build()
    _PUBLISHED_SCOPES[id(published)] = scope
    token = fcm.flyte_context_Var.set(list(fcm.flyte_context_Var.get()))
    fcm.FlyteContextManager.push_context(pushed, _PUSHED_FROM)
    try:
        yield
    finally:
        _PUBLISHED_SCOPES.pop(id(published), None)
        try:
            fcm.flyte_context_Var.reset(token)
        except ValueError:  # exited in another contextvars context: remove just our context
            stack = fcm.flyte_context_Var.get()
            fcm.flyte_context_Var.set([entry for entry in stack if entry is not pushed])
