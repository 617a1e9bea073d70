"""The session core: the one lifecycle every integration shares.

A session is a reusable, reentrant context manager (``with``, ``async with``, or a decorator).
Subclasses supply only what is specific to their backend: how to open and close a handle, what
identifies their target, and what to show in a deck. Everything else lives here, once:

* registration: a subclass declaring ``kind=...`` is an integration (:mod:`._registry`);
* the shared options (``mode``, ``on_error``, ``secret``, ``directory``, ``all_ranks``), their
  checks and their documentation, and a ``repr`` derived from each session's own parameters;
* reentrancy: entering a session whose target is already active in this thread or asyncio task
  reuses that handle; the last user of a handle closes it, exactly once;
* isolation: the active handles live in a ``ContextVar``, so threads and asyncio tasks never see
  each other's runs; ``async with`` opens and closes the backend off the event loop;
* the error policy: the user's exception always propagates unchanged (same object, same
  traceback) after the handle is closed as failed; a failure of the backend itself follows
  ``on_error``, and every warning points at the user's line;
* mode (overridden by ``FLYTE_CTX_TRACKING_MODE``), rank awareness, the local data directory,
  secrets and decks.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import importlib.util
import inspect
import logging
import os
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, ClassVar, Generic, Literal, TypedDict, TypeVar, cast, get_args

from . import _flyte, _preserve, _registry, _termination
from ._context import ExecutionContext, execution_context
from ._defaults import TrackingDefaults, current_defaults
from ._offline import OfflineRun, Progress, UploadTarget
from ._secrets import SecretSpec, describe_secret, redact, resolve_secret, scrub_exception_chain, validate_secret
from ._sharing import RANK_SCOPES, RUN_MODES, RankScope, RunMode, Sharing, decide_sharing, sharing_note
from ._types import RunInfo
from ._validate import check_choice

__all__ = [
    "MODE_ENV_VAR",
    "SHARED_OPTIONS",
    "TRACKING_DIR_ENV_VAR",
    "Mode",
    "NullRun",
    "OnError",
    "OpenPlan",
    "ProfilerOptions",
    "RunInfo",
    "Session",
    "SessionUnavailable",
    "TrackingError",
    "TrackingOptions",
    "TrackingSession",
    "TrackingWarning",
    "current_run",
    "describe_exception",
    "exception_message",
    "log_to_active_trackers",
    "tracking_root",
    "warn",
]

Mode = Literal["auto", "online", "offline", "disabled"]
OnError = Literal["warn", "raise"]
MODES: tuple[str, ...] = get_args(Mode)
ON_ERROR: tuple[str, ...] = get_args(OnError)
MODE_ENV_VAR = "FLYTE_CTX_TRACKING_MODE"
TRACKING_DIR_ENV_VAR = "FLYTE_CTX_TRACKING_DIR"
ONLINE_TIMEOUT_ENV_VAR = "FLYTE_CTX_TRACKING_ONLINE_TIMEOUT"
DEFAULT_ONLINE_TIMEOUT = 30.0
"""Seconds a tracker may take to go online before the block starts offline instead."""
DEFAULT_TRACKING_DIR = ".flyte-ctx-tracking"

HandleT = TypeVar("HandleT")
SessionT = TypeVar("SessionT", bound="Session[Any]")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class TrackingWarning(UserWarning):
    """Warned when tracking degrades (offline fallback, a backend failure) while the task runs on."""


class TrackingError(RuntimeError):
    """Raised for a backend failure when the session was created with ``on_error="raise"``."""


class OnlineTimeout(TimeoutError):
    """Going online did not finish within the session's ``online_timeout``."""


class SessionUnavailable(RuntimeError):
    """Raised by a backend's ``_open`` when it cannot open at all right now (memray's one tracker per
    process is taken, Comet's one experiment per process is running): the core does not retry
    offline, it applies ``on_error`` once."""


def tracking_root() -> Path:
    """Where the library writes local data: ``$FLYTE_CTX_TRACKING_DIR``, else ``./.flyte-ctx-tracking``."""
    return Path(os.environ.get(TRACKING_DIR_ENV_VAR) or DEFAULT_TRACKING_DIR).absolute()


# ---------------------------------------------------------------------------------- shared options


class ProfilerOptions(TypedDict, total=False):
    """The options every session takes, profilers included (documented in :data:`SHARED_OPTIONS`)."""

    mode: Mode
    on_error: OnError
    directory: str | os.PathLike[str] | None
    offline_copy: bool | str | None


class TrackingOptions(ProfilerOptions, total=False):
    """The options of tracking sessions: a profiler's, ``all_ranks`` and ``online_timeout``
    (``secret`` is positional)."""

    all_ranks: bool
    online_timeout: float | None
    run_mode: RunMode | None
    rank_scope: RankScope | None


