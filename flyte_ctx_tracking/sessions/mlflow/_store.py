"""The runs our sessions own, guarded where MLflow's own client talks to its store.

MLflow's client is synchronous and unguarded: against a tracking server that died mid-task, every
``mlflow.log_metric`` in the user's code retries for minutes and then raises, and its credentials and
HTTP limits are process-wide environment variables. A session registers its run here (:func:`own`),
and every store MLflow builds gets a guard on the methods that take a run id (``log_metric``,
``log_batch``, ``set_tag``, ``update_run_info``, ``get_run``...). For a run a session owns, a call:

* goes to that run's own store, whichever tracking URI the caller's client resolved (so concurrent
  sessions on different stores never log into each other's);
* carries that run's credentials and the session's HTTP limits, and no other run's
  (:func:`requests`, read by MLflow per request, for this call only);
* when the server cannot be reached, is continued offline: the run gets a twin in the session's local
  store (its name, parameters and tags, and a tag pointing at the online run), the call and every later
  one go there, and one warning says so; a failure with nowhere to go follows ``on_error``.

The calls of runs nobody owns pass straight through. A user's own mistake (a parameter logged twice
with another value) is MLflow's error and reaches them unchanged, except in a shared run, where the
value another writer logged first is no mistake of this one: there the parameter is logged under
``<key>/<writer>`` instead, with one warning (:attr:`RunGuard.shared_writer`).
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ..._session import TrackingError, TrackingWarning, describe_exception, warn

__all__ = ["RequestPolicy", "RunGuard", "install", "own", "owner", "release", "requests", "store_for"]

# The store methods whose first argument is a run id (MLflow 3's AbstractStore).
RUN_METHODS = (
    "delete_tag",
    "get_metric_history",
    "get_metric_history_bulk_interval_from_steps",
    "get_run",
    "log_batch",
    "log_inputs",
    "log_metric",
    "log_outputs",
    "log_param",
    "record_logged_model",
    "set_tag",
    "update_run_info",
)
_READS = frozenset({"get_run", "get_metric_history", "get_metric_history_bulk_interval_from_steps"})
# MLflow's error codes for a caller's mistake: never a reason to go offline.
_CALLER_ERRORS = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST", "INVALID_STATE", "RESOURCE_DOES_NOT_EXIST"}
)
# Frames that are never the user's line: ours, MLflow's, and what runs between them.
_NOT_USERS = ("flyte_ctx_tracking", "mlflow", "contextlib", "asyncio", "concurrent", "threading", "functools")
_CORE = "flyte_ctx_tracking._session"


@dataclass(frozen=True)
class RequestPolicy:
    """What a request made for one run carries: credentials and bounded HTTP limits."""

    token: str | None = None
    username: str | None = None
    password: str | None = None
    max_retries: int | None = None
    timeout: float | None = None
    backoff_factor: float | None = None

    @classmethod
    def for_secret(cls, secret: str | None, **limits: Any) -> RequestPolicy:
        """``username:password`` is Basic auth; anything else is a bearer token."""
        if secret and ":" in secret:
            username, password = secret.split(":", 1)
            return cls(username=username, password=password, **limits)
        return cls(token=secret or None, **limits)


_POLICY: contextvars.ContextVar[RequestPolicy | None] = contextvars.ContextVar(
    "flyte_ctx_tracking_mlflow", default=None
)


@contextmanager
def requests(policy: RequestPolicy | None) -> Iterator[None]:
    """Make MLflow's requests in this context carry ``policy`` (in this thread or task only)."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


