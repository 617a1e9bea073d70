"""Neptune: ``neptune_session`` (a code block) and ``neptune_init_run`` (a task decorator).

A session opens a ``neptune`` 1.x Run (``neptune.init_run``) with the Flyte execution's metadata
under ``flyte/``, makes it visible as ``current_run("neptune")`` and, as flytekitplugins-neptune
does, as ``flytekit.current_context().neptune_run``, then stops it when the block ends: marked
``sys/failed`` with what failed when the block raised. Offline data goes under
``$FLYTE_CTX_TRACKING_DIR/neptune/.neptune`` and is uploaded later with ``neptune sync``.

Run modes: ``new`` (a run per task or block, per worker or rank with their scopes) and, online,
``shared``: every writer opens the run whose ``custom_run_id`` the execution derives, Neptune's own
way of logging from several processes. Offline, ``neptune sync`` drops ``custom_run_id`` and would
make a run of each writer anyway, so ``shared`` falls back to a run per writer (the core warns).

``neptune`` itself is imported only when a session opens.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
import threading
import traceback
from collections.abc import Hashable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .. import _flyte
from .._decorator import SessionDecorator
from .._defaults import TrackingDefaults
from .._fields import flyte_fields, writer_prefix
from .._offline import OfflineRun, Progress, UploadTarget
from .._secrets import SecretSpec, redact
from .._session import OpenPlan, RunInfo, TrackingSession, exception_message, warn
from .._validate import check_str, check_str_list, check_url, shorten_id

__all__ = ["NeptuneSession", "_neptune_init_run_class", "neptune_init_run", "neptune_session"]

if TYPE_CHECKING:
    from neptune import Run

DEFAULT_HOST = "https://app.neptune.ai"
API_TOKEN_ENV_VAR = "NEPTUNE_API_TOKEN"
CUSTOM_RUN_ID_ENV_VAR = "NEPTUNE_CUSTOM_RUN_ID"
RAISE_ON_DISK_ISSUE_ENV_VAR = "NEPTUNE_RAISE_ERROR_ON_DISK_USAGE_EXCEEDED"
DATA_DIRECTORY_ENV_VAR = "NEPTUNE_DATA_DIRECTORY"
NEPTUNE_DATA_FOLDER = ".neptune"  # `neptune sync --path P` looks for P/.neptune
FLYTEKIT_ATTR = "NEPTUNE_RUN"  # read back as `flytekit.current_context().neptune_run`
LINK_TYPE = "neptune-run-id"
SHARED_LINK_TYPE = "neptune-execution"
"""The console link of shared runs: the runs whose ``flyte/name`` is the execution (docs/neptune.md)."""
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
_DATA_DIRECTORY_TURN = threading.Condition()
_DATA_DIRECTORY_USERS: dict[str, Any] = {}  # "path" being set, "count" of opens using it, "previous" value
_TURN_WAIT = 60.0
"""Seconds an open waits for another one's turn at ``NEPTUNE_DATA_DIRECTORY`` (one that hangs is abandoned)."""


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


def _inner_api_key(token: str) -> tuple[str, ...]:
    """The key inside a Neptune API token (base64 of JSON with ``api_key``): servers echo it alone."""
    try:
        decoded = json.loads(base64.b64decode(token + "=" * (-len(token) % 4)))
        key = decoded.get("api_key") if isinstance(decoded, dict) else None
    except (ValueError, TypeError):
        return ()
    return (key,) if isinstance(key, str) and key else ()


def derived_custom_run_id(plan: OpenPlan) -> str | None:
    """The ``custom_run_id`` the session derives when none is given.

    A shared run's: the execution's shared identity (``{execution}``, or ``{execution}-worker<N>``
    per worker), so that every task and rank of the execution opens the one run. A new run's in a
    pod: ``{execution}-{node}[-{map index}]-{attempt}``, then ``-worker<N>`` or ``-rank<N>`` for a
    worker's or rank's run. It leaves out the replica suffix of the pod name and keeps the attempt,
    so a retry opens a run of its own instead of resuming the failed one (retries share
    ``flyte/group``). Longer than Neptune's 36 characters, it keeps a readable head and a hash of
    the whole. ``None`` for a new local run: Neptune creates a fresh one.
    """
    if plan.sharing.run_mode == "shared":
        return shorten_id(plan.run_id, CUSTOM_RUN_ID_MAX_LENGTH) if plan.run_id else None
    if plan.group is None:
        return None
    return shorten_id(f"{plan.group}-{plan.context.attempt}{plan.sharing.suffix}", CUSTOM_RUN_ID_MAX_LENGTH)