SHARED_OPTIONS: Mapping[str, str] = {
    "mode": (
        '``"auto"`` (trackers: online with a key, else offline with one warning; profilers: on), '
        '``"online"``, ``"offline"`` or ``"disabled"``. ``FLYTE_CTX_TRACKING_MODE`` overrides it for a '
        "whole process, but never turns on a session its code disabled."
    ),
    "on_error": (
        'what a failure of the backend itself does: ``"warn"`` (the block runs on, untracked or '
        'offline) or ``"raise"`` (:class:`TrackingError`). Never applies to the user\'s own exception.'
    ),
    "secret": (
        "the backend's key: a flytekit ``Secret``, a callable returning it, or None to use the "
        "backend's own variable or saved login. It is handed to this session's backend call only."
    ),
    "directory": "where the backend's local data goes; default ``$FLYTE_CTX_TRACKING_DIR/<kind>``.",
    "offline_copy": (
        "where the local data is copied when the session closes, so that it outlives the pod: a prefix "
        "flytekit can write (``s3://...``, ``gs://...``, a path), True for the execution's raw output "
        "prefix, False for no copy. Default ``$FLYTE_CTX_TRACKING_OFFLINE_COPY``, else: trackers copy "
        "their offline runs in remote runs (pods) to the raw output prefix; profilers copy nothing."
    ),
    "all_ranks": '``rank_scope="rank"``, by its older name (True: every rank its own run).',
    "run_mode": (
        '``"new"`` (a run of its own for each task or block), ``"shared"`` (one run for the whole '
        'execution: every task and rank writes into it), ``"nested"`` (a child of the execution\'s parent '
        'run, or a member of its group) or ``"auto"`` (the backend\'s choice: ``"new"``; MLflow nests '
        "under an active run). None: the workflow's default (``FLYTE_CTX_TRACKING_RUN_MODE``, "
        ':func:`tracking_defaults`), else ``"auto"``. A mode the backend cannot do where it runs '
        '(offline) falls back to ``"new"`` with one warning; see ``docs/run-sharing.md``.'
    ),
    "rank_scope": (
        'in distributed training (``WORLD_SIZE > 1``): ``"global"`` (one run for the job, opened by rank 0), '
        '``"worker"`` (one per node, by ``GROUP_RANK``, opened by its ``LOCAL_RANK`` 0) or ``"rank"`` (one '
        'per rank). With ``run_mode="shared"`` every rank writes into its scope\'s run; otherwise the ranks '
        'that do not open one get ``None``. None: the workflow\'s default, else ``"global"``.'
    ),
    "online_timeout": (
        "seconds going online may take before the block starts offline instead, with one warning "
        "(default ``$FLYTE_CTX_TRACKING_ONLINE_TIMEOUT``, else 30). An attempt that does not return in "
        "time is abandoned, not waited for; if it opens a run later, that run is closed."
    ),
}
"""The documentation of each shared option, appended to every session class's docstring."""

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _options_doc(names: tuple[str, ...]) -> str:
    lines = ["", "    Shared options (keyword arguments, the same for every integration):"]
    for name in names:
        lines.append(f"        {name}: {SHARED_OPTIONS[name]}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- warnings


@dataclass(frozen=True)
class _Origin:
    """The user's line a session's warnings point at."""

    filename: str
    lineno: int
    module: str
    globals: dict[str, Any] = field(repr=False, compare=False)
    function: str | None = None
    """``module.qualname`` of a decorated function."""

    @classmethod
    def of(cls, source: FrameType | Callable[..., Any]) -> _Origin | None:
        """The origin of a ``with`` block's frame, or of a decorated function."""
        return cls.of_frame(source) if isinstance(source, FrameType) else cls.of_function(source)

    @classmethod
    def of_frame(cls, frame: FrameType | None) -> _Origin | None:
        """The first frame from ``frame`` outwards that is not this library's or the machinery's."""
        while frame is not None:
            module = str(frame.f_globals.get("__name__", ""))
            if not module.startswith(_MACHINERY):
                return cls(frame.f_code.co_filename, frame.f_lineno, module, frame.f_globals)
            frame = frame.f_back
        return None

    @classmethod
    def of_function(cls, func: Callable[..., Any]) -> _Origin | None:
        """Where ``func`` is defined: a decorated function's warnings point at its decorators."""
        code = getattr(inspect.unwrap(func), "__code__", None)
        func_globals = getattr(inspect.unwrap(func), "__globals__", None)
        if code is None or not isinstance(func_globals, dict):
            return None
        module = str(func_globals.get("__name__", ""))
        name = f"{module}.{getattr(func, '__qualname__', code.co_name)}"
        return cls(code.co_filename, code.co_firstlineno, module, func_globals, name)


# Frames of these modules are never the user's line (``contextlib`` runs ``ExitStack`` blocks).
_MACHINERY = ("flyte_ctx_tracking", "contextlib", "asyncio", "concurrent.futures", "threading")
_LOG = logging.getLogger("flyte_ctx_tracking")
# News that reaches every session of a process (a backend offline for want of a key, a run mode it
# cannot do, a bad FLYTE_CTX_TRACKING_* value), by what it is about: how often it was told.
_NOTICES: dict[Hashable, int] = {}
_NOTICES_LOCK = threading.Lock()
# The origin of the session whose backend code is running in this context (set around each hook).
_ORIGIN: ContextVar[_Origin | None] = ContextVar("flyte_ctx_tracking_origin", default=None)


def _warn_once(about: Hashable, message: str | Callable[[], str], later: str) -> None:
    """Warn ``message`` the first time this process hears ``about`` it; later, log it at INFO.

    A map task's every element, or every session of a test suite, meets the same news: one warning
    says it, and the message (which may read the backend's run back) is only made when it is told.
    """
    with _NOTICES_LOCK:
        count = _NOTICES[about] = _NOTICES.get(about, 0) + 1
    if count > 1 and not _LOG.isEnabledFor(logging.INFO):
        return
    text = message if isinstance(message, str) else message()
    if count == 1:
        warn(f"{text} (Said once per process; {later} are logged at INFO.)")
    else:
        _LOG.info("%s (number %d in this process)", text, count)


def warn(message: str, category: type[Warning] = TrackingWarning) -> None:
    """Warn at the user's line of the session being opened or closed (else at the caller's caller).

    Integrations call this instead of ``warnings.warn``: their code runs deep in the core, and off
    the event loop for ``async with``, so a stack level cannot find the user's line.
    """
    origin = _ORIGIN.get()
    if origin is None:
        origin = _Origin.of_frame(sys._getframe(1))
    if origin is None:
        warnings.warn(message, category, stacklevel=3)
        return
    registry = origin.globals.setdefault("__warningregistry__", {})
    warnings.warn_explicit(message, category, origin.filename, origin.lineno, origin.module, registry)


# ---------------------------------------------------------------------------------- open state


@dataclass(frozen=True)
class OpenPlan:
    """Everything a backend needs to open its handle, decided by the core.

    Attributes:
        mode: ``"online"`` or ``"offline"`` for tracking backends; ``"on"`` for profilers.
        context: the execution context at the moment the session opened.
        directory: where this backend writes local data (created).
        run_id: the default run identity (the pod name in remote runs, ``None`` locally).
        group: what a node's retries and ranks share (``None`` locally).
        api_key: the resolved secret, if any. Never printed: excluded from ``repr``.
        secrets: every key the session knows of (``api_key``, the backend's own variable or saved
            login), scrubbed from everything the library reports or writes, in every encoding.
        fallback_reason: why the mode is not what was asked for, if it is not.
        after_online_failure: True for the offline retry after opening online failed (a backend
            whose failed attempt still holds the run id uses another one).
        source_file: the user's source file that entered the session (the decorated function's
            file, or the file of the ``with`` block), when it is a file on disk.
        function: ``module.qualname`` of the decorated function, for a decorator.
    """

    mode: str
    context: ExecutionContext
    directory: Path
    run_id: str | None
    group: str | None
    api_key: str | None = field(default=None, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    fallback_reason: str | None = None
    after_online_failure: bool = False
    source_file: str | None = None
    function: str | None = None
    online_timeout: float | None = None
    """For an online open: the seconds it has before it is abandoned (a backend passes it to its
    client's own timeouts, so that the client gives up by itself too)."""
    copy_to: str | None = None
    """Where the session's local data is copied when it closes (a tracker's only when it ran
    offline), or None: see :mod:`._preserve`."""
    copied: bool = False
    """The copy to ``copy_to`` was made (set after closing, for the deck)."""
    sharing: Sharing = field(default_factory=Sharing)
    """Which run this writer writes to (run mode, rank scope, the shared identity): ``run_id`` is the
    identity it derives. Profilers always get a new run's."""


@dataclass(eq=False)
class _OpenState:
    """One opened handle, shared by every frame that entered it (in any thread or asyncio task)."""

    handle: Any
    plan: OpenPlan | None
    origin: _Origin | None = None
    scope: AbstractContextManager[Any] | None = None
    users: int = 1
    """Frames holding the handle. The last one out closes it: an asyncio task that re-entered the
    session keeps the run open after the block that opened it ended."""
    outcome: BaseException | None = None
    """The exception the opening block ended with, if it failed."""
    closed: bool = False
    finished: bool = False
    """Closing has begun (by the last user, or on termination): it happens exactly once."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    session: Session[Any] | None = None
    """The session that opened the handle, when it is not the one entered: a copy with the
    workflow's defaults filled in (see :mod:`._defaults`). It also closes the handle."""

    def claim_finish(self) -> bool:
        """True for the one caller that gets to close the handle."""
        with self.lock:
            if self.finished:
                return False
            self.finished = self.closed = True
            return True

    def join(self) -> bool:
        """Count one more user; False when the handle was closed meanwhile (then open a new one)."""
        with self.lock:
            if self.closed:
                return False
            self.users += 1
            return True

    def leave(self, owner: bool, failure: BaseException | None) -> BaseException | bool | None:
        """Count one user out. Returns False while others still hold the handle, else the failure
        to close it with (the opener's, or the last user's own)."""
        with self.lock:
            self.users -= 1
            if owner:
                self.outcome = failure
            if self.users > 0:
                return False
            self.closed = True
            return failure if failure is not None else self.outcome


@dataclass(eq=False)
class _Frame:
    """One entry into a session: a ``with`` block, an ``async with`` block or one decorated call."""

    key: Hashable
    state: _OpenState
    session: Session[Any]
    owner: bool
    caller: int
    """``id`` of the Python frame that entered: the same frame exits (``with`` and ``async with``)."""
    scope: int | None = None
    """The task execution that entered (:func:`_flyte.task_scope`): only it sees the session."""
    exited: bool = False

    def visible_in(self, scope: int | None) -> bool:
        return self.scope == scope and not self.exited and not self.state.closed


# The active sessions of this thread or asyncio task, innermost last. A tuple, never mutated in
# place, so the copy an asyncio task inherits can never be changed from another task.
_ACTIVE: ContextVar[tuple[_Frame, ...]] = ContextVar("flyte_ctx_tracking_active", default=())


def _failure(error: BaseException | None) -> BaseException | None:
    """The block's exception if it means failure: leaving a generator early (``GeneratorExit``) and
    ``sys.exit(0)`` end a block normally."""
    if isinstance(error, GeneratorExit):
        return None
    if isinstance(error, SystemExit) and error.code in (None, 0):
        return None
    return error


def refuse_generator_function(owner: str, func: object) -> None:
    """Raise ``TypeError`` for a generator function: decorating it would open and close the session
    when the generator is created, before its body runs, and track nothing."""
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        name = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"{owner} cannot decorate the generator function {name}: its body runs after the call returns, "
            "outside the session. Use `with` (or `async with`) around the loop that consumes it instead."
        )


def exception_message(error: BaseException) -> str:
    """``str(error)``, also for an exception whose ``__str__`` raises (it is still a failure)."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} whose message cannot be printed>"


def describe_exception(error: BaseException) -> str:
    """``Type: message`` of ``error`` (see :func:`exception_message`)."""
    message = exception_message(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _check_timeout(name: str, value: object) -> float:
    """``value`` as seconds: a positive, finite number (not a bool), else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name}={value!r} is not accepted; pass a positive number of seconds")
    return float(value)


