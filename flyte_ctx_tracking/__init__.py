"""flyte_ctx_tracking: experiment tracking and profiling for Flyte tasks, context-manager first.

Every integration is a reentrant session that reads the Flyte execution context::

    with wandb_session(project="fraud", entity="ml", secret=WANDB) as run: ...
    with memray_profile("join"): ...
    with whylogs_profile("batch", reference=ref) as prof: prof.log(chunk)

Importing this package imports no backend and not even flytekit: names resolve on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# public name -> module that defines it (relative to this package)
_LAZY: dict[str, str] = {
    "ExecutionContext": "._context",
    "execution_context": "._context",
    "current_run": "._session",
    "NullRun": "._session",
    "Session": "._session",
    "TrackingSession": "._session",
    "TrackingError": "._session",
    "TrackingWarning": "._session",
    "tracking_root": "._session",
    "SessionDecorator": "._decorator",
    "add_deck": ".decks",
    "wandb_session": ".sessions.wandb",
    "wandb_init": ".sessions.wandb",
    "comet_session": ".sessions.comet",
    "comet_ml_login": ".sessions.comet",
    "_comet_ml_login_class": ".sessions.comet",
    "neptune_session": ".sessions.neptune",
    "neptune_init_run": ".sessions.neptune",
    "_neptune_init_run_class": ".sessions.neptune",
    "memray_profile": ".sessions.memray",
    "memray_profiling": ".sessions.memray",
    "whylogs_profile": ".sessions.whylogs",
    "WhylogsDatasetProfileTransformer": ".sessions.whylogs",
    "WhylogsConstraintsRenderer": ".sessions.whylogs",
    "WhylogsSummaryDriftRenderer": ".sessions.whylogs",
    "ConstraintsFailedError": ".sessions.whylogs",
}

__all__ = [
    "ConstraintsFailedError",
    "ExecutionContext",
    "NullRun",
    "Session",
    "SessionDecorator",
    "TrackingError",
    "TrackingSession",
    "TrackingWarning",
    "WhylogsConstraintsRenderer",
    "WhylogsDatasetProfileTransformer",
    "WhylogsSummaryDriftRenderer",
    "_comet_ml_login_class",
    "_neptune_init_run_class",
    "add_deck",
    "comet_ml_login",
    "comet_session",
    "current_run",
    "execution_context",
    "memray_profile",
    "memray_profiling",
    "neptune_init_run",
    "neptune_session",
    "tracking_root",
    "wandb_init",
    "wandb_session",
    "whylogs_profile",
]

if TYPE_CHECKING:
    from ._context import ExecutionContext, execution_context
    from ._decorator import SessionDecorator
    from ._session import (
        NullRun,
        Session,
        TrackingError,
        TrackingSession,
        TrackingWarning,
        current_run,
        tracking_root,
    )
    from .decks import add_deck
    from .sessions.comet import _comet_ml_login_class, comet_ml_login, comet_session
    from .sessions.memray import memray_profile, memray_profiling
    from .sessions.neptune import _neptune_init_run_class, neptune_init_run, neptune_session
    from .sessions.wandb import wandb_init, wandb_session
    from .sessions.whylogs import (
        ConstraintsFailedError,
        WhylogsConstraintsRenderer,
        WhylogsDatasetProfileTransformer,
        WhylogsSummaryDriftRenderer,
        whylogs_profile,
    )


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'flyte_ctx_tracking' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value  # resolve once; later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
