"""flyte_ctx_tracking: experiment tracking and profiling for Flyte tasks, context-manager first.

Every integration is a reentrant session that reads the Flyte execution context::

    with wandb_session(project="fraud", entity="ml", secret=WANDB) as run: ...
    with memray_profile("join"): ...
    with whylogs_profile("batch", reference=ref) as prof: prof.log(chunk)

Importing this package imports no backend and not even flytekit: names resolve on first use. The
core names are listed here; each integration's names are its module's ``__all__`` (see
:mod:`flyte_ctx_tracking._registry`), so a new integration is one module in ``sessions/``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# The core's public names -> the private module that defines them.
_CORE: dict[str, str] = {
    "ExecutionContext": "._context",
    "execution_context": "._context",
    "add_deck": "._flyte",
    "SessionDecorator": "._decorator",
    "current_run": "._session",
    "NullRun": "._session",
    "ProfilerOptions": "._session",
    "Session": "._session",
    "TrackingError": "._session",
    "TrackingOptions": "._session",
    "TrackingSession": "._session",
    "TrackingWarning": "._session",
    "tracking_root": "._session",
    "integrations": "._registry",
    "SyncResult": "._sync",
    "tracking_defaults": "._defaults",
    "sync_offline_runs": "._sync",
}

if TYPE_CHECKING:  # for type checkers; tests check this list against the registry's exports
    from ._context import ExecutionContext, execution_context
    from ._decorator import SessionDecorator
    from ._defaults import tracking_defaults
    from ._flyte import add_deck
    from ._registry import integrations
    from ._session import (
        NullRun,
        ProfilerOptions,
        Session,
        TrackingError,
        TrackingOptions,
        TrackingSession,
        TrackingWarning,
        current_run,
        tracking_root,
    )
    from ._sync import SyncResult, sync_offline_runs
    from .sessions.comet import CometSession, _comet_ml_login_class, comet_ml_login, comet_session
    from .sessions.memray import AllocationSite, MemrayCapture, memray_profile, memray_profiling
    from .sessions.mlflow import MlflowSession, mlflow_autolog, mlflow_run, mlflow_session
    from .sessions.neptune import NeptuneSession, _neptune_init_run_class, neptune_init_run, neptune_session
    from .sessions.wandb import WandbSession, wandb_init, wandb_session
    from .sessions.whylogs import (
        ColumnSummary,
        ConstraintResult,
        ConstraintsFailedError,
        DriftResult,
        WhylogsConstraintsRenderer,
        WhylogsDatasetProfileTransformer,
        WhylogsProfile,
        WhylogsProfileSession,
        WhylogsSummaryDriftRenderer,
        merge_profiles,
        whylogs_profile,
    )


def _is_submodule(name: str) -> bool:
    return name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None


def _exports() -> dict[str, str]:
    from ._registry import builtin_exports

    return {**dict.fromkeys(_CORE, __name__), **builtin_exports()}


def __getattr__(name: str) -> Any:
    if (name.startswith("__") and name != "__all__") or _is_submodule(name):
        # dunders, and submodules being imported (`from . import _flyte`), are not exports
        raise AttributeError(f"module 'flyte_ctx_tracking' has no attribute {name!r}")
    if name == "__all__":
        value: Any = sorted(_exports())
    elif name in _CORE:
        value = getattr(importlib.import_module(_CORE[name], __name__), name)
    elif name in (exports := _exports()):
        value = getattr(importlib.import_module(exports[name]), name)
    else:
        raise AttributeError(f"module 'flyte_ctx_tracking' has no attribute {name!r}")
    globals()[name] = value  # resolve once; later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_exports()})