@contextmanager
def _data_directory(path: Path, wait: float) -> Iterator[None]:
    """``NEPTUNE_DATA_DIRECTORY`` set to ``path`` for the duration of an open.

    Neptune reads the variable while it opens a run, so opens in threads that want different folders
    take turns, while opens into the same folder (the usual case) share the setting and never wait
    for each other: an online open abandoned at its deadline (Neptune fetches its API spec with no
    timeout) never holds up the offline retry. A turn is waited for at most ``wait`` seconds.
    """
    with _DATA_DIRECTORY_TURN:
        _DATA_DIRECTORY_TURN.wait_for(lambda: _DATA_DIRECTORY_USERS.get("path", path) == path, timeout=wait)
        if _DATA_DIRECTORY_USERS.get("count", 0) == 0:
            _DATA_DIRECTORY_USERS["previous"] = os.environ.get(DATA_DIRECTORY_ENV_VAR)
        _DATA_DIRECTORY_USERS["path"] = path
        _DATA_DIRECTORY_USERS["count"] = _DATA_DIRECTORY_USERS.get("count", 0) + 1
        os.environ[DATA_DIRECTORY_ENV_VAR] = str(path)
    try:
        yield
    finally:
        with _DATA_DIRECTORY_TURN:
            _DATA_DIRECTORY_USERS["count"] -= 1
            if _DATA_DIRECTORY_USERS["count"] == 0:
                previous = _DATA_DIRECTORY_USERS.pop("previous", None)
                _DATA_DIRECTORY_USERS.pop("path", None)
                if previous is None:
                    os.environ.pop(DATA_DIRECTORY_ENV_VAR, None)
                else:
                    os.environ[DATA_DIRECTORY_ENV_VAR] = previous
                _DATA_DIRECTORY_TURN.notify_all()


