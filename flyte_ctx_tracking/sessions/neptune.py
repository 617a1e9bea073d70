"""Neptune: ``neptune_session`` (a code block) and ``neptune_init_run`` (a task decorator).

A session opens a ``neptune`` 1.x Run (``neptune.init_run``) with the Flyte execution's metadata
under ``flyte/``, makes it visible as ``current_run("neptune")`` and, as flytekitplugins-neptune
does, as ``flytekit.current_context().neptune_run``, then stops it when the block ends: marked
``sys/failed`` with what failed when the block raised. Offline data goes under
``$FLYTE_CTX_TRACKING_DIR/neptune/.neptune`` and is uploaded later with ``neptune sync``.

``neptune`` itself is imported only when a session opens.
"""

from __future__ import annotations

import os
import re
import threading
import traceback
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .._decorator import SessionDecorator
from .._secrets import SecretSpec, describe_secret, redact
from .._session import Mode, OnError, OpenPlan, RunInfo, TrackingSession
from .._validate import check_str, check_str_list, check_url, shorten_id

if TYPE_CHECKING:
    from neptune import Run

__all__ = ["NeptuneSession", "_neptune_init_run_class", "neptune_init_run", "neptune_session"]

DEFAULT_HOST = "https://app.neptune.ai"
API_TOKEN_ENV_VAR = "NEPTUNE_API_TOKEN"
CUSTOM_RUN_ID_ENV_VAR = "NEPTUNE_CUSTOM_RUN_ID"
DATA_DIRECTORY_ENV_VAR = "NEPTUNE_DATA_DIRECTORY"
NEPTUNE_DATA_FOLDER = ".neptune"  # `neptune sync --path P` looks for P/.neptune
FLYTEKIT_ATTR = "NEPTUNE_RUN"  # read back as `flytekit.current_context().neptune_run`
LINK_TYPE = "neptune-run-id"
CUSTOM_RUN_ID_MAX_LENGTH = 36  # neptune 1.x silently ignores longer custom run ids
_MESSAGE_LIMIT = 4_000
_TRACEBACK_LIMIT = 16_000  # neptune 1.x String fields hold at most 16384 characters

# The keyword arguments `neptune.init_run` (neptune 1.x `Run`) accepts, minus those the session
# owns: `mode` (our `mode`), `project` (a parameter) and `api_token` (only through `secret`).
INIT_RUN_KWARGS: frozenset[str] = frozenset(
    {
        "with_id",
        "custom_run_id",
        "name",
        "description",
        "tags",
        "source_files",
        "capture_stdout",
        "capture_stderr",
        "capture_hardware_metrics",
        "fail_on_exception",
        "monitoring_namespace",
        "flush_period",
        "proxies",
        "capture_traceback",
        "git_ref",
        "dependencies",
        "async_lag_callback",
        "async_lag_threshold",
        "async_no_progress_callback",
        "async_no_progress_threshold",
    }
)
_PROJECT = re.compile(r"^[^/\s]+/[^/\s]+$")

# NEPTUNE_DATA_DIRECTORY is read while `init_run` builds the run's operation processor: it is set
# for that moment only, under a lock so that runs opened concurrently in threads never swap folders.
_DATA_DIRECTORY_LOCK = threading.Lock()
# Where flytekit's debug log says our context was pushed from.
_PUSHED_FROM = traceback.FrameSummary(__file__, 0, "neptune_session")


def _validate(project: object, host: object, init_run_kwargs: Mapping[str, Any]) -> None:
    """Raise ``ValueError``/``TypeError`` for arguments neptune would reject when the run opens."""
    owner = "neptune_session"
    check_str(owner, "project", project)
    if isinstance(project, str) and not _PROJECT.match(project):
        raise ValueError(
            f"{owner}: project={project!r} is not a Neptune project name; use 'workspace-name/project-name'"
        )
    check_url(owner, "host", host)
    if "api_token" in init_run_kwargs:
        raise TypeError(
            f"{owner}: api_token= is not accepted; pass secret=Secret(group=..., key=...) (or a callable) "
            "so the token never sits in your code"
        )
    unknown = sorted(set(init_run_kwargs) - INIT_RUN_KWARGS)
    if unknown:
        raise TypeError(
            f"{owner}: unexpected keyword argument(s) {', '.join(unknown)}; neptune.init_run accepts "
            f"{', '.join(sorted(INIT_RUN_KWARGS))} (mode= is the session's own: auto, online, offline, disabled)"
        )
    for name in ("with_id", "custom_run_id", "name", "description"):
        check_str(owner, name, init_run_kwargs.get(name))
    if init_run_kwargs.get("with_id") and init_run_kwargs.get("custom_run_id"):
        raise ValueError(f"{owner}: with_id and custom_run_id exclude each other; pass one of them")
    custom_run_id = init_run_kwargs.get("custom_run_id")
    if custom_run_id is not None and not 0 < len(custom_run_id) <= CUSTOM_RUN_ID_MAX_LENGTH:
        raise ValueError(
            f"{owner}: custom_run_id={custom_run_id!r} has {len(custom_run_id)} characters; "
            f"Neptune accepts 1 to {CUSTOM_RUN_ID_MAX_LENGTH}"
        )
    check_str_list(owner, "tags", init_run_kwargs.get("tags"), allow_str=True)