def refuse_flyte_task(owner: str, func: object) -> None:
    """Raise ``TypeError`` for a Flyte task object: decorating it would hide the task from flytekit
    (a workflow would call a plain function, and the session would open when the workflow compiles)."""
    if _flyte.is_flyte_task(func):
        raise TypeError(
            f"@{owner} was applied to a Flyte task object; put it below @task instead:\n"
            f"    @task\n    @{owner}(...)\n    def my_task(...): ..."
        )


def _check_kind(kind: str) -> None:
    if _registry.find(kind) is None:
        check_choice("current_run", "kind", kind, _registry.kinds())


def current_run(kind: str | None = None) -> Any:
    """The innermost active session handle, of one backend when ``kind`` is given, else ``None``.

    Args:
        kind: a registered kind (``"wandb"``, ``"comet"``, ``"neptune"``, ``"memray"``, ``"whylogs"``,
            or one a session class of your own declares), or None for whichever session is innermost.
    """
    if kind is not None:
        _check_kind(kind)
    frames = _ACTIVE.get()
    scope = _flyte.task_scope() if frames else None
    for frame in reversed(frames):
        if (kind is None or frame.session.kind == kind) and frame.visible_in(scope):
            return frame.state.handle
    return None


def log_to_active_trackers(metrics: Mapping[str, float | int]) -> list[str]:
    """Log ``metrics`` to the innermost active run of each tracking backend.

    Profilers use this to connect what they measured to the run the user is tracking. A tracker
    that fails to log gets a warning; the caller never fails. Returns the kinds that were logged to.
    """
    done: list[str] = []
    frames = _ACTIVE.get()
    scope = _flyte.task_scope() if frames else None
    for frame in reversed(frames):
        session = frame.session
        skip = frame.state.handle is None or isinstance(frame.state.handle, NullRun)
        skip = skip or not frame.visible_in(scope) or session.kind in done
        if not isinstance(session, TrackingSession) or skip:
            continue
        done.append(session.kind)
        try:
            session._log_metrics(frame.state.handle, metrics)
        except Exception as error:
            secrets = frame.state.plan.secrets if frame.state.plan is not None else ()
            detail = session._describe_failure(error, secrets)
            warn(f"{type(session).__name__}: could not log {sorted(metrics)}: {detail}")
    return done


