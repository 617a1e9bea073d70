"""The session core: the one lifecycle every integration shares.

A session is a reusable, reentrant context manager (``with``, ``async with``, or a decorator).
Subclasses supply only what is specific to their backend: how to open and close a handle, what
identifies their target, and what to show in a deck. Everything else lives here, once:

* reentrancy: entering a session whose target is already active in this thread or asyncio task
  reuses that handle; only the outermost exit closes it;
* isolation: the active handles live in a ``ContextVar``, so threads and asyncio tasks never see
  each other's runs;
* the error policy: the user's exception always propagates unchanged (same object, same
  traceback) after the handle is closed as failed; a failure of the backend itself follows
  ``on_error``;
* mode (``auto``/``online``/``offline``/``disabled``, overridden by ``FLYTE_CTX_TRACKING_MODE``),
  rank awareness, the local data directory, secrets and decks.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import os
import threading
import warnings
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast, get_args

from ._context import ExecutionContext, execution_context
from ._secrets import SecretSpec, describe_secret, redact, resolve_secret, scrub_exception_chain, validate_secret
from ._validate import check_choice

__all__ = [
    "KINDS",
    "MODE_ENV_VAR",
    "TRACKING_DIR_ENV_VAR",
    "Mode",
    "NullRun",
    "OnError",
    "OpenPlan",
    "RunInfo",
    "Session",
    "SessionUnavailable",
    "TrackingError",
    "TrackingSession",
    "TrackingWarning",
    "current_run",
    "log_to_active_trackers",
    "tracking_root",
]

Mode = Literal["auto", "online", "offline", "disabled"]
OnError = Literal["warn", "raise"]
MODES: tuple[str, ...] = get_args(Mode)
ON_ERROR: tuple[str, ...] = get_args(OnError)
KINDS: tuple[str, ...] = ("wandb", "comet", "neptune", "memray", "whylogs")
MODE_ENV_VAR = "FLYTE_CTX_TRACKING_MODE"
TRACKING_DIR_ENV_VAR = "FLYTE_CTX_TRACKING_DIR"
DEFAULT_TRACKING_DIR = ".flyte-ctx-tracking"

HandleT = TypeVar("HandleT")
SessionT = TypeVar("SessionT", bound="Session[Any]")
F = TypeVar("F", bound=Callable[..., Any])


class TrackingWarning(UserWarning):
    """Warned when tracking degrades (offline fallback, a backend failure) while the task runs on."""


class TrackingError(RuntimeError):
    """Raised for a backend failure when the session was created with ``on_error="raise"``."""


class SessionUnavailable(RuntimeError):
    """Raised by a backend's ``_open`` when it cannot open at all right now (memray's one tracker per
    process is taken, Comet's one experiment per process is running): the core does not retry
    offline, it applies ``on_error`` once."""


def tracking_root() -> Path:
    """Where the library writes local data: ``$FLYTE_CTX_TRACKING_DIR``, else ``./.flyte-ctx-tracking``."""
    return Path(os.environ.get(TRACKING_DIR_ENV_VAR) or DEFAULT_TRACKING_DIR).absolute()


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
        fallback_reason: why the mode is not what was asked for, if it is not.
    """

    mode: str
    context: ExecutionContext
    directory: Path
    run_id: str | None
    group: str | None
    api_key: str | None = field(default=None, repr=False)
    fallback_reason: str | None = None
    after_online_failure: bool = False
    """True for the offline retry after opening online failed (a backend whose failed attempt
    still holds the run id uses another one)."""


@dataclass(frozen=True)
class RunInfo:
    """What a tracking session shows about its run in a deck and in the offline warning."""

    backend: str
    fields: Mapping[str, str | None]
    url: str | None = None
    local_path: str | None = None
    sync_command: str | None = None
    failed: bool = False


@dataclass(eq=False)
class _OpenState:
    """One opened handle, shared by every frame that entered it (in any thread or asyncio task)."""

    handle: Any
    plan: OpenPlan | None
    scope: AbstractContextManager[Any] | None = None
    users: int = 1
    """Frames holding the handle. The last one out closes it: an asyncio task that re-entered the
    session keeps the run open after the block that opened it ended."""
    outcome: BaseException | None = None
    """The exception the opening block ended with, if it failed."""
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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


@dataclass(frozen=True, eq=False)
class _Frame:
    key: Hashable
    state: _OpenState
    session: Session[Any]
    owner: bool


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


def current_run(kind: str | None = None) -> Any:
    """The innermost active session handle, of one backend when ``kind`` is given, else ``None``.

    Args:
        kind: one of ``"wandb"``, ``"comet"``, ``"neptune"``, ``"memray"``, ``"whylogs"``, or None
            for whichever session is innermost.
    """
    if kind is not None:
        check_choice("current_run", "kind", kind, KINDS)
    for frame in reversed(_ACTIVE.get()):
        if (kind is None or frame.session.kind == kind) and not frame.state.closed:
            return frame.state.handle
    return None