def derived_custom_run_id(plan: OpenPlan) -> str | None:
    """The ``custom_run_id`` of a remote run: ``{execution}-{node}[-{map index}]-{attempt}``.

    It leaves out the rank and the replica suffix of the pod name, so every rank of a distributed
    task (with ``all_ranks=True``) logs into one Neptune run, and keeps the attempt, so a retry
    opens a run of its own instead of resuming the failed one (retries share ``flyte/group``).
    Longer than Neptune's 36 characters, it keeps a readable head and a hash of the whole.
    ``None`` locally: Neptune creates a fresh run.
    """
    if plan.group is None:
        return None
    return shorten_id(f"{plan.group}-{plan.context.attempt}", CUSTOM_RUN_ID_MAX_LENGTH)


@contextmanager
def _data_directory(path: Path) -> Iterator[None]:
    """``NEPTUNE_DATA_DIRECTORY`` set to ``path`` for the duration, then restored exactly."""
    with _DATA_DIRECTORY_LOCK:
        previous = os.environ.get(DATA_DIRECTORY_ENV_VAR)
        os.environ[DATA_DIRECTORY_ENV_VAR] = str(path)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(DATA_DIRECTORY_ENV_VAR, None)
            else:
                os.environ[DATA_DIRECTORY_ENV_VAR] = previous


@contextmanager
def _published_in_flytekit(run: Run) -> Iterator[None]:
    """Make ``run`` ``flytekit.current_context().neptune_run`` for the duration.

    Pushes a flytekit context whose user-space params carry the run, as flytekitplugins-neptune
    does, with two differences: the params get their own copy of the attributes (flytekit's
    builder shares the dict, which would leave the run visible after the block), and the context
    stack is copied first and restored on exit, so asyncio tasks that share the stack's list never
    pop each other's contexts.
    """
    from flytekit.core import context_manager as fcm

    ctx = fcm.FlyteContextManager.current_context()
    state, params = ctx.execution_state, ctx.user_space_params
    if state is None or params is None:  # no flytekit parameters to extend: nothing to publish
        yield
        return
    builder = params.builder()
    builder.attrs = {**builder.attrs, FLYTEKIT_ATTR: run}
    pushed = ctx.with_execution_state(state.with_params(user_space_params=builder.build())).build()
    token = fcm.flyte_context_Var.set(list(fcm.flyte_context_Var.get()))
    fcm.FlyteContextManager.push_context(pushed, _PUSHED_FROM)  # a fixed origin: walking the stack costs
    try:
        yield
    finally:
        try:
            fcm.flyte_context_Var.reset(token)
        except ValueError:  # exited in another contextvars context: remove just our context
            stack = fcm.flyte_context_Var.get()
            fcm.flyte_context_Var.set([entry for entry in stack if entry is not pushed])