@dataclass
class RunGuard:
    """One owned run: where its calls go and what happens when they fail."""

    run_id: str
    store: Any
    """The store the run lives in (MLflow's own, cached per URI)."""
    policy: RequestPolicy | None
    on_error: str
    continue_offline: Callable[[RunGuard, BaseException], tuple[Any, str]] | None
    """Opens the offline twin: returns ``(local store, local run id)``; None where there is no
    elsewhere (the run is already local)."""
    describe: Callable[[RunGuard, BaseException], str]
    """The warning when the run went offline (or failed locally)."""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    offline: tuple[Any, str] | None = None
    """``(store, run id)`` of the offline twin once the server failed."""
    shared_writer: str | None = None
    """In a run several writers share: this writer's label, which renames a parameter another
    writer already logged with another value (``lr`` -> ``lr/n0-rank1``)."""
    users: int = 1
    """Sessions of this process that hold the run (several writers of one shared run)."""
    renamed: set[str] = field(default_factory=set)
    """Parameters renamed so far (said once each)."""
    failure: BaseException | None = None
    """What made the run go offline, or fail with nowhere to go."""
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def current(self) -> tuple[Any, str, RequestPolicy | None]:
        """The store, run id and request policy calls for this run go to now."""
        if self.offline is not None:
            return self.offline[0], self.offline[1], None
        return self.store, self.run_id, self.policy

    def call(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        store, run_id, policy = self.current
        try:
            with requests(policy):
                result = _original(store, name)(store, run_id, *args, **kwargs)
        except Exception as error:
            if _is_callers_mistake(error):
                retried = self._without_conflicts(name, args, kwargs, error)
                if retried is None:
                    raise
                return retried[0]
            return self._failed(name, args, kwargs, error)
        if self.offline is None:
            self._remember(name, args, kwargs)
        return result

    def _failed(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: Exception) -> Any:
        """Go offline the first time the server fails (said once), or give up the call (said once).

        With ``on_error="raise"`` every failed call raises :class:`TrackingError` and nothing goes
        offline, as a failed start raises instead of falling back."""
        if self.on_error == "raise":
            self.failure = self.failure or error
            raise TrackingError(self.describe(self, error)) from error
        with self._lock:
            switched = False
            if (
                self.offline is None
                and self.failure is None
                and self.continue_offline is not None
                and _is_server_failure(error)
            ):
                try:
                    self.offline = self.continue_offline(self, error)
                    switched = True
                except Exception as offline_error:
                    error = offline_error
            first, self.failure = self.failure is None, self.failure or error
        if first:
            self._report(error)
        if switched:
            return self.call(name, args, kwargs)
        if name in _READS:
            raise error
        return None  # a write that cannot happen anywhere: said once, and the block runs on

    def _report(self, error: BaseException) -> None:
        message = self.describe(self, error)
        if self.on_error == "raise":
            raise TrackingError(message) from error
        _warn_at_users_line(message)

    def _without_conflicts(
        self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: Exception
    ) -> tuple[Any] | None:
        """In a shared run, a parameter another writer logged first with another value: log it as
        ``<key>/<writer>`` instead, said once per parameter. ``(result,)``, or None for any other error."""
        if self.shared_writer is None or getattr(error, "error_code", None) != "INVALID_PARAMETER_VALUE":
            return None
        if name == "log_param" and args:
            metrics, params, tags = [], [args[0]], []
        elif name == "log_batch":
            metrics, params, tags = (list(_argument(args, kwargs, index, key)) for index, key in enumerate(_BATCH))
        else:
            return None
        from ._shared import split_conflicting_params

        store, run_id, policy = self.current
        with requests(policy):
            existing = _original(store, "get_run")(store, run_id).data.params
        kept, renamed = split_conflicting_params(existing, params, self.shared_writer, self.params)
        if not renamed:
            return None  # not another writer's value: the caller's own mistake
        result = self.call("log_batch", (), {"metrics": metrics, "params": kept, "tags": tags})
        fresh = sorted(set(renamed) - self.renamed)
        self.renamed.update(renamed)
        if fresh:
            theirs = ", ".join(f"{key}={renamed[key][0]!r}" for key in fresh)
            ours = ", ".join(f"{key}/{self.shared_writer}={renamed[key][1]!r}" for key in fresh)
            _warn_at_users_line(
                f"MlflowSession: run {self.run_id} is shared, and another writer logged {theirs} first; "
                f"this writer's values are logged as {ours}"
            )
        return (result,)

    def _remember(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Parameters and tags logged online, for the offline twin if the server goes away."""
        if name == "log_param" and args:
            self.params[args[0].key] = str(args[0].value)
        elif name == "set_tag" and args:
            self.tags[args[0].key] = str(args[0].value)
        elif name == "log_batch":
            for param in kwargs.get("params") or (args[1] if len(args) > 1 else ()) or ():
                self.params[param.key] = str(param.value)
            for tag in kwargs.get("tags") or (args[2] if len(args) > 2 else ()) or ():
                self.tags[tag.key] = str(tag.value)


_BATCH = ("metrics", "params", "tags")


def _argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    value = kwargs.get(name, args[index] if len(args) > index else None)
    return value or ()


def _warn_at_users_line(message: str) -> None:
    """Warn at the user's line that called MLflow (``mlflow.log_metric(...)`` in the block), not inside
    MLflow's client; while the core opens or closes a session, at that session's line (it knows it)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module == _CORE:
            break
        if not any(module == name or module.startswith(f"{name}.") for name in _NOT_USERS):
            registry = frame.f_globals.setdefault("__warningregistry__", {})
            warnings.warn_explicit(message, TrackingWarning, frame.f_code.co_filename, frame.f_lineno, module, registry)
            return
        frame = frame.f_back
    warn(message)


_OWNED: dict[str, RunGuard] = {}
_OWNED_LOCK = threading.Lock()


def own(guard: RunGuard) -> RunGuard:
    """Route and guard every call for ``guard.run_id`` from now on; a run this process already holds
    (a shared run another session of it writes into) keeps its guard, with one more user."""
    with _OWNED_LOCK:
        held = _OWNED.get(guard.run_id)
        # A guard nobody holds any more that went offline stays for late reads only: a new session replaces it.
        if held is not None and held.users > 0:
            held.users += 1
            return held
        _OWNED[guard.run_id] = guard
    return guard


def owner(run_id: str) -> RunGuard | None:
    """The guard of a run a session owns, if any."""
    return _OWNED.get(run_id)


def release(run_id: str) -> None:
    """One user less of a run; the last one stops guarding it, unless it went offline: later reads of
    it must still find the twin."""
    with _OWNED_LOCK:
        guard = _OWNED.get(run_id)
        if guard is None:
            return
        guard.users -= 1
        if guard.users <= 0 and guard.offline is None:
            del _OWNED[run_id]


def _is_server_failure(error: BaseException) -> bool:
    """A failure of the server or the way to it (MLflow's errors, connections, timeouts), as opposed
    to a fault in this process, which must not send the run offline."""
    from mlflow.exceptions import MlflowException

    return isinstance(error, (MlflowException, OSError, TimeoutError)) or type(error).__module__.startswith(
        ("requests", "urllib3")
    )


def _is_callers_mistake(error: BaseException) -> bool:
    code = getattr(error, "error_code", None)
    return isinstance(code, str) and code in _CALLER_ERRORS


def _original(store: Any, name: str) -> Callable[..., Any]:
    cls = type(store)
    return getattr(getattr(cls, "_flyte_unguarded", cls), name)  # type: ignore[no-any-return]


def _guarded_method(name: str, unguarded: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(unguarded)
    def method(self: Any, run_id: str, *args: Any, **kwargs: Any) -> Any:
        guard = _OWNED.get(run_id) if isinstance(run_id, str) else None
        if guard is None:
            return unguarded(self, run_id, *args, **kwargs)
        return guard.call(name, args, kwargs)

    return method


_GUARDED_CLASSES: dict[type, type] = {}


def _guard(store: Any) -> Any:
    """Give a store MLflow built the guarded methods (a subclass of its own class, so every
    ``isinstance`` check MLflow makes still holds) and per-request credentials."""
    cls = type(store)
    if getattr(cls, "_flyte_unguarded", None) is not None:
        return store
    guarded = _GUARDED_CLASSES.get(cls)
    if guarded is None:
        methods = {name: _guarded_method(name, getattr(cls, name)) for name in RUN_METHODS if hasattr(cls, name)}
        guarded = type(cls.__name__, (cls,), {**methods, "_flyte_unguarded": cls, "__module__": cls.__module__})
        _GUARDED_CLASSES[cls] = guarded
    store.__class__ = guarded
    host_creds = getattr(store, "get_host_creds", None)
    if callable(host_creds):
        store.get_host_creds = functools.partial(_host_creds, host_creds)
    return store


def _host_creds(default: Callable[[], Any]) -> Any:
    """MLflow's credentials for a request, with the calling run's own in place of the process's."""
    creds = default()
    policy = _POLICY.get()
    if policy is None:
        return creds
    if policy.token is not None or policy.username is not None:
        creds.token, creds.username, creds.password = policy.token, policy.username, policy.password
    return creds


class _Limit:
    """One of MLflow's HTTP settings (an environment variable read per request), overridden for the
    requests of a run whose session bounds them."""

    def __init__(self, variable: Any, attribute: str) -> None:
        self._variable = variable
        self._attribute = attribute

    def get(self) -> Any:
        policy = _POLICY.get()
        value = getattr(policy, self._attribute, None) if policy is not None else None
        return self._variable.get() if value is None else value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._variable, name)

    def __str__(self) -> str:
        return str(self._variable)


_INSTALLED = threading.Lock()
_installed = False


def install() -> None:
    """Guard the stores MLflow builds, from now on and those it already built (once per process)."""
    global _installed
    with _INSTALLED:
        if _installed:
            return
        from mlflow.tracking._tracking_service import utils as tracking_utils
        from mlflow.utils import rest_utils

        registry = tracking_utils._tracking_store_registry
        get_store = registry.get_store
        registry.get_store = lambda store_uri=None, artifact_uri=None: _guard(get_store(store_uri, artifact_uri))
        for variable, attribute in (
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "max_retries"),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "timeout"),
            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "backoff_factor"),
        ):
            setattr(rest_utils, variable, _Limit(getattr(rest_utils, variable), attribute))
        _installed = True


def store_for(tracking_uri: str) -> Any:
    """MLflow's (cached, guarded) store for a tracking URI."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._get_store(tracking_uri)


def failure_text(error: BaseException, *secrets: str) -> str:
    """``Type: message`` of a store failure, for a warning."""
    from ..._secrets import redact

    return redact(describe_exception(error), *secrets)