async def _off_loop(function: Callable[[], T], *, if_cancelled: Callable[[T], None] | None = None) -> T:
    """Run a blocking backend call in a worker thread, in a copy of this context.

    If the awaiting task is cancelled, the call still finishes (it cannot be interrupted), and
    ``if_cancelled`` gets its result, in a worker thread too, so that a run opened for a block that
    will never run is closed instead of leaked. The cancellation propagates at once.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, contextvars.copy_context().run, function)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if if_cancelled is not None:
            undo = if_cancelled

            def when_done(done: asyncio.Future[T]) -> None:
                if not done.cancelled() and done.exception() is None:
                    loop.run_in_executor(None, undo, done.result())

            future.add_done_callback(when_done)
        raise


class Session(Generic[HandleT]):
    """Base of every integration: a reentrant context manager, async context manager and decorator.

    An integration subclasses it (or :class:`TrackingSession`) with class keywords that register
    its kind: ``class MySession(Session[MyHandle], kind="mine", display_name="Mine",
    backend="mine_client", extra="mine")``, and implements :meth:`_open` and :meth:`_close`; it may
    override the other hooks. Its ``__init__`` lists only its own parameters and hands the shared
    options to :meth:`_take_options`.
    """

    kind: ClassVar[str]
    """The name ``current_run`` knows this backend by."""
    display_name: ClassVar[str]
    """How messages and decks name the backend."""
    backend_module: ClassVar[str]
    """The module that must be importable to enter the session."""
    extra: ClassVar[str | None] = None
    """The pip extra that installs ``backend_module``."""
    tracks_runs: ClassVar[bool] = False
    """Tracking backends have online and offline modes and open runs on rank 0 only by default."""
    credential_name: ClassVar[str] = "API key"
    """What the backend calls its credential, in messages."""
    credential_sources: ClassVar[str] = "the backend has no key of its own"
    """Where the backend looks for a key without ``secret=``, in messages ("WANDB_API_KEY is not set...")."""
    shared_options: ClassVar[tuple[str, ...]] = ("mode", "on_error", "directory", "offline_copy")
    """The shared options this kind of session takes."""
    named_after_function: ClassVar[bool] = False
    """Whether a decorated function names an unnamed session (profilers: ``name``)."""
    works_without_directory: ClassVar[bool] = False
    run_modes: ClassVar[Mapping[str, tuple[str, ...]]] = {"online": ("new",), "offline": ("new",)}
    """The run modes (``new``, ``shared``, ``nested``) the backend can do online and offline."""
    auto_run_mode: ClassVar[str] = "new"
    """What ``run_mode="auto"`` does for this backend."""
    _run_mode_defaulted: bool = False
    """``run_mode`` came from the workflow's defaults (a copy made at open says so in its warnings)."""
    telemetry_off: ClassVar[Mapping[str, str]] = {}
    """The backend's own phone-home switches (environment variables), set before a session that is
    not online opens (a user's own value wins). The backends read them when they are imported or
    start their helper process, so they hold for the rest of the process."""
    """Whether the session still opens when its data directory cannot be created (it works in
    memory, and only saving fails: whylogs' constraints are judged all the same)."""
    deck: bool = True
    """Whether the session adds its deck (when the task's decks are on); profilers take it as an argument."""

    mode: Mode
    on_error: OnError
    secret: SecretSpec
    directory: Path | None
    all_ranks: bool
    online_timeout: float | None

    def __init_subclass__(
        cls,
        *,
        kind: str | None = None,
        display_name: str | None = None,
        backend: str | None = None,
        extra: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if kind is None:
            return
        if not isinstance(kind, str) or not kind.isidentifier():
            raise ValueError(f"{cls.__qualname__}: kind={kind!r} is not accepted; pass a name such as 'wandb'")
        cls.kind = kind
        cls.display_name = display_name or kind
        cls.backend_module = backend or kind
        cls.extra = extra
        if cls.__doc__:
            cls.__doc__ = inspect.cleandoc(cls.__doc__) + "\n" + _options_doc(cls.shared_options)
        _registry.register(_registry.Integration(kind, cls.display_name, cls.backend_module, extra, cls))

    def __init__(self, **options: Any) -> None:
        """Take the shared options; anything else is refused, naming what is accepted."""
        self._refuse_unknown(self._take_options(dict(options)))

    def _take_options(self, options: dict[str, Any], *, secret: SecretSpec = None) -> dict[str, Any]:
        """Check and set the shared options found in ``options``; return the others.

        A session without keyword arguments of its own (``**options`` only) passes everything:
        what is left is refused with an error naming what is accepted.
        """
        owner = type(self).__name__
        shared = {name: options.pop(name) for name in self.shared_options if name in options}
        mode = shared.get("mode", "auto")
        on_error = shared.get("on_error", "warn")
        check_choice(owner, "mode", mode, MODES)
        check_choice(owner, "on_error", on_error, ON_ERROR)
        secret = shared.get("secret", secret)
        validate_secret(secret, owner=owner)
        directory = shared.get("directory")
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{owner}: directory={directory!r} is not accepted; pass a path (str or os.PathLike)")
        all_ranks = shared.get("all_ranks", False)
        if not isinstance(all_ranks, bool):
            raise TypeError(f"{owner}: all_ranks={all_ranks!r} is not accepted; pass True or False")
        run_mode = shared.get("run_mode")
        if run_mode is not None:
            # Only the modes this backend has: Comet and Neptune have no parent runs to nest under.
            possible = ("auto", *dict.fromkeys(mode for modes in self.run_modes.values() for mode in modes))
            check_choice(owner, "run_mode", run_mode, tuple(mode for mode in RUN_MODES if mode in possible))
        rank_scope = shared.get("rank_scope")
        if rank_scope is not None:
            check_choice(owner, "rank_scope", rank_scope, RANK_SCOPES)
        if all_ranks:
            if rank_scope not in (None, "rank"):
                raise ValueError(
                    f"{owner}: all_ranks=True is rank_scope='rank', which contradicts rank_scope={rank_scope!r}; "
                    "pass one of them"
                )
            rank_scope = "rank"
        offline_copy = shared.get("offline_copy")
        if offline_copy is not None and not isinstance(offline_copy, (bool, str)):
            raise TypeError(
                f"{owner}: offline_copy={offline_copy!r} is not accepted; pass a prefix (s3://..., gs://..., "
                "a path), True for the execution's raw output prefix, False for no copy, or None"
            )
        if isinstance(offline_copy, str) and not offline_copy.strip():
            raise ValueError(f"{owner}: offline_copy='' is not accepted; pass a prefix, True, False or None")
        online_timeout = shared.get("online_timeout")
        if online_timeout is not None:
            online_timeout = _check_timeout(f"{owner}: online_timeout", online_timeout)
        self.mode = mode
        self.on_error = on_error
        self.secret = secret
        self.directory = Path(directory) if directory is not None else None
        self.all_ranks = all_ranks
        self.run_mode: str | None = run_mode
        self.rank_scope: str | None = rank_scope
        self.offline_copy: bool | str | None = offline_copy
        self.online_timeout: float | None = online_timeout
        self._key: Hashable | None = None
        self._entered: list[_Frame] = []  # every live entry, in any context: to find a block exited elsewhere
        self._entered_lock = threading.Lock()
        return options

    def _keep(self, arguments: Mapping[str, Any]) -> None:
        """Keep the session's own parameters (``locals()`` of its ``__init__``, after checking them) as
        attributes of the same names, which ``repr`` and the decorator objects show."""
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name not in ("self", "secret") and parameter.kind not in _VARIADIC and name in arguments:
                setattr(self, name, arguments[name])

    def _refuse_unknown(self, options: Mapping[str, Any]) -> None:
        """``TypeError`` for keyword arguments that are neither the session's own nor shared."""
        if options:
            own = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
            accepted = ", ".join(sorted({*own, *self.shared_options} - {"options", "kwargs"}))
            unknown = ", ".join(sorted(options))
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {unknown}; accepted: {accepted}")

    # ------------------------------------------------------------------ backend hooks
    def _reuse_key(self) -> Hashable:
        """What the session targets: an active session with an equal key is reused, not reopened."""
        return id(self)

    def _ambient_credentials(self) -> bool:
        """True when the backend can log in without our secret (its env var or saved login)."""
        return bool(self._known_secrets())

    def _known_secrets(self) -> tuple[str, ...]:
        """The keys the backend would use without our secret (its variable, its saved login): the
        core scrubs them from everything it reports, like the secret itself."""
        return ()

    def _secret_forms(self, key: str) -> tuple[str, ...]:
        """``key`` and any secret it holds (a Neptune token holds its API key), all to be scrubbed."""
        return (key,)

    def _safe_known_secrets(self) -> tuple[str, ...]:
        try:
            # Keys from files (Kubernetes secrets) often end in a newline: servers echo them without.
            return tuple(key.strip() for key in self._known_secrets() if isinstance(key, str) and key.strip())
        except Exception:  # an unreadable saved login is no login
            return ()

    def _open(self, plan: OpenPlan) -> HandleT:
        """Open and return the backend handle. Raising here follows ``on_error``."""
        raise NotImplementedError

    def _close(self, handle: HandleT, plan: OpenPlan, error: BaseException | None) -> None:
        """Close the handle; ``error`` is the user's exception when the block failed."""
        raise NotImplementedError

    def _deck(
        self, handle: HandleT, plan: OpenPlan, error: BaseException | None
    ) -> tuple[str, str] | list[tuple[str, str]] | None:
        """``(title, html)`` of a deck to add after closing, a list of them, or None."""
        return None

    def _verdict(self, handle: HandleT, plan: OpenPlan) -> None:
        """Judge the block after the handle closed and its decks were written (the default judges nothing).

        Called only when the block itself succeeded. Raising here fails the block on what the session
        found (a profiler's failed data checks): the exception propagates as it is, since it is the
        session's result, not a backend failure, so ``on_error`` does not apply.
        """
        return None

    def _offline_data(self, handle: HandleT, plan: OpenPlan) -> list[tuple[Path, str]]:
        """The closed handle's local files and folders, each with its name under ``plan.copy_to``: what
        is copied out of the pod (see :mod:`._preserve`), and what ``flyte-ctx-tracking sync`` finds
        there. Keep the layout the backend's own upload command expects. A tracker returns its offline
        data only (a run that went offline mid-block included); none by default."""
        return []

    def _inactive_handle(self) -> HandleT | None:
        """The handle the block gets when the session does not open (disabled, or opening failed).

        None by default; a profiler returns an object that says it did not profile, so user code
        reading its numbers after the block keeps running. It is never closed.
        """
        return None

    def _handle_scope(self, handle: HandleT, plan: OpenPlan) -> AbstractContextManager[Any] | None:
        """A context to hold open while the handle is active, or None (the default).

        The core enters it once the handle opened and exits it just before closing the handle, in
        the caller's own context (never off the event loop), in the owner frame only. A backend
        uses it to publish its handle somewhere else for the block's duration, such as flytekit's
        current context.
        """
        return None

    # ------------------------------------------------------------------ public lifecycle
    @property
    def key(self) -> Hashable:
        """The reuse key, computed once: the nested (reentrant) path must stay cheap."""
        if self._key is None:
            # A run of another mode or scope is another run, whatever the backend's own target says.
            self._key = (self.kind, self._reuse_key(), self.run_mode, self.rank_scope)
        return self._key

    def __enter__(self) -> HandleT:
        caller = sys._getframe(1)
        return cast(HandleT, self._enter_sync(id(caller), caller).state.handle)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        frame = self._find_exiting(id(sys._getframe(1)))
        if frame is not None:
            self._exit_sync(frame, exc)

    async def __aenter__(self) -> HandleT:
        caller = sys._getframe(1)
        return cast(HandleT, (await self._enter_async(id(caller), caller)).state.handle)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        frame = self._find_exiting(id(sys._getframe(1)))
        if frame is not None:
            await self._exit_async(frame, exc)

    def __call__(self, func: F) -> F:
        """Use the session as a decorator: every call of ``func`` runs inside it.

        A coroutine function stays one (its session opens and closes off the event loop); a
        generator function is refused (its body would run outside the session). Warnings point at
        the function's definition.
        """
        refuse_generator_function(type(self).__name__, func)
        refuse_flyte_task(type(self).__name__, func)
        session = self._for_function(func)
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                frame = await session._enter_async(0, func)
                try:
                    result = await cast(Callable[..., Awaitable[Any]], func)(*args, **kwargs)
                except BaseException as error:
                    await session._exit_async(frame, error)
                    raise
                await session._exit_async(frame, None)
                return result

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = session._enter_sync(0, func)
            try:
                result = func(*args, **kwargs)
            except BaseException as error:
                session._exit_sync(frame, error)
                raise
            session._exit_sync(frame, None)
            return result

        return cast(F, wrapper)

    def __repr__(self) -> str:
        """The session's own parameters that differ from their defaults, then ``mode`` and the secret's source."""
        parts: list[str] = []
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "secret") or parameter.kind in _VARIADIC:
                continue
            value = getattr(self, name, parameter.default)
            shown = _short_repr(value)
            if value is not parameter.default and shown != _short_repr(parameter.default):
                parts.append(f"{name}={shown}")
        parts.append(f"mode={self.mode!r}")
        if self.tracks_runs:
            parts.append(f"secret={describe_secret(self.secret)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _replace(self: SessionT, **attributes: Any) -> SessionT:
        """A copy of this (already validated) session with some attributes changed, such as the
        section name a decorated function gives, or a directory a task argument gives. The copy's
        reuse key is computed afresh from its own attributes."""
        clone = copy.copy(self)
        clone.__dict__.update(attributes)
        clone._key = None
        clone._entered = []
        clone._entered_lock = threading.Lock()
        return clone

    def _for_function(self: SessionT, func: Callable[..., Any]) -> SessionT:
        """The session a decorated ``func`` runs in: an unnamed profiler takes the function's name."""
        if self.named_after_function and getattr(self, "name", None) is None:
            return self._replace(name=getattr(func, "__name__", None) or "profile")
        return self

    # ------------------------------------------------------------------ entering and leaving
    def _enter_sync(self, caller: int, source: FrameType | Callable[..., Any]) -> _Frame:
        """Enter: reuse this context's active handle with the same key, else open one here.

        ``caller`` identifies the entering Python frame (0 for a decorated call, which holds its
        entry itself); ``source`` is what the session's warnings point at.
        """
        frame = self._join(caller)
        if frame is None:
            state = self._open_state(_Origin.of(source))
            self._publish(state)
            frame = self._push(state, caller, owner=True, scope=_flyte.task_scope())
        return frame

    async def _enter_async(self, caller: int, source: FrameType | Callable[..., Any]) -> _Frame:
        """:meth:`_enter_sync` with the backend opened off the event loop (bookkeeping stays here)."""
        frame = self._join(caller)
        if frame is None:
            opening = functools.partial(self._open_state, _Origin.of(source))
            state = await _off_loop(
                opening, if_cancelled=lambda opened: self._close_now(opened, asyncio.CancelledError())
            )
            self._publish(state)
            frame = self._push(state, caller, owner=True, scope=_flyte.task_scope())
        return frame

    def _exit_sync(self, frame: _Frame, exc: BaseException | None) -> None:
        state = self._leave(frame, exc)
        try:
            if frame.owner:  # in the context that published the handle, even if others still hold it
                self._unpublish(frame.state)
        finally:
            if state is not None:
                self._close_state(state, raised=exc is not None)

    async def _exit_async(self, frame: _Frame, exc: BaseException | None) -> None:
        state = self._leave(frame, exc)
        try:
            if frame.owner:
                self._unpublish(frame.state)
        finally:
            if state is not None:
                await _off_loop(functools.partial(self._close_state, state, raised=exc is not None))

    def _join(self, caller: int) -> _Frame | None:
        frames = _ACTIVE.get()
        if not frames:
            return None
        key, scope = self.key, _flyte.task_scope()
        for frame in reversed(frames):
            if frame.key == key and frame.scope == scope and not frame.exited and frame.state.join():
                return self._push(frame.state, caller, owner=False, scope=scope)
        return None

    def _push(self, state: _OpenState, caller: int, *, owner: bool, scope: int | None) -> _Frame:
        frame = _Frame(self.key, state, self, owner, caller, scope)
        _ACTIVE.set((*_ACTIVE.get(), frame))
        with self._entered_lock:
            self._entered.append(frame)
        return frame

    def _find_exiting(self, caller: int) -> _Frame | None:
        """The entry a ``with``/``async with`` block is leaving: the one its own Python frame entered.

        In this context first; then in any context (a generator holding the block was closed in
        another thread); then, for a block entered by other code (``ExitStack``), this context's
        innermost entry. Never one that another block still holds: when nothing matches and more
        than one entry is live, nothing is closed.
        """
        mine = [frame for frame in _ACTIVE.get() if frame.session is self and not frame.exited]
        with self._entered_lock:
            live = [frame for frame in self._entered if not frame.exited]
        for candidates in (mine, live):
            for frame in reversed(candidates):
                if frame.caller == caller:
                    return frame
        if mine:
            return mine[-1]
        if len(live) == 1:
            warn(
                f"{type(self).__name__}: the block was exited in another thread or context than it was entered in "
                "(a generator resumed elsewhere?); closing its handle anyway"
            )
            return live[0]
        if live:
            warn(
                f"{type(self).__name__}: a block was exited in another context, and this session is active in "
                f"{len(live)} places; none was closed, since another block still holds each"
            )
        return None

    def _leave(self, frame: _Frame, exc: BaseException | None) -> _OpenState | None:
        """Mark ``frame`` exited (once) and take it off this context's stack; the state to close, if the
        last user left."""
        with self._entered_lock:
            if frame.exited:
                return None
            frame.exited = True
            with suppress(ValueError):
                self._entered.remove(frame)
        frames = _ACTIVE.get()
        if frame in frames:
            index = len(frames) - 1 - frames[::-1].index(frame)
            _ACTIVE.set(frames[:index] + frames[index + 1 :])
        closing = frame.state.leave(frame.owner, _failure(exc))
        if closing is False:
            return None
        frame.state.outcome = closing if isinstance(closing, BaseException) else None  # what to close with
        return frame.state

    def _close_state(self, state: _OpenState, *, raised: bool) -> None:
        """Close the handle the last user left, as failed when the block (or the opener's) failed.

        While the block's own exception propagates, a failure of closing never replaces it (with
        ``on_error="raise"`` nothing raises; a warning turned into an error by a filter might).
        """
        if not raised:
            self._finish(state, state.outcome)
            return
        with suppress(Exception):
            self._finish(state, state.outcome)

    # ------------------------------------------------------------------ internals
    def _effective_mode(self) -> str:
        override = os.environ.get(MODE_ENV_VAR, "").strip().lower()
        if override and override not in MODES:
            # A typo in a process-wide variable must not fail every task: say so, use the code's mode.
            choices = ", ".join(repr(choice) for choice in MODES)
            warn(
                f"{MODE_ENV_VAR}={override!r} is not a mode (use one of {choices}); "
                f"{type(self).__name__} uses its own mode={self.mode!r}"
            )
            override = ""
        # The variable switches a whole process, but never turns on a session its code disabled.
        if override and self.mode != "disabled":
            return override
        if self.mode == "auto":  # the backend's own variable (WANDB_MODE...) decides what code left open
            backend = self._safe_backend_setting(self._backend_mode)
            return backend if backend in ("online", "offline", "disabled") else "auto"
        return self.mode

    def _backend_mode(self) -> str | None:
        """The mode the backend's own environment asks for (``WANDB_MODE=offline`` -> ``"offline"``):
        one of ``"online"``, ``"offline"``, ``"disabled"``, or None. Applies to sessions left at
        ``mode="auto"``, when ``FLYTE_CTX_TRACKING_MODE`` is not set."""
        return None

    def _backend_directory(self) -> str | None:
        """Where the backend's own environment puts its local data (``WANDB_DIR``...), or None. Used
        when the session has no ``directory=`` and ``FLYTE_CTX_TRACKING_DIR`` is not set."""
        return None

    def _safe_backend_setting(self, read: Callable[[], str | None]) -> str | None:
        try:
            value = read()
        except Exception:  # an unreadable backend config is no setting
            return None
        return value.strip() if isinstance(value, str) and value.strip() else None

    def _default_directory(self) -> Path:
        """``directory=``, else ``$FLYTE_CTX_TRACKING_DIR/<kind>``, else the backend's own variable,
        else ``./.flyte-ctx-tracking/<kind>``."""
        if self.directory is not None:
            return self.directory
        if not os.environ.get(TRACKING_DIR_ENV_VAR):
            backend = self._safe_backend_setting(self._backend_directory)
            if backend is not None:
                return Path(backend)
        return tracking_root() / self.kind

    def _require_backend(self) -> None:
        if importlib.util.find_spec(self.backend_module) is None:
            install = (
                f"install the package's {self.extra!r} extra (pip install -e '.[{self.extra}]' in a checkout, "
                f"or 'flyte-ctx-tracking[{self.extra}]' from a wheel)"
                if self.extra
                else f"install {self.backend_module}"
            )
            raise ImportError(
                f"{type(self).__name__} needs the {self.backend_module!r} package, which is not installed: {install}"
            )

    def _data_directory(self) -> Path:
        directory = self._default_directory()
        directory.mkdir(parents=True, exist_ok=True)
        return directory.absolute()

    def _has_ambient_credentials(self) -> bool:
        try:
            return self._ambient_credentials()
        except Exception:  # an unreadable saved login is no login
            return False

    def _open_state(self, origin: _Origin | None) -> _OpenState:
        """Decide the plan and open the backend (safe to run off the event loop)."""
        token = _ORIGIN.set(origin)
        try:
            session = self._with_defaults()
            state = session._open_with_fallback(origin)
            if session is not self:
                state.session = session
            return state
        finally:
            _ORIGIN.reset(token)

    def _with_defaults(self: SessionT) -> SessionT:
        """This session, or a copy of it with the workflow's defaults where it has no value of its own
        (:mod:`._defaults`): read at each open, since decorators are built before any default is set."""
        if not self.tracks_runs:
            return self
        defaults, problems = current_defaults()
        for problem in problems:  # a launch plan's typo reaches every session of every task
            _warn_once(("defaults", problem), f"{type(self).__name__}: {problem}", "later ones")
        if defaults == TrackingDefaults():
            return self
        updates: dict[str, Any] = {}
        if self.mode == "auto" and defaults.mode is not None:
            updates["mode"] = defaults.mode
        if self.run_mode is None and defaults.run_mode is not None:
            updates["run_mode"] = defaults.run_mode
            updates["_run_mode_defaulted"] = True
        if self.rank_scope is None and defaults.rank_scope is not None:
            updates["rank_scope"] = defaults.rank_scope
        try:
            updates.update(self._backend_defaults(defaults))
        except Exception as error:  # a backend's mapping must not fail the task: its own values still hold
            what = "could not apply the workflow's project, entity or tags; it opens with its own"
            self._backend_failure(what, error)
        return self._replace(**updates) if updates else self

    def _backend_defaults(self, defaults: TrackingDefaults) -> dict[str, Any]:
        """The attributes the workflow's ``project``, ``entity`` and ``tags`` set on this session: only
        where the session has no value of its own; tags after its own. None by default."""
        return {}

    def _open_with_fallback(self, origin: _Origin | None) -> _OpenState:
        mode = self._effective_mode()
        if mode == "disabled":
            return _OpenState(self._inactive_handle(), None, origin)
        self._require_backend()
        context = execution_context()
        api_key: str | None = None
        fallback: str | None = None
        if self.tracks_runs:
            try:
                api_key = resolve_secret(self.secret)
            except Exception as error:
                self._backend_failure(f"could not read the secret {describe_secret(self.secret)}", error)
            if mode == "auto":
                mode = "online" if api_key or self._has_ambient_credentials() else "offline"
                if mode == "offline":
                    source = (
                        f"{describe_secret(self.secret)} is not set"
                        if self.secret is not None
                        else f"no secret= given, and {self.credential_sources}"
                    )
                    fallback = f"no {self.credential_name} was found ({source})"
        else:
            mode = "on"
        function = origin.function if origin is not None else None
        sharing, run_id = self._decide_sharing(context, mode, function)
        if not sharing.opens:
            # The scope's rank 0 reports for it; the other ranks run their code untracked.
            return _OpenState(None, None, origin)
        try:
            directory = self._data_directory()
        except Exception as error:  # an unwritable FLYTE_CTX_TRACKING_DIR or working directory
            if not self.works_without_directory:
                self._backend_failure("could not create its data directory; the block runs untracked", error)
                return _OpenState(self._inactive_handle(), None, origin)
            # A data gate must still judge the data: only the saving degrades.
            self._backend_failure("could not create its data directory; nothing will be saved", error)
            directory = self._default_directory().absolute()
        keys = (api_key, *self._safe_known_secrets())
        secrets = tuple(dict.fromkeys(form for key in keys if key for form in self._secret_forms(key)))
        plan = OpenPlan(
            mode=mode,
            context=context,
            directory=directory,
            run_id=run_id,
            group=context.group,
            api_key=api_key,
            secrets=secrets,
            fallback_reason=fallback,
            source_file=origin.filename if origin is not None and os.path.isfile(origin.filename) else None,
            function=function,
            copy_to=_preserve.copy_destination(self.offline_copy, context, self.kind, by_default=self.tracks_runs),
            sharing=sharing,
        )
        if plan.mode != "online":
            self._quiet_telemetry()
        try:
            handle = self._open_within_deadline(plan) if plan.mode == "online" else self._open(plan)
        except Exception as error:
            if plan.mode != "online" or isinstance(error, SessionUnavailable):
                self._backend_failure(f"could not start {self.display_name}; the block runs untracked", error, secrets)
                return _OpenState(self._inactive_handle(), None, origin)
            if self.on_error == "raise":
                self._backend_failure(f"could not start {self.display_name} online", error, secrets)
            # One warning in all, the offline one, says why going online failed.
            reason = f"going online failed ({self._describe_failure(error, secrets)})"
            sharing, run_id = self._decide_sharing(context, "offline", function)
            plan = replace(
                plan,
                mode="offline",
                fallback_reason=reason,
                after_online_failure=True,
                sharing=sharing,
                run_id=run_id,
            )
            self._quiet_telemetry()
            try:
                handle = self._open(plan)
            except Exception as offline_error:
                self._backend_failure(f"could not start {self.display_name} offline either", offline_error, secrets)
                return _OpenState(self._inactive_handle(), None, origin)
        try:
            if plan.fallback_reason is not None:
                self._warn_offline(handle, plan)
        except BaseException:
            # A warning turned into an error by the user's filters: no run is left open behind.
            with suppress(Exception):
                self._close(handle, plan, None)
            raise
        return _OpenState(handle, plan, origin)

    def _decide_sharing(self, context: ExecutionContext, mode: str, function: str | None) -> tuple[Sharing, str | None]:
        """Which run this writer writes to in ``mode`` (:mod:`._sharing`), and its identity; a run mode
        the backend cannot do there gets one warning per process and falls back to a new run."""
        if not self.tracks_runs:
            return Sharing(), context.run_identity()
        sharing, run_id = decide_sharing(
            context,
            requested=self.run_mode or "auto",
            rank_scope=self.rank_scope or "global",
            auto=self.auto_run_mode,
            supported=self.run_modes.get(mode, ("new",)),
            function=function,
        )
        if sharing.fallback is None:
            return sharing, run_id
        wanted = self.auto_run_mode if sharing.requested == "auto" else sharing.requested
        # A mode the backend has elsewhere (shared online only) differs from one it never has (nested
        # asked of Comet by a workflow default): the warning must not suggest going online would help.
        elsewhere = any(wanted in modes for modes in self.run_modes.values())
        cannot = f"cannot do run_mode={wanted!r} {mode}" if elsewhere else f"has no run_mode={wanted!r}"
        if self._run_mode_defaulted:
            cannot += " (the workflow's default: tracking_defaults or FLYTE_CTX_TRACKING_RUN_MODE)"
        message = f"{type(self).__name__}: {self.display_name} {cannot}, so it opens a run of its own instead"
        message += " (run_mode='new')"
        if wanted == "shared":
            message += f"; every writer keeps one, and they are found together by {sharing.shared_id!r}"
        if mode == "offline" and elsewhere:
            message += " (online it can)"
        message += ". See docs/run-sharing.md."
        if sharing.requested == "auto":
            # "auto" is the backend's choice where it runs: a new run offline is that choice, not a failure.
            _LOG.info("%s", message)
            return sharing, run_id
        # Said once per backend, mode and where: a mode the backend never has is the same news online and offline.
        _warn_once(("run_mode", self.kind, wanted, mode if elsewhere else "anywhere"), message, "later ones")
        return sharing, run_id

    def _quiet_telemetry(self) -> None:
        for name, value in self.telemetry_off.items():
            os.environ.setdefault(name, value)

    def _online_deadline(self) -> float:
        if self.online_timeout is not None:
            return self.online_timeout
        configured = os.environ.get(ONLINE_TIMEOUT_ENV_VAR, "").strip()
        if configured:
            try:
                return _check_timeout(ONLINE_TIMEOUT_ENV_VAR, float(configured))
            except ValueError:  # a typo in a process-wide variable must not fail every task
                warn(
                    f"{ONLINE_TIMEOUT_ENV_VAR}={configured!r} is not a positive number of seconds; "
                    f"{type(self).__name__} uses {DEFAULT_ONLINE_TIMEOUT:g} s"
                )
        return DEFAULT_ONLINE_TIMEOUT

    def _open_within_deadline(self, plan: OpenPlan) -> HandleT:
        """:meth:`_open` online, bounded: a client that never returns (a server that accepts and never
        answers) is abandoned after the deadline, and closes whatever it opens late in its own thread."""
        deadline = self._online_deadline()
        plan = replace(plan, online_timeout=deadline)
        outcome: list[Any] = []
        finished = threading.Event()
        abandoned = threading.Event()
        lock = threading.Lock()

        def attempt() -> None:
            try:
                outcome.append(self._open(plan))
            except BaseException as error:
                outcome.append(error)
            with lock:
                finished.set()
                late = abandoned.is_set()
            if late and outcome and not isinstance(outcome[0], BaseException):
                with suppress(Exception):  # recorded as failed: the block never ran in this run
                    self._close(outcome[0], plan, OnlineTimeout("abandoned: going online took too long"))

        thread = threading.Thread(
            target=contextvars.copy_context().run, args=(attempt,), name=f"{self.kind}-online-open", daemon=True
        )
        thread.start()
        try:
            finished.wait(deadline)
        except BaseException:  # Ctrl-C while waiting: the attempt is abandoned, and closes what it opens
            with lock:
                abandoned.set()
            raise
        with lock:
            if not finished.is_set():
                abandoned.set()
                raise OnlineTimeout(f"going online did not finish within {deadline:g} s")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return cast(HandleT, result)

    def _publish(self, state: _OpenState) -> None:
        """Enter :meth:`_handle_scope` in the caller's context; a failure follows ``on_error`` (the handle
        itself still works). Nothing after the handle opened may leave it open behind. From here on, a
        termination signal closes the handle as failed."""
        if state.session is not None and state.session is not self:
            return state.session._publish(state)
        if state.handle is None or state.plan is None:
            return
        _termination.track(id(state), functools.partial(self._close_now, state))
        token = _ORIGIN.set(state.origin)
        try:
            scope = self._handle_scope(state.handle, state.plan)
            if scope is not None:
                scope.__enter__()
            state.scope = scope
        except Exception as error:
            try:
                self._backend_failure(f"could not publish the {self.display_name} handle", error, state.plan.secrets)
            except BaseException:
                with suppress(Exception):
                    self._close_now(state, None)
                raise
        except BaseException:
            with suppress(Exception):
                self._close_now(state, None)
            raise
        finally:
            _ORIGIN.reset(token)

    def _unpublish(self, state: _OpenState) -> None:
        """Exit :meth:`_handle_scope` (in the caller's context); a failure only warns."""
        if state.session is not None and state.session is not self:
            return state.session._unpublish(state)
        scope, state.scope = state.scope, None
        if scope is None or state.plan is None:
            return
        token = _ORIGIN.set(state.origin)
        try:
            scope.__exit__(None, None, None)
        except Exception as error:
            what = f"could not unpublish the {self.display_name} handle"
            self._backend_failure(what, error, state.plan.secrets, may_raise=False)
        finally:
            _ORIGIN.reset(token)

    def _finish(self, state: _OpenState, error: BaseException | None) -> None:
        """Close the handle, add its decks and judge the block (safe to run off the event loop), once."""
        if state.session is not None and state.session is not self:
            return state.session._finish(state, error)
        if state.handle is None or state.plan is None or not state.claim_finish():
            return
        token = _ORIGIN.set(state.origin)
        try:
            self._finish_handle(state.handle, state.plan, error)
        finally:
            _ORIGIN.reset(token)
            _termination.forget(id(state))

    def _close_now(self, state: _OpenState, error: BaseException | None) -> None:
        """Close the handle at once, without deck or verdict: the process is being terminated (``error``
        says so), or publishing the handle failed."""
        if state.session is not None and state.session is not self:
            return state.session._close_now(state, error)
        if state.handle is None or state.plan is None or not state.claim_finish():
            return
        try:
            self._close(state.handle, state.plan, error)
            self._copy_out(state.handle, state.plan, error)  # an evicted pod's data above all
        finally:
            _termination.forget(id(state))

    def _copy_out(self, handle: HandleT, plan: OpenPlan, error: BaseException | None) -> bool:
        """Copy the closed handle's local data to ``plan.copy_to``, bounded in time; True when copied.
        A failure follows ``on_error`` (raised only when the block succeeded); the local data stays."""
        if plan.copy_to is None:
            return False
        try:
            items = self._offline_data(handle, plan)
            if not items:
                return False
            written = _preserve.copy_out(items, plan.copy_to, _preserve.copy_timeout())
        except Exception as copy_error:
            what = f"could not copy its data to {plan.copy_to} (it stays in {plan.directory})"
            self._backend_failure(what, copy_error, plan.secrets, may_raise=error is None)
            return False
        _LOG.info("%s: copied %s", type(self).__name__, ", ".join(written))
        return True

    def _finish_handle(self, handle: HandleT, plan: OpenPlan, error: BaseException | None) -> None:
        try:
            self._close(handle, plan, error)
        except Exception as close_error:
            # A close failure is only raised when the block succeeded: the user's own exception wins.
            what = f"could not close {self.display_name} cleanly"
            self._backend_failure(what, close_error, plan.secrets, may_raise=error is None)
        if self._copy_out(handle, plan, error):
            plan = replace(plan, copied=True)
        if self.deck:
            try:
                deck = self._deck(handle, plan, error) if _flyte.decks_enabled() else None
                for title, html in [deck] if isinstance(deck, tuple) else deck or ():
                    _flyte.add_deck(title, html)
            except Exception as deck_error:
                what = f"could not write the {self.display_name} deck"
                self._backend_failure(what, deck_error, plan.secrets, may_raise=error is None)
        if error is None:
            self._verdict(handle, plan)

    def _backend_failure(
        self, what: str, error: BaseException, secrets: tuple[str, ...] = (), *, may_raise: bool = True
    ) -> None:
        """Apply ``on_error`` to a failure of the backend (never to the user's own exception).

        ``secret`` is scrubbed from the message: backend errors often echo the key they were given.
        """
        message = f"{type(self).__name__}: {what}: {self._describe_failure(error, secrets)}"
        if self.on_error == "raise" and may_raise:
            raise TrackingError(message) from error
        warn(message)

    @staticmethod
    def _describe_failure(error: BaseException, secrets: tuple[str, ...]) -> str:
        """``Type: message`` of a backend's error, with the keys taken out of it and its whole chain
        (``TrackingError`` keeps the error as its cause, and Python prints the chain)."""
        if secrets:
            scrub_exception_chain(error, *secrets)
        return redact(describe_exception(error), *secrets)

    def _warn_offline(self, handle: HandleT, plan: OpenPlan) -> None:
        """One warning per fallback; running offline for want of a key (a map task's every element, a
        test suite) is said once per process and backend, then counted in the log."""
        if plan.after_online_failure:
            warn(self._offline_message(handle, plan))
            return
        _warn_once(("offline", self.kind), lambda: self._offline_message(handle, plan), "later offline runs")

    def _offline_message(self, handle: HandleT, plan: OpenPlan) -> str:
        """Why the run is offline, where its data is, and how to upload it."""
        try:
            info = self._run_info(handle, plan, None) if isinstance(self, TrackingSession) else None
        except Exception:  # the warning goes out without the path rather than not at all
            info = None
        where = f" Data is in {info.local_path}." if info is not None and info.local_path else ""
        sync = f" Upload it later with: {info.sync_command}" if info is not None and info.sync_command else ""
        if plan.copy_to is not None:
            sync += f" When the run closes it is copied to {plan.copy_to} (upload from there: flyte-ctx-tracking sync)."
        return f"{type(self).__name__}: {plan.fallback_reason}, so {self.display_name} runs offline.{where}{sync}"


def _short_repr(value: Any) -> str:
    """A repr for the session's own repr: a value's type for large objects (a DataFrame reference)."""
    if value is None or isinstance(value, (str, int, float, bool, Path)):
        return repr(value)
    if isinstance(value, (list, tuple)) and all(isinstance(item, (str, int, float, bool)) for item in value):
        return repr(value)
    return type(value).__name__


class NullRun:
    """The handle of a tracking session that records nothing (disabled, or the backend failed to start).

    Every call, attribute, item and assignment is accepted and does nothing, so ``run.log(...)``,
    ``run["metrics/loss"].append(...)`` or ``experiment.log_metric(...)`` keep the user's code running
    exactly as the tracker would. It is falsy: ``if run:`` tells whether anything is recorded.
    """

    def __init__(self, backend: str, reason: str) -> None:
        self._backend = backend
        self._reason = reason

    def __repr__(self) -> str:
        return f"<NullRun of {self._backend}: {self._reason}; nothing is recorded>"

    def __bool__(self) -> bool:
        return False

    def __getattr__(self, name: str) -> NullRun:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> NullRun:
        return self

    def __getitem__(self, key: Any) -> NullRun:
        return self

    def __setitem__(self, key: Any, value: Any) -> None:
        return None

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __enter__(self) -> NullRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class TrackingSession(Session[HandleT]):
    """A session of an experiment tracker: online and offline modes, rank 0 by default, a run deck."""

    tracks_runs: ClassVar[bool] = True
    shared_options: ClassVar[tuple[str, ...]] = (
        "mode",
        "on_error",
        "secret",
        "directory",
        "all_ranks",
        "online_timeout",
        "offline_copy",
        "run_mode",
        "rank_scope",
    )

    def _inactive_handle(self) -> HandleT | None:
        # Not None: the block's `run.log(...)` must keep running when tracking is off or failed.
        return cast(HandleT, NullRun(self.display_name, "tracking is disabled or could not start"))

    def _run_info(self, handle: HandleT, plan: OpenPlan, error: BaseException | None) -> RunInfo:
        """Describe the run for the deck and the offline warning."""
        raise NotImplementedError

    def _log_metrics(self, handle: HandleT, metrics: Mapping[str, float | int]) -> None:
        """Log flat ``{name: number}`` metrics to the run (used by :func:`log_to_active_trackers`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ offline runs (flyte-ctx-tracking sync)
    @classmethod
    def _find_offline(cls, root: Path) -> list[OfflineRun]:
        """This backend's offline runs under ``root`` (a data directory, or a copy prefix's download),
        in the order they should be uploaded. None by default: the backend has nothing to sync."""
        return []

    def _upload_target(self, key: str | None, options: Mapping[str, str]) -> UploadTarget | str:
        """Where uploads go and as whom, or why they cannot (said once, before any network call).

        ``key`` is the one a key file gave; without it, the backend's own (its variable, saved login).
        """
        keys = (key,) if key else self._safe_known_secrets()
        if not keys:
            return f"no {self.credential_name} ({self.credential_sources}; or pass --key-file {self.kind}=PATH)"
        return UploadTarget(key=keys[0], options=options)

    def _upload_offline(self, run: OfflineRun, target: UploadTarget, progress: Progress) -> str | None:
        """Upload one offline run with the backend's own client; return its URL if known. Raise on failure."""
        raise NotImplementedError(f"{self.display_name} cannot upload offline runs")

    def _deck(self, handle: HandleT, plan: OpenPlan, error: BaseException | None) -> tuple[str, str] | None:
        from .decks.run_card import run_card_html

        info = self._run_info(handle, plan, error)
        if plan.copied:
            info = replace(info, copied_to=plan.copy_to)
        if info.sharing is None:
            info = replace(info, sharing=sharing_note(plan.sharing))
        # Several runs in one task are told apart by name; numbering is the last resort (add_deck).
        title = f"{info.backend}: {info.name}" if info.name else info.backend
        return title, run_card_html(info)