class NeptuneSession(TrackingSession["Run"]):
    """A Neptune run around a block of code: ``with neptune_session(...) as run: run["x"] = 1``.

    The block gets the real ``neptune.Run``; inside it ``current_run("neptune")`` and
    ``flytekit.current_context().neptune_run`` return it too. The run carries the Flyte execution's
    metadata under ``flyte/`` and is stopped when the block ends (``sys/failed`` and ``flyte/error/*``
    set when it raised; the exception propagates unchanged).

    Args:
        project: ``"workspace-name/project-name"``; None uses ``NEPTUNE_PROJECT`` (online only).
        secret: the API token: a flytekit ``Secret``, a callable returning it, or None to use
            ``NEPTUNE_API_TOKEN``. Without a token, ``mode="auto"`` runs offline.
        host: the Neptune app's URL, for Flyte console links (the token itself names the server).
        mode: ``"auto"``, ``"online"``, ``"offline"`` or ``"disabled"``; ``FLYTE_CTX_TRACKING_MODE``
            overrides it for a whole process.
        on_error: ``"warn"`` (Neptune failing never fails the task) or ``"raise"``.
        directory: where offline and async data go (in ``<directory>/.neptune``); default
            ``$FLYTE_CTX_TRACKING_DIR/neptune``.
        all_ranks: in distributed training every rank logs into the one run (shared
            ``custom_run_id``) instead of rank 0 only.
        **init_run_kwargs: passed to ``neptune.init_run`` (``tags``, ``name``, ``description``,
            ``custom_run_id``, ``with_id``, ``capture_hardware_metrics``, ...).

    Raises:
        ValueError, TypeError: right away, for arguments Neptune would reject.
    """

    kind: ClassVar[str] = "neptune"
    display_name: ClassVar[str] = "Neptune"
    backend_module: ClassVar[str] = "neptune"
    extra: ClassVar[str] = "neptune"

    def __init__(
        self,
        project: str | None = None,
        secret: SecretSpec = None,
        host: str = DEFAULT_HOST,
        *,
        mode: Mode = "auto",
        on_error: OnError = "warn",
        directory: str | os.PathLike[str] | None = None,
        all_ranks: bool = False,
        **init_run_kwargs: Any,
    ) -> None:
        _validate(project, host, init_run_kwargs)
        super().__init__(mode=mode, on_error=on_error, secret=secret, directory=directory, all_ranks=all_ranks)
        self.project = project
        self.host = host
        self.init_run_kwargs: dict[str, Any] = dict(init_run_kwargs)
        self.task_name: str | None = None
        """The decorated function's name, recorded as ``flyte/task/name`` when Flyte does not say."""

    def _reuse_key(self) -> Hashable:
        kwargs = self.init_run_kwargs
        # An explicit name is a different run too: a nested `name="eval"` must not log into "train".
        return (self.project, self.host, kwargs.get("with_id"), kwargs.get("custom_run_id"), kwargs.get("name"))

    def _ambient_credentials(self) -> bool:
        return bool(os.environ.get(API_TOKEN_ENV_VAR))

    def _open(self, plan: OpenPlan) -> Run:
        import neptune

        kwargs: dict[str, Any] = dict(self.init_run_kwargs)
        if "tags" in kwargs and not isinstance(kwargs["tags"], str):
            kwargs["tags"] = list(kwargs["tags"])
        custom_run_id = self._custom_run_id(plan)
        if custom_run_id is not None:
            kwargs["custom_run_id"] = custom_run_id
        if plan.mode == "online":
            kwargs["mode"] = "async"
            kwargs["project"] = self.project
            if plan.api_key is not None:
                kwargs["api_token"] = plan.api_key
        else:
            kwargs["mode"] = "offline"  # needs neither project nor token; the token stays out of reach
        with _data_directory(plan.directory / NEPTUNE_DATA_FOLDER):
            run = neptune.init_run(**kwargs)
        try:
            self._write_metadata(run, plan, custom_run_id)
        except BaseException:
            run.stop()
            raise
        return run

    def _custom_run_id(self, plan: OpenPlan) -> str | None:
        kwargs = self.init_run_kwargs
        if kwargs.get("with_id") or kwargs.get("custom_run_id") or os.environ.get(CUSTOM_RUN_ID_ENV_VAR):
            return kwargs.get("custom_run_id")  # the user's choice, or None to let neptune read its env var
        return derived_custom_run_id(plan)

    def _write_metadata(self, run: Run, plan: OpenPlan, custom_run_id: str | None) -> None:
        fields: dict[str, Any] = {}
        if custom_run_id is not None:
            fields["flyte/custom_run_id"] = custom_run_id  # offline runs lose custom_run_id on `neptune sync`
        context = plan.context
        if context.is_rank_zero:  # every rank of a distributed task logs into the one run; rank 0 describes it
            fields["flyte/execution_mode"] = "remote" if context.is_remote else "local"
            fields.update(context.flyte_metadata())
            if self.task_name and "flyte/task/name" not in fields:
                fields["flyte/task/name"] = self.task_name
            if context.is_remote:
                fields["flyte/attempt"] = context.attempt
                if plan.group is not None:
                    fields["flyte/group"] = plan.group
                if context.map_index is not None:
                    fields["flyte/map_index"] = context.map_index
            if context.is_distributed:
                fields["flyte/world_size"] = context.world_size
        for name, value in fields.items():
            run[name] = value

    def _handle_scope(self, handle: Run, plan: OpenPlan) -> AbstractContextManager[None]:
        return _published_in_flytekit(handle)

    def _close(self, handle: Run, plan: OpenPlan, error: BaseException | None) -> None:
        try:
            if error is not None:
                self._record_failure(handle, plan, error)
        finally:
            handle.stop()

    def _record_failure(self, run: Run, plan: OpenPlan, error: BaseException) -> None:
        error_type = type(error)
        lines = traceback.format_exception(error_type, error, error.__traceback__)
        trace = redact("".join(lines), plan.api_key)
        run["flyte/error/type"] = f"{error_type.__module__}.{error_type.__qualname__}"
        run["flyte/error/message"] = redact(str(error), plan.api_key)[:_MESSAGE_LIMIT]
        run["flyte/error/traceback"] = trace[-_TRACEBACK_LIMIT:]
        if self.init_run_kwargs.get("fail_on_exception", True):
            run["sys/failed"] = True

    def _run_info(self, handle: Run, plan: OpenPlan, error: BaseException | None) -> RunInfo:
        data_path = getattr(getattr(handle, "_op_processor", None), "data_path", None)
        project = self.project or os.environ.get("NEPTUNE_PROJECT")
        url: str | None = None
        sync: str | None = None
        local_path: str | None = None
        if plan.mode == "online":
            try:
                url = handle.get_url()
            except Exception:
                url = None
        else:
            local_path = str(data_path) if data_path is not None else str(plan.directory / NEPTUNE_DATA_FOLDER)
            # Offline runs forget their project: `neptune sync` must be told where they go.
            sync = f"neptune sync --path {plan.directory} --project {project or '<workspace>/<project>'}"
            parts = Path(local_path).name.split("__")  # `run__{uuid}__{pid}__{random}`
            sync += f" --object offline/{parts[1]}" if len(parts) >= 2 and parts[0] == "run" else " --offline-only"
        fields: dict[str, str | None] = {
            "project": project,
            "custom run id": self._custom_run_id(plan),
            "name": self.init_run_kwargs.get("name"),
            "mode": plan.mode,
            "Flyte execution": plan.context.execution_id,
        }
        return RunInfo(
            backend=self.display_name,
            fields=fields,
            url=url,
            local_path=local_path,
            sync_command=sync,
            failed=error is not None,
        )

    def _log_metrics(self, handle: Run, metrics: Mapping[str, float | int]) -> None:
        for name, value in metrics.items():
            handle[name].append(value)

    def __repr__(self) -> str:
        return f"NeptuneSession(project={self.project!r}, mode={self.mode!r}, secret={describe_secret(self.secret)})"