class NeptuneSession(
    TrackingSession["Run"], kind="neptune", display_name="Neptune", backend="neptune", extra="neptune"
):
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
        **init_run_kwargs: the shared options below (offline and async data go to
            ``<directory>/.neptune``; ``run_mode="shared"`` makes every task and rank log into one
            run online, through a shared ``custom_run_id``), and what goes to ``neptune.init_run``
            (``tags``, ``name``, ``description``, ``custom_run_id``, ``with_id``,
            ``capture_hardware_metrics``, ...).

    Raises:
        ValueError, TypeError: right away, for arguments Neptune would reject.
    """

    credential_name: ClassVar[str] = "API token"
    credential_sources: ClassVar[str] = "NEPTUNE_API_TOKEN is not set"
    # Several writers share a run through its custom_run_id, which only a server resolves: offline
    # runs lose it on `neptune sync`, and each becomes a run of its own.
    run_modes: ClassVar[Mapping[str, tuple[str, ...]]] = {"online": ("new", "shared"), "offline": ("new",)}
    project: str | None
    host: str

    def __init__(
        self,
        project: str | None = None,
        secret: SecretSpec = None,
        host: str = DEFAULT_HOST,
        **init_run_kwargs: Any,
    ) -> None:
        init_run_kwargs = self._take_options(init_run_kwargs, secret=secret)
        _validate(project, host, init_run_kwargs)
        self._keep(locals())
        self.init_run_kwargs: dict[str, Any] = dict(init_run_kwargs)

    def _reuse_key(self) -> Hashable:
        kwargs = self.init_run_kwargs
        # An explicit name is a different run too: a nested `name="eval"` must not log into "train".
        return (self.project, self.host, kwargs.get("with_id"), kwargs.get("custom_run_id"), kwargs.get("name"))

    def _backend_defaults(self, defaults: TrackingDefaults) -> dict[str, Any]:
        """The workflow's project where none is given (over ``NEPTUNE_PROJECT``): Neptune's
        ``workspace/project``, or the entity then the project when the project names no workspace;
        its tags after the session's own."""
        updates: dict[str, Any] = {}
        if self.project is None and defaults.project is not None:
            project: str | None = defaults.project
            if "/" not in defaults.project:
                project = f"{defaults.entity}/{defaults.project}" if defaults.entity else None
            if project is None or not _PROJECT.match(project):
                warn(
                    f"{type(self).__name__}: the workflow's project {defaults.project!r} is not a Neptune project "
                    "('workspace-name/project-name'), and no entity names its workspace; it is ignored"
                )
            else:
                updates["project"] = project
        if defaults.tags:
            own = self.init_run_kwargs.get("tags") or []
            own = [own] if isinstance(own, str) else list(own)
            updates["init_run_kwargs"] = {**self.init_run_kwargs, "tags": list(dict.fromkeys([*own, *defaults.tags]))}
        return updates

    def _backend_mode(self) -> str | None:
        # NEPTUNE_MODE: "debug" keeps nothing (disabled here); "read-only" cannot log: left to the session.
        modes = {"debug": "disabled", "offline": "offline", "async": "online", "sync": "online"}
        return modes.get(os.environ.get("NEPTUNE_MODE", "").strip().lower())

    def _known_secrets(self) -> tuple[str, ...]:
        token = os.environ.get(API_TOKEN_ENV_VAR)
        return (token,) if token else ()

    def _secret_forms(self, key: str) -> tuple[str, ...]:
        return (key, *_inner_api_key(key))

    def _open(self, plan: OpenPlan) -> Run:
        # A full disk must not raise OSError in the user's `run["x"] = 1`: Neptune then warns that it
        # cannot save instead. Neptune reads the switch when it is imported; a user's own value wins.
        os.environ.setdefault(RAISE_ON_DISK_ISSUE_ENV_VAR, "False")
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
        with _data_directory(plan.directory / NEPTUNE_DATA_FOLDER, wait=_TURN_WAIT):
            run = neptune.init_run(**kwargs)
        try:
            self._write_metadata(run, plan, custom_run_id)
        except BaseException:
            run.stop()
            raise
        return run

    def _custom_run_id(self, plan: OpenPlan) -> str | None:
        kwargs = self.init_run_kwargs
        if kwargs.get("with_id"):
            return None  # the user resumes that run, whoever writes
        own = kwargs.get("custom_run_id") or os.environ.get(CUSTOM_RUN_ID_ENV_VAR, "").strip()
        if own:
            if not plan.sharing.suffix:
                return kwargs.get("custom_run_id")  # the user's, or None to let neptune read its env var
            # A worker's or rank's run of the user's id: the id, then which one.
            return shorten_id(own + plan.sharing.suffix, CUSTOM_RUN_ID_MAX_LENGTH)
        return derived_custom_run_id(plan)

    def _write_metadata(self, run: Run, plan: OpenPlan, custom_run_id: str | None) -> None:
        """The ``flyte/`` fields (:func:`flyte_fields`), with how the run was opened."""
        common: dict[str, Any] = {"flyte/execution_mode": "remote" if plan.context.is_remote else "local"}
        if custom_run_id is not None:
            common["flyte/custom_run_id"] = custom_run_id  # offline runs lose custom_run_id on `neptune sync`
        for name, value in flyte_fields(plan, common).items():
            run[name] = value

    def _handle_scope(self, handle: Run, plan: OpenPlan) -> AbstractContextManager[None]:
        return _flyte.published_in_context(FLYTEKIT_ATTR, handle)

    @classmethod
    def _find_offline(cls, root: Path) -> list[OfflineRun]:
        runs = []
        for folder in sorted(root.rglob("run__*")):
            parts = folder.name.split("__")  # `run__{uuid}__{pid}__{random}`
            if (
                folder.is_dir()
                and folder.parent.name == "offline"
                and len(parts) == 4
                and any(folder.glob("data-*.log"))
            ):
                runs.append(OfflineRun("neptune", folder, f"offline/{parts[1]}"))
        return runs

    def _upload_target(self, key: str | None, options: Mapping[str, str]) -> UploadTarget | str:
        target = super()._upload_target(key, options)
        if isinstance(target, str):
            return target
        project = options.get("project") or self.project or os.environ.get("NEPTUNE_PROJECT")
        if not project:
            return "no project (offline runs forget theirs: set NEPTUNE_PROJECT, or pass --option neptune.project=WS/P)"
        return UploadTarget(key=target.key, options={**options, "project": project})

    def _upload_offline(self, run: OfflineRun, target: UploadTarget, progress: Progress) -> str | None:
        from neptune.cli.sync import SyncRunner
        from neptune.internal.backends.hosted_neptune_backend import HostedNeptuneBackend
        from neptune.internal.credentials import Credentials

        # `neptune sync` deletes the folders it uploads: it gets a copy, and the data stays.
        with tempfile.TemporaryDirectory(prefix="flyte-ctx-tracking-neptune-") as staging:
            base = Path(staging) / NEPTUNE_DATA_FOLDER
            copy = base / "offline" / run.path.name
            shutil.copytree(run.path, copy)
            progress(0.2)
            backend = HostedNeptuneBackend(Credentials.from_token(target.key))
            SyncRunner.sync_selected(
                backend=backend, base_path=base, project_name=target.options["project"], object_names=[run.label]
            )
            if copy.exists():  # neptune only warns when a run cannot be uploaded
                raise RuntimeError(f"Neptune did not upload {run.label}: see its messages above")
        return None

    def _offline_data(self, handle: Run, plan: OpenPlan) -> list[tuple[Path, str]]:
        data_path = getattr(getattr(handle, "_op_processor", None), "data_path", None)
        if plan.mode != "offline" or data_path is None or not Path(str(data_path)).is_dir():
            return []
        folder = Path(str(data_path))
        # `neptune sync --path P` finds runs at P/.neptune/offline/run__*: the layout is kept.
        return [(folder, f"{NEPTUNE_DATA_FOLDER}/offline/{folder.name}")]

    def _close(self, handle: Run, plan: OpenPlan, error: BaseException | None) -> None:
        try:
            if error is not None:
                self._record_failure(handle, plan, error)
            elif plan.sharing.run_mode == "shared":
                handle[writer_prefix(plan) + "status"] = "succeeded"
        finally:
            handle.stop()

    def _record_failure(self, run: Run, plan: OpenPlan, error: BaseException) -> None:
        error_type = type(error)
        lines = traceback.format_exception(error_type, error, error.__traceback__)
        trace = redact("".join(lines), *plan.secrets)
        # A shared run: each writer's error under its own name (sys/failed stays set by any failure).
        prefix = writer_prefix(plan)
        if plan.sharing.run_mode == "shared":
            run[prefix + "status"] = "failed"
        run[prefix + "error/type"] = f"{error_type.__module__}.{error_type.__qualname__}"
        run[prefix + "error/message"] = redact(exception_message(error), *plan.secrets)[:_MESSAGE_LIMIT]
        run[prefix + "error/traceback"] = trace[-_TRACEBACK_LIMIT:]
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
        folder = Path(local_path).name.split("__") if local_path else []  # `run__{uuid}__{pid}__{random}`
        offline_id = folder[1][:8] if len(folder) >= 2 and folder[0] == "run" else None
        return RunInfo(
            backend=self.display_name,
            name=fields["name"] or fields["custom run id"] or (f"offline {offline_id}" if offline_id else None),
            fields=fields,
            url=url,
            local_path=local_path,
            sync_command=sync,
            failed=error is not None,
            status=f"failed with {type(error).__name__}" if error is not None else "finished",
            **_logged(data_path, plan.mode),
        )

    def _log_metrics(self, handle: Run, metrics: Mapping[str, float | int]) -> None:
        for name, value in metrics.items():
            handle[name].append(value)