def log_to_active_trackers(metrics: Mapping[str, float | int]) -> list[str]:
    """Log ``metrics`` to the innermost active run of each tracking backend (W&B, Comet, Neptune).

    Profilers use this to connect what they measured to the run the user is tracking. A tracker
    that fails to log gets a warning; the caller never fails. Returns the kinds that were logged to.
    """
    done: list[str] = []
    for frame in reversed(_ACTIVE.get()):
        session = frame.session
        skip = frame.state.handle is None or isinstance(frame.state.handle, NullRun)
        skip = skip or frame.state.closed or session.kind in done
        if not isinstance(session, TrackingSession) or skip:
            continue
        done.append(session.kind)
        try:
            session._log_metrics(frame.state.handle, metrics)
        except Exception as error:
            warnings.warn(
                f"{type(session).__name__}: could not log {sorted(metrics)}: {type(error).__name__}: {error}",
                TrackingWarning,
                stacklevel=2,
            )
    return done


class Session(Generic[HandleT]):
    """Base of every integration: a reentrant context manager, async context manager and decorator.

    Subclasses set the class attributes and implement :meth:`_open` and :meth:`_close`; they may
    override :meth:`_reuse_key`, :meth:`_ambient_credentials` and :meth:`_deck`.
    """

    kind: ClassVar[str]
    """The name ``current_run`` knows this backend by."""
    display_name: ClassVar[str]
    """How messages and decks name the backend."""
    backend_module: ClassVar[str]
    """The module that must be importable to enter the session."""
    extra: ClassVar[str]
    """The pip extra that installs ``backend_module``."""
    tracks_runs: ClassVar[bool] = False
    """Tracking backends have online and offline modes and open runs on rank 0 only by default."""
    deck: bool = True
    """Whether the session adds its deck (when the task's decks are on); profilers take it as an argument."""

    def __init__(
        self,
        *,
        mode: Mode = "auto",
        on_error: OnError = "warn",
        secret: SecretSpec = None,
        directory: str | os.PathLike[str] | None = None,
        all_ranks: bool = False,
    ) -> None:
        owner = type(self).__name__
        check_choice(owner, "mode", mode, MODES)
        check_choice(owner, "on_error", on_error, ON_ERROR)
        validate_secret(secret, owner=owner)
        self.mode: Mode = mode
        self.on_error: OnError = on_error
        self.secret = secret
        self.directory = Path(directory) if directory is not None else None
        self.all_ranks = bool(all_ranks)
        self._key: Hashable | None = None
        self._opened: list[_Frame] = []  # frames that opened a handle, in any context: to close strays

    # ------------------------------------------------------------------ backend hooks
    def _reuse_key(self) -> Hashable:
        """What the session targets: an active session with an equal key is reused, not reopened."""
        return id(self)

    def _ambient_credentials(self) -> bool:
        """True when the backend can log in without our secret (its env var or saved login)."""
        return False

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

    def _inactive_handle(self) -> HandleT | None:
        """The handle the block gets when the session does not open (disabled, or opening failed).

        None by default; a profiler returns an object that says it did not profile, so user code
        reading its numbers after the block keeps running. It is never closed.
        """
        return None

    def _handle_scope(self, handle: HandleT, plan: OpenPlan) -> AbstractContextManager[Any] | None:
        """A context to hold open while the handle is active, or None (the default).

        The core enters it once the handle opened and exits it just before closing the handle, in
        the owner frame only (reused nested frames share it). A backend uses it to publish its
        handle somewhere else for the block's duration, such as flytekit's current context.
        """
        return None

    # ------------------------------------------------------------------ lifecycle
    @property
    def key(self) -> Hashable:
        """The reuse key, computed once: the nested (reentrant) path must stay cheap."""
        if self._key is None:
            self._key = (self.kind, self._reuse_key())
        return self._key

    def __enter__(self) -> HandleT:
        frames = _ACTIVE.get()
        key = self.key
        for frame in reversed(frames):
            if frame.key == key and frame.state.join():
                _ACTIVE.set((*frames, _Frame(key, frame.state, self, owner=False)))
                return cast(HandleT, frame.state.handle)
        state = self._start()
        opened = _Frame(key, state, self, owner=True)
        _ACTIVE.set((*_ACTIVE.get(), opened))
        self._opened.append(opened)
        return cast(HandleT, state.handle)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        frames = _ACTIVE.get()
        frame: _Frame | None = None
        for index in range(len(frames) - 1, -1, -1):
            if frames[index].session is self:
                frame = frames[index]
                _ACTIVE.set(frames[:index] + frames[index + 1 :])
                break
        if frame is None:
            frame = self._opened[-1] if self._opened else None
            if frame is None:
                return None  # never entered: nothing of ours to close
            # A generator holding the block was resumed in another thread or context: the frame
            # is not in this context's stack, but its run must still be closed.
            warnings.warn(
                f"{type(self).__name__}: the block was exited in another thread or context than it was "
                "entered in (a generator resumed elsewhere?); closing its handle anyway",
                TrackingWarning,
                stacklevel=2,
            )
        if frame.owner:
            with suppress(ValueError):
                self._opened.remove(frame)
        failure = _failure(exc)
        closing = frame.state.leave(frame.owner, failure)
        if closing is False:
            return None
        close_with = closing if isinstance(closing, BaseException) else None
        if exc is None:
            self._finish(frame.state, close_with)
        else:
            # The user's exception propagates unchanged, whatever closing raises (with
            # on_error="raise" nothing does; a warning turned into an error by a filter might).
            with suppress(Exception):
                self._finish(frame.state, close_with)
        return None

    async def __aenter__(self) -> HandleT:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        """Use the session as a decorator: every call of ``func`` runs inside it."""
        refuse_generator_function(type(self).__name__, func)
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self:
                    return await cast(Callable[..., Awaitable[Any]], func)(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return cast(F, wrapper)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, secret={describe_secret(self.secret)})"

    def _replace(self: SessionT, **attributes: Any) -> SessionT:
        """A copy of this (already validated) session with some attributes changed, such as the
        section name a decorated function gives, or a directory a task argument gives. The copy's
        reuse key is computed afresh from its own attributes."""
        clone = copy.copy(self)
        clone.__dict__.update(attributes)
        clone._key = None
        clone._opened = []
        return clone

    # ------------------------------------------------------------------ internals
    def _effective_mode(self) -> str:
        override = os.environ.get(MODE_ENV_VAR, "").strip().lower()
        if override and override not in MODES:
            # A typo in a process-wide variable must not fail every task: say so, use the code's mode.
            choices = ", ".join(repr(choice) for choice in MODES)
            warnings.warn(
                f"{MODE_ENV_VAR}={override!r} is not a mode (use one of {choices}); "
                f"{type(self).__name__} uses its own mode={self.mode!r}",
                TrackingWarning,
                stacklevel=4,
            )
            override = ""
        # The variable switches a whole process, but never turns on a session its code disabled.
        if override and self.mode != "disabled":
            return override
        return self.mode

    def _require_backend(self) -> None:
        if importlib.util.find_spec(self.backend_module) is None:
            raise ImportError(
                f"{type(self).__name__} needs the {self.backend_module!r} package, which is not installed: "
                f"pip install 'flyte-ctx-tracking[{self.extra}]'"
            )

    def _data_directory(self) -> Path:
        directory = self.directory if self.directory is not None else tracking_root() / self.kind
        directory.mkdir(parents=True, exist_ok=True)
        return directory.absolute()

    def _has_ambient_credentials(self) -> bool:
        try:
            return self._ambient_credentials()
        except Exception:  # an unreadable saved login is no login
            return False

    def _start(self) -> _OpenState:
        mode = self._effective_mode()
        if mode == "disabled":
            return _OpenState(self._inactive_handle(), None)
        self._require_backend()
        context = execution_context()
        if self.tracks_runs and context.is_distributed and not context.is_rank_zero and not self.all_ranks:
            # Rank 0 reports for everyone; the other ranks run their code untracked.
            return _OpenState(None, None)
        try:
            directory = self._data_directory()
        except Exception as error:  # an unwritable FLYTE_CTX_TRACKING_DIR or working directory
            self._backend_failure("could not create its data directory; the block runs untracked", error, None)
            return _OpenState(self._inactive_handle(), None)
        api_key: str | None = None
        fallback: str | None = None
        if self.tracks_runs:
            try:
                api_key = resolve_secret(self.secret)
            except Exception as error:
                self._backend_failure(f"could not read the secret {describe_secret(self.secret)}", error, None)
            if mode == "auto":
                mode = "online" if api_key or self._has_ambient_credentials() else "offline"
                if mode == "offline":
                    source = (
                        f"{describe_secret(self.secret)} is not set"
                        if self.secret is not None
                        else "no secret given and no login of the backend's own"
                    )
                    fallback = f"no API key was found ({source})"
        else:
            mode = "on"
        plan = OpenPlan(
            mode=mode,
            context=context,
            directory=directory,
            run_id=context.run_identity(per_rank=self.all_ranks),
            group=context.group,
            api_key=api_key,
            fallback_reason=fallback,
        )
        try:
            handle = self._open(plan)
        except Exception as error:
            if plan.mode != "online" or isinstance(error, SessionUnavailable):
                self._backend_failure(f"could not start {self.display_name}; the block runs untracked", error, api_key)
                return _OpenState(self._inactive_handle(), None)
            self._backend_failure(f"could not start {self.display_name} online; trying offline", error, api_key)
            reason = f"going online failed ({type(error).__name__})"
            plan = replace(plan, mode="offline", fallback_reason=reason, after_online_failure=True)
            try:
                handle = self._open(plan)
            except Exception as offline_error:
                self._backend_failure(f"could not start {self.display_name} offline either", offline_error, api_key)
                return _OpenState(self._inactive_handle(), None)
        try:
            if plan.fallback_reason is not None:
                self._warn_offline(handle, plan)
            return _OpenState(handle, plan, self._enter_scope(handle, plan))
        except BaseException:
            # Whatever fails after the handle opened (a warning turned into an error by the user's
            # filters, on_error="raise" while publishing it): no run is left open behind.
            with suppress(Exception):
                self._close(handle, plan, None)
            raise

    def _enter_scope(self, handle: HandleT, plan: OpenPlan) -> AbstractContextManager[Any] | None:
        """Enter :meth:`_handle_scope`; a failure follows ``on_error`` (the handle itself still works)."""
        try:
            scope = self._handle_scope(handle, plan)
            if scope is not None:
                scope.__enter__()
            return scope
        except Exception as error:
            self._backend_failure(f"could not publish the {self.display_name} handle", error, plan.api_key)
            return None

    def _finish(self, state: _OpenState, error: BaseException | None) -> None:
        if state.handle is None or state.plan is None:
            return
        plan = state.plan
        try:
            if state.scope is not None:
                try:
                    state.scope.__exit__(None, None, None)
                except Exception as scope_error:
                    what = f"could not unpublish the {self.display_name} handle"
                    self._backend_failure(what, scope_error, plan.api_key, may_raise=False)
        finally:  # the handle is closed whatever happened above
            try:
                self._close(state.handle, plan, error)
            except Exception as close_error:
                # A close failure is only raised when the block succeeded: the user's own exception wins.
                what = f"could not close {self.display_name} cleanly"
                self._backend_failure(what, close_error, plan.api_key, may_raise=error is None)
        if self.deck:
            from .decks import add_deck, decks_enabled

            try:
                deck = self._deck(state.handle, plan, error) if decks_enabled() else None
                for title, html in [deck] if isinstance(deck, tuple) else deck or ():
                    add_deck(title, html)
            except Exception as deck_error:
                what = f"could not write the {self.display_name} deck"
                self._backend_failure(what, deck_error, plan.api_key, may_raise=error is None)
        if error is None:
            self._verdict(state.handle, plan)

    def _backend_failure(self, what: str, error: BaseException, secret: str | None, *, may_raise: bool = True) -> None:
        """Apply ``on_error`` to a failure of the backend (never to the user's own exception).

        ``secret`` is scrubbed from the message: backend errors often echo the key they were given.
        """
        if secret:
            # TrackingError keeps the backend's error as its cause (and Python as its context): take
            # the key out of every exception in that chain before anyone can print it.
            scrub_exception_chain(error, secret)
        detail = redact(f"{type(error).__name__}: {error}", secret)
        message = f"{type(self).__name__}: {what}: {detail}"
        if self.on_error == "raise" and may_raise:
            raise TrackingError(message) from error
        warnings.warn(message, TrackingWarning, stacklevel=4)

    def _warn_offline(self, handle: HandleT, plan: OpenPlan) -> None:
        info = self._run_info(handle, plan, None) if isinstance(self, TrackingSession) else None
        where = f" Data is in {info.local_path}." if info is not None and info.local_path else ""
        sync = f" Upload it later with: {info.sync_command}" if info is not None and info.sync_command else ""
        warnings.warn(
            f"{type(self).__name__}: {plan.fallback_reason}, so {self.display_name} runs offline.{where}{sync}",
            TrackingWarning,
            stacklevel=4,
        )


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

    def _inactive_handle(self) -> HandleT | None:
        # Not None: the block's `run.log(...)` must keep running when tracking is off or failed.
        return cast(HandleT, NullRun(self.display_name, "tracking is disabled or could not start"))

    def _run_info(self, handle: HandleT, plan: OpenPlan, error: BaseException | None) -> RunInfo:
        """Describe the run for the deck and the offline warning."""
        raise NotImplementedError

    def _log_metrics(self, handle: HandleT, metrics: Mapping[str, float | int]) -> None:
        """Log flat ``{name: number}`` metrics to the run (used by :func:`log_to_active_trackers`)."""
        raise NotImplementedError

    def _deck(self, handle: HandleT, plan: OpenPlan, error: BaseException | None) -> tuple[str, str] | None:
        from .decks.run_card import run_card_html

        info = self._run_info(handle, plan, error)
        return info.backend, run_card_html(info)