neptune_session = NeptuneSession
"""The public name of :class:`NeptuneSession`: ``with neptune_session(...) as handle:``."""


class _neptune_init_run_class(SessionDecorator):
    """The task decorator: each call of the function runs in a :func:`neptune_session`.

    Spelled as in flytekitplugins-neptune, so ``@_neptune_init_run_class(project=..., secret=...)``
    works too; prefer :func:`neptune_init_run`.
    """

    decorator_name: ClassVar[str] = "neptune_init_run"
    NEPTUNE_HOST_KEY: ClassVar[str] = "host"
    NEPTUNE_PROJECT_KEY: ClassVar[str] = "project"

    def __init__(self, task_function: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        super().__init__(task_function, **kwargs)
        if task_function is not None:
            name = f"{task_function.__module__}.{task_function.__qualname__}"
            self.neptune_session.task_name = name

    @property
    def neptune_session(self) -> NeptuneSession:
        """The session every call runs in."""
        session = self.session
        assert isinstance(session, NeptuneSession)
        return session

    def _make_session(self, **kwargs: Any) -> NeptuneSession:
        return NeptuneSession(**kwargs)

    def get_extra_config(self) -> dict[str, str]:
        """``host``, ``project`` and ``link_type`` ``"neptune-run-id"``, as flytekitplugins-neptune returns."""
        session = self.neptune_session
        config = {self.NEPTUNE_HOST_KEY: session.host}
        if session.project is not None:
            config[self.NEPTUNE_PROJECT_KEY] = session.project
        config[self.LINK_TYPE_KEY] = LINK_TYPE
        return config


def neptune_init_run(
    project: str | Callable[..., Any] | None = None,
    secret: SecretSpec = None,
    host: str = DEFAULT_HOST,
    **init_run_kwargs: Any,
) -> _neptune_init_run_class:
    """Decorate a task so each call runs in a Neptune run (flytekitplugins-neptune's parameters).

    Put it below ``@task``::

        @task(secret_requests=[NEPTUNE_SECRET])
        @neptune_init_run(project="ml-team/fraud", secret=NEPTUNE_SECRET)
        def evaluate() -> None:
            current_context().neptune_run["metrics/auc"].append(0.93)

    Takes the parameters of :func:`neptune_session` (``mode``, ``on_error``, ``directory``,
    ``all_ranks`` and ``neptune.init_run``'s keyword arguments included). Bare ``@neptune_init_run``
    works too (project from ``NEPTUNE_PROJECT``, token from ``NEPTUNE_API_TOKEN``).
    """
    if callable(project):
        return _neptune_init_run_class(project, secret=secret, host=host, **init_run_kwargs)
    return _neptune_init_run_class(project=project, secret=secret, host=host, **init_run_kwargs)