_SERIES_CLEAR = frozenset({"ClearFloatLog", "ClearStringLog", "ClearImageLog"})
_TAGS = ["sys", "tags"]
# Fields that describe the run to Neptune itself, not its config; a traceback is too long for a card.
_NOT_CONFIG = ("sys/", "monitoring/", "source_code/", "flyte/error/traceback")


def _log_number(path: Path) -> int:
    match = re.search(r"(\d+)", path.stem)
    return int(match.group(1)) if match else 0


def _read_operations(folder: Path) -> tuple[dict[str, list[tuple[float, float]]], dict[str, str], list[str]]:
    """The float series, assigned fields and tags of the operations queued in ``folder``'s
    ``data-*.log`` files (one JSON ``{"obj": operation, "version": n}`` a line)."""
    entries: list[tuple[int, dict[str, Any]]] = []
    for log in sorted(folder.glob("data-*.log"), key=_log_number):
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                entries.append((int(entry.get("version", 0)), entry["obj"]))
    entries.sort(key=lambda entry: entry[0])
    series: dict[str, list[tuple[float, float]]] = {}
    fields: dict[str, str] = {}
    tags: dict[str, None] = {}
    for _, operation in entries:
        kind, path = operation.get("type", ""), operation.get("path") or []
        name = "/".join(str(part) for part in path)
        if kind == "LogFloats":
            points = series.setdefault(name, [])
            for value in operation.get("values") or ():
                step = value.get("step")
                number = value.get("value")
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    points.append(
                        (float(step) if isinstance(step, (int, float)) else float(len(points)), float(number))
                    )
        elif kind in _SERIES_CLEAR:
            series.pop(name, None)
        elif kind.startswith("Assign") and "value" in operation:
            value = operation["value"]
            fields[name] = value if isinstance(value, str) else json.dumps(value, default=str)
        elif kind == "DeleteAttribute":
            fields.pop(name, None)
        elif path == _TAGS and kind == "AddStrings":
            tags.update(dict.fromkeys(str(tag) for tag in operation.get("values") or ()))
        elif path == _TAGS and kind == "RemoveStrings":
            for tag in operation.get("values") or ():
                tags.pop(str(tag), None)
        elif path == _TAGS and kind == "ClearStringSet":
            tags.clear()
    config = {key: value for key, value in fields.items() if not key.startswith(_NOT_CONFIG)}
    # The user's series first, Neptune's hardware monitoring after them.
    ordered = sorted((key for key, points in series.items() if points), key=lambda key: key.startswith("monitoring/"))
    return {key: series[key] for key in ordered}, config, list(tags)


