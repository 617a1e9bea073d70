"""Workflow-level defaults: settings every tracking session of a workflow shares.

A workflow's tasks run in separate pods, each importing its own copy of the code, so the one
channel that reaches all of them is the environment a launch plan (or ``pyflyte run --env``) sets:
``FLYTE_CTX_TRACKING_PROJECT`` and friends. Locally and in tests, :func:`tracking_defaults` sets
the same values for a block. Sessions read them when they open, never when they are built, since
decorators are built at import time, before any block has begun.

Precedence, first wins: a session's own argument; the innermost :func:`tracking_defaults` block;
the ``FLYTE_CTX_TRACKING_*`` variables; the backend's own variables (``WANDB_PROJECT``...); the
built-in default. Tags add up instead: the session's own, then the defaults'.
``FLYTE_CTX_TRACKING_MODE`` stays what it was, an override of every session's mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from typing import Any

from ._validate import check_choice

__all__ = ["DEFAULTS_ENV_VARS", "TrackingDefaults", "current_defaults", "tracking_defaults"]

_PREFIX = "FLYTE_CTX_TRACKING_"


@dataclass(frozen=True)
class TrackingDefaults:
    """The defaults in force: None (or empty) where nothing was set.

    Attributes:
        project: the project (W&B, Comet, Neptune ``workspace/project``) or experiment (MLflow).
        entity: the W&B entity, Comet workspace (Neptune's is part of its project).
        tags: tags every run gets, after its own.
        mode: the mode of sessions left at ``mode="auto"``.
        run_mode: the run mode of sessions that did not choose one.
        rank_scope: the rank scope of sessions that did not choose one.
    """

    project: str | None = None
    entity: str | None = None
    tags: tuple[str, ...] = ()
    mode: str | None = None
    run_mode: str | None = None
    rank_scope: str | None = None

    def fill(self, session: object, **attributes: str) -> dict[str, Any]:
        """``{attribute: value}`` for each default named in ``attributes`` (``project="project_name"``)
        whose attribute the session left None: what a backend's ``_backend_defaults`` sets."""
        return {
            attribute: getattr(self, name)
            for name, attribute in attributes.items()
            if getattr(session, attribute, None) is None and getattr(self, name) is not None
        }

    def merged_over(self, lower: TrackingDefaults) -> TrackingDefaults:
        """These defaults, with ``lower``'s where these have none (tags: these, then ``lower``'s)."""
        values: dict[str, Any] = {}
        for spec in fields(self):
            mine, theirs = getattr(self, spec.name), getattr(lower, spec.name)
            if spec.name == "tags":
                values["tags"] = tuple(dict.fromkeys((*mine, *theirs)))
            else:
                values[spec.name] = mine if mine is not None else theirs
        return TrackingDefaults(**values)


DEFAULTS_ENV_VARS: dict[str, str] = {spec.name: _PREFIX + spec.name.upper() for spec in fields(TrackingDefaults)}
"""Each default's environment variable (``FLYTE_CTX_TRACKING_PROJECT``...); ``..._TAGS`` is comma-separated.
``mode`` has none: ``FLYTE_CTX_TRACKING_MODE`` is the process-wide override, stronger than a default."""
del DEFAULTS_ENV_VARS["mode"]

_NONE = TrackingDefaults()  # frozen: one instance can be every context's default
_ACTIVE: ContextVar[TrackingDefaults] = ContextVar("flyte_ctx_tracking_defaults", default=_NONE)


def _check(owner: str, values: TrackingDefaults) -> TrackingDefaults:
    from ._session import MODES
    from ._sharing import RANK_SCOPES, RUN_MODES

    for name in ("project", "entity"):
        value = getattr(values, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{owner}: {name}={value!r} is not accepted; pass a non-empty str, or None")
        if value is not None and not value.strip():
            raise ValueError(f"{owner}: {name}={value!r} is not accepted; pass a non-empty str, or None")
    for tag in values.tags:
        if not isinstance(tag, str):
            raise TypeError(f"{owner}: tags contains {tag!r}; every tag must be a non-empty str")
        if not tag.strip():
            raise ValueError(f"{owner}: tags contains {tag!r}; every tag must be a non-empty str")
    if values.mode is not None:
        check_choice(owner, "mode", values.mode, MODES)
    if values.run_mode is not None:
        check_choice(owner, "run_mode", values.run_mode, RUN_MODES)
    if values.rank_scope is not None:
        check_choice(owner, "rank_scope", values.rank_scope, RANK_SCOPES)
    return values


def _from_environment() -> TrackingDefaults:
    values: dict[str, Any] = {}
    for name, variable in DEFAULTS_ENV_VARS.items():
        text = os.environ.get(variable, "").strip()
        if not text:
            continue
        if name == "tags":
            values[name] = tuple(tag.strip() for tag in text.split(",") if tag.strip())
        else:  # choices read like FLYTE_CTX_TRACKING_MODE's: "Shared" is "shared"
            values[name] = text.lower() if name in ("run_mode", "rank_scope") else text
    return TrackingDefaults(**values)


def environment_defaults() -> tuple[TrackingDefaults, list[str]]:
    """The defaults the ``FLYTE_CTX_TRACKING_*`` variables set, with the problems of bad values.

    A bad value is dropped with a message instead of raising: a typo in a launch plan's environment
    must not fail every task (the session warns, once per open, and goes on without it).
    """
    raw = _from_environment()
    problems: list[str] = []
    kept: dict[str, Any] = {}
    for spec in fields(raw):
        value = getattr(raw, spec.name)
        if value is None or value == ():
            continue
        try:
            _check(DEFAULTS_ENV_VARS[spec.name], replace(TrackingDefaults(), **{spec.name: value}))
        except ValueError as error:
            problems.append(f"{error}; it is ignored")
            continue
        kept[spec.name] = value
    return TrackingDefaults(**kept), problems


def current_defaults() -> tuple[TrackingDefaults, list[str]]:
    """The defaults in force here: :func:`tracking_defaults` blocks over the environment's."""
    environment, problems = environment_defaults()
    return _ACTIVE.get().merged_over(environment), problems


@contextmanager
def tracking_defaults(
    *,
    project: str | None = None,
    entity: str | None = None,
    tags: Iterable[str] | None = None,
    mode: str | None = None,
    run_mode: str | None = None,
    rank_scope: str | None = None,
) -> Iterator[TrackingDefaults]:
    """Defaults for every tracking session opened in the block (this thread or asyncio task and
    those it starts), over the ``FLYTE_CTX_TRACKING_*`` variables; blocks nest, inner ones win.

    A session's own arguments always win; tags add up. In pods, set the variables instead (a launch
    plan's environment, or ``pyflyte run --env FLYTE_CTX_TRACKING_PROJECT=fraud``): a block in the
    workflow function runs when the workflow is compiled, not in the tasks' pods.

    Args:
        project: the project (W&B, Comet, Neptune ``workspace/project``) or experiment (MLflow).
        entity: the W&B entity or Comet workspace.
        tags: tags every run gets, after its own (MLflow: tags with an empty value).
        mode: the mode of sessions left at ``mode="auto"``.
        run_mode: ``"auto"``, ``"new"``, ``"shared"`` or ``"nested"``, for sessions that chose none.
        rank_scope: ``"global"``, ``"worker"`` or ``"rank"``, for sessions that chose none.
    """
    if isinstance(tags, str) or not isinstance(tags, (Iterable, type(None))):
        raise TypeError(f"tracking_defaults: tags={tags!r} is not accepted; pass a list of str (not one str), or None")
    values = TrackingDefaults(project, entity, tuple(tags or ()), mode, run_mode, rank_scope)
    _check("tracking_defaults", values)
    token = _ACTIVE.set(values.merged_over(_ACTIVE.get()))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)