def _logged(data_path: object, mode: str) -> dict[str, Any]:
    """What was logged, as RunInfo fields, read from the run's operation log (offline) or from the
    operations async mode still has queued on disk (online); a note when there is none."""
    try:
        folder = Path(str(data_path)) if data_path is not None else None
        if folder is None or not folder.is_dir() or not any(folder.glob("data-*.log")):
            if mode == "online":
                return {"note": "Neptune keeps no local copy of what was uploaded online: see the run's page"}
            raise FileNotFoundError("no operation log")
        series, config, tags = _read_operations(folder)
    except Exception as error:  # the deck still shows the run
        return {"note": f"The logged values could not be read ({type(error).__name__})"}
    return {"series": series, "config": config, "tags": tags}


neptune_session = NeptuneSession
"""The public name of :class:`NeptuneSession`: ``with neptune_session(...) as handle:``."""


class neptune_init_run(SessionDecorator, session=NeptuneSession):
    """Decorate a task so each call runs in a Neptune run (flytekitplugins-neptune's parameters).

    Put it below ``@task``::

        @task(secret_requests=[NEPTUNE_SECRET])
        @neptune_init_run(project="ml-team/fraud", secret=NEPTUNE_SECRET)
        def evaluate() -> None:
            current_context().neptune_run["metrics/auc"].append(0.93)

    Takes the parameters of :func:`neptune_session` (the shared options and ``neptune.init_run``'s
    keyword arguments included). Bare ``@neptune_init_run`` works too (project from
    ``NEPTUNE_PROJECT``, token from ``NEPTUNE_API_TOKEN``).
    """

    NEPTUNE_HOST_KEY: ClassVar[str] = "host"
    NEPTUNE_PROJECT_KEY: ClassVar[str] = "project"

    session: NeptuneSession

    def get_extra_config(self) -> dict[str, str]:
        """``host``, ``project`` and ``link_type`` ``"neptune-run-id"``, as flytekitplugins-neptune returns.

        A shared run's link is ``link_type="neptune-execution"`` instead: the runs whose ``flyte/name``
        is the execution (the plugin's link finds a run by its pod name, which a shared run does not
        have). flytekit calls this where the workflow is registered: a run mode or project that only
        the pod's environment sets is not seen here.
        """
        session = self.session._with_defaults()
        config = {self.NEPTUNE_HOST_KEY: session.host}
        if session.project is not None:
            config[self.NEPTUNE_PROJECT_KEY] = session.project
        config[self.LINK_TYPE_KEY] = SHARED_LINK_TYPE if session.run_mode == "shared" else LINK_TYPE
        return config


_neptune_init_run_class = neptune_init_run
"""flytekitplugins-neptune's name for the decorator class."""
