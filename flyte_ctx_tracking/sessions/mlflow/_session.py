"""``mlflow_session``: an MLflow run around a block, and its decorators (``mlflow_run``, ``mlflow_autolog``)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Hashable, Mapping
from contextlib import AbstractContextManager, ExitStack, suppress
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..._context import ExecutionContext
from ..._decorator import SessionDecorator
from ..._defaults import TrackingDefaults
from ..._fields import EXECUTION_WIDE
from ..._offline import OfflineRun, Progress, UploadTarget
from ..._secrets import SecretSpec, redact
from ..._session import OnlineTimeout, OpenPlan, RunInfo, TrackingSession, exception_message
from ..._sharing import shared_base
from ..._termination import Terminated
from ..._validate import check_choice, check_str, check_url
from . import _fluent, _shared, _store, _sync

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient

__all__ = ["MlflowSession", "mlflow_autolog", "mlflow_run", "mlflow_session"]

TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"
TOKEN_ENV_VAR = "MLFLOW_TRACKING_TOKEN"
PASSWORD_ENV_VAR = "MLFLOW_TRACKING_PASSWORD"
EXPERIMENT_NAME_ENV_VAR = "MLFLOW_EXPERIMENT_NAME"
LOCAL_EXPERIMENT = "local workflow"  # flytekitplugins-mlflow's experiment for local runs
WORKFLOW_ENV_VARS = ("FLYTE_INTERNAL_EXECUTION_WORKFLOW", "_F_WF")  # the workflow's name in a pod
STORE_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "artifacts"
LINK_TYPE = "mlflow-run"
SHARED_LINK_TYPE = "mlflow-shared-run"  # found by its tag, not by a pod's name: docs/mlflow.md
PARENTS = ("active", "execution", "none")
PARENT_TAG = "mlflow.parentRunId"
EXECUTION_PARENT_TAG = _shared.EXECUTION_PARENT_TAG
SHARED_TAG = _shared.SHARED_TAG
_SHARING_MODES = ("shared", "nested")
# Seconds a writer waits for the writer that claimed a shared or parent run to create it.
_CLAIM_WAIT = 10.0
ONLINE_TWIN_TAG = "flyte_ctx_tracking.online_run_id"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_FRAMEWORK = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_MESSAGE_LIMIT = 4_000
# A request of a session's own (opening, closing, reading back) against a server that fails: no
# retries, since the deadline bounds the whole open; one retry for the calls in the block, for a blip.
_OPEN_RETRIES = 0
_BLOCK_RETRIES = 1
_BACKOFF = 0.5


def _check_tags(owner: str, tags: object) -> dict[str, str] | None:
    if tags is None:
        return None
    if not isinstance(tags, Mapping) or not all(isinstance(key, str) and key for key in tags):
        raise TypeError(f"{owner}: tags={tags!r} is not accepted; pass a dict of str names to values")
    return {key: str(value) for key, value in tags.items()}


def _check_framework(owner: str, framework: object) -> None:
    if framework is None or isinstance(framework, ModuleType):
        return
    if not isinstance(framework, str) or not _FRAMEWORK.match(framework):
        raise ValueError(
            f"{owner}: framework={framework!r} is not accepted; pass an MLflow flavor's name ('sklearn', "
            "'pytorch', 'xgboost', ...), its module (mlflow.sklearn), or None for mlflow.autolog()"
        )


def _without_userinfo(uri: str) -> str:
    """A URI to show: ``https://user:pass@host`` loses its credentials."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def _tag_name(key: str) -> str:
    """``flyte/task/name`` as MLflow's dotted tag name, ``flyte.task.name``."""
    return key.replace("/", ".")


# ------------------------------------------------------------------------------ the local store

_TEMPLATE_LOCK = threading.Lock()
_template: dict[str, Path] = {}


def _template_cache() -> Path:
    """Where a user's migrated empty store is kept between processes, per MLflow version."""
    import mlflow

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flyte-ctx-tracking"
    return root / f"mlflow-{mlflow.__version__}-{STORE_FILE}"


def _empty_store_template() -> Path:
    """A migrated, empty SQLite store: creating MLflow's tables takes seconds, copying a file takes
    milliseconds. Made once per MLflow version and user (kept in the user's cache folder when it is
    writable, else once per process)."""
    with _TEMPLATE_LOCK:
        if "path" in _template:
            return _template["path"]
        with suppress(OSError):
            cached = _template_cache()
            if cached.is_file() and cached.stat().st_size > 0:
                _template["path"] = cached
                return cached
        from mlflow import MlflowClient

        path = Path(tempfile.mkdtemp(prefix="flyte-ctx-tracking-mlflow-")) / STORE_FILE
        # MLflow announces creating its tables at INFO: an implementation detail of ours here.
        announcer = logging.getLogger("mlflow.store.db.utils")
        level = announcer.level
        announcer.setLevel(logging.WARNING)
        try:
            MlflowClient(_sqlite_uri(path)).search_experiments()
        finally:
            announcer.setLevel(level)
        _template["path"] = path
        with suppress(OSError):  # a read-only home: the next process migrates again, no more
            cached = _template_cache()
            cached.parent.mkdir(parents=True, exist_ok=True)
            staged = cached.with_name(f".{cached.name}.{os.getpid()}")
            shutil.copyfile(path, staged)
            staged.replace(cached)
        return path


def local_store(directory: Path) -> Path:
    """``directory/mlflow.db``, created from the template if missing (atomically: processes sharing
    the folder never replace a store another one already logs into)."""
    path = directory / STORE_FILE
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    staged = directory / f".{STORE_FILE}.{os.getpid()}.{threading.get_ident()}"
    shutil.copyfile(_empty_store_template(), staged)
    try:
        os.link(staged, path)
    except FileExistsError:
        pass
    except OSError:  # no hard links here: an exclusive create is atomic too
        with suppress(FileExistsError), open(path, "xb") as target, open(staged, "rb") as source:
            shutil.copyfileobj(source, target)
    finally:
        staged.unlink(missing_ok=True)
    return path


def _snapshot(store: Path) -> Path:
    """A consistent copy of a SQLite store other sessions may still write (SQLite's backup API)."""
    copy = store.with_name(f".{STORE_FILE}.snapshot-{os.getpid()}")
    source = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    return copy


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except Exception as error:
        if getattr(error, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
        experiment = client.get_experiment_by_name(name)  # another task created it just now
        if experiment is None:
            raise
        return str(experiment.experiment_id)


class MlflowSession(
    TrackingSession["ActiveRun"], kind="mlflow", display_name="MLflow", backend="mlflow", extra="mlflow"
):
    """An MLflow run around a block of code: ``with mlflow_session("fraud") as run: mlflow.log_metric(...)``.

    ``run_mode="shared"`` writes into one run every task and rank of the execution shares (found by
    its ``flyte_ctx_tracking.shared_run`` tag, created by the first writer); ``"nested"`` opens a child
    of the execution's parent run; ``"new"`` and ``"auto"`` a run of its own (see ``parent``).

    The block gets MLflow's ``ActiveRun``, and MLflow's fluent API (``mlflow.log_metric``,
    ``mlflow.log_params``, ``mlflow.active_run()``) logs into it, in threads and asyncio tasks too.
    The run ends ``FINISHED``, or ``FAILED`` with the error's type and message as tags when the block
    raised (the exception propagates unchanged); ``KILLED`` when the pod was terminated.

    Without a tracking URI the run goes to a local SQLite store, ``<directory>/mlflow.db``, which
    ``mlflow ui --backend-store-uri sqlite:///<directory>/mlflow.db`` opens. With one, online; a
    server that cannot be reached gives one warning and the offline store instead, within the
    deadline, at the start and mid-block alike (the offline twin carries the run's name, parameters
    and tags, and an ``flyte_ctx_tracking.online_run_id`` tag).

    Args:
        experiment_name: the experiment; None uses ``MLFLOW_EXPERIMENT_NAME``, else the Flyte
            workflow's name in a pod and ``"local workflow"`` locally (flytekitplugins-mlflow's names).
        tracking_uri: the tracking server (``http://...``) or store; None uses
            ``mlflow.set_tracking_uri``'s or ``MLFLOW_TRACKING_URI``, and without either runs offline.
        run_name: the run's name; None: ``{execution}.{task}`` in a pod (flytekitplugins-mlflow's),
            the decorated function's name, or one MLflow makes up.
        run_id: resume this existing run instead of starting one (excludes ``run_name``).
        tags: the run's tags, added to the Flyte ones (``flyte.execution_id``, ``flyte.project``...).
        description: the run's description (MLflow's ``mlflow.note.content``).
        autolog: turn MLflow autologging on for the block only; default: when ``framework`` is given.
        framework: what to autolog: an MLflow flavor's name (``"sklearn"``), its module
            (``mlflow.sklearn``), or None for every framework (``mlflow.autolog()``).
        parent: ``"active"`` nests the run under the run active where the block starts (an outer
            session's, or ``mlflow.start_run``'s); ``"execution"`` under one parent run per Flyte
            execution, shared by its tasks across pods (found by a tag, created by the first);
            ``"none"`` makes a top-level run. It applies to ``run_mode`` ``"new"`` and ``"auto"``:
            ``run_mode="nested"`` is ``parent="execution"`` (with rank scopes) and a shared run has no
            parent, so either of them with a ``parent`` other than ``"active"`` is refused.
        secret: a token, or ``username:password``, for this run's requests only (never the process's).
        link_host: the MLflow UI's address for links, when it is not the tracking URI's.
    """

    run_modes: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "online": ("new", "shared", "nested"),
        "offline": ("new", "shared", "nested"),  # within a store; `flyte-ctx-tracking sync` joins the stores
    }
    credential_name: ClassVar[str] = "tracking URI"
    credential_sources: ClassVar[str] = "MLFLOW_TRACKING_URI is not set"
    telemetry_off: ClassVar[Mapping[str, str]] = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    experiment_name: str | None
    tracking_uri: str | None
    run_name: str | None
    run_id: str | None
    tags: dict[str, str] | None
    description: str | None
    autolog: bool | None
    framework: str | ModuleType | None
    parent: str
    link_host: str | None

    def __init__(
        self,
        experiment_name: str | None = None,
        *,
        tracking_uri: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        autolog: bool | None = None,
        framework: str | ModuleType | None = None,
        parent: str = "active",
        secret: SecretSpec = None,
        link_host: str | None = None,
        **options: Any,
    ) -> None:
        self._refuse_unknown(self._take_options(options, secret=secret))
        owner = "mlflow_session"
        for name, value in (("experiment_name", experiment_name), ("run_name", run_name)):
            check_str(owner, name, value)
        check_str(owner, "tracking_uri", tracking_uri)
        if tracking_uri is not None and not tracking_uri.strip():
            raise ValueError(f"{owner}: tracking_uri='' is not accepted; pass a server or store URI, or None")
        check_str(owner, "description", description)
        if run_id is not None and (not isinstance(run_id, str) or not _RUN_ID.match(run_id)):
            raise ValueError(f"{owner}: run_id={run_id!r} is not an MLflow run id (letters, digits, '-' and '_')")
        if run_id is not None and run_name is not None:
            raise ValueError(f"{owner}: run_id resumes a run that has its name; pass run_id or run_name, not both")
        tags = _check_tags(owner, tags)
        if autolog is not None and not isinstance(autolog, bool):
            raise TypeError(f"{owner}: autolog={autolog!r} is not accepted; pass True, False or None")
        _check_framework(owner, framework)
        check_choice(owner, "parent", parent, PARENTS)
        if self.run_mode in _SHARING_MODES and parent != "active":
            raise ValueError(
                f"{owner}: parent={parent!r} and run_mode={self.run_mode!r} both choose the run's parent "
                "(run_mode='nested' is a child of the execution's parent run, parent='execution'; a "
                "run_mode='shared' run has none); pass one of them"
            )
        if self.run_mode in _SHARING_MODES and run_id is not None:
            raise ValueError(
                f"{owner}: run_id={run_id!r} resumes that run, and run_mode={self.run_mode!r} chooses another; "
                "pass one of them"
            )
        if link_host is not None:
            check_url(owner, "link_host", link_host)
        self._keep(locals())

    # ---------------------------------------------------------------- configuration
    @property
    def autologs(self) -> bool:
        """Whether the block autologs (``autolog``, else whether a framework was named)."""
        return self.autolog if self.autolog is not None else self.framework is not None

    def _reuse_key(self) -> Hashable:
        framework = self.framework.__name__ if isinstance(self.framework, ModuleType) else self.framework
        return (self.experiment_name, self.tracking_uri, self.run_name, self.run_id, self.parent, framework)

    def _backend_defaults(self, defaults: TrackingDefaults) -> dict[str, Any]:
        # Before MLFLOW_EXPERIMENT_NAME, which is read at open.
        updates = defaults.fill(self, project="experiment_name")
        if defaults.tags:
            own = dict(self.tags or {})
            updates["tags"] = {**own, **{tag: "" for tag in defaults.tags if tag not in own}}
        if (
            self.run_mode is None
            and defaults.run_mode in _SHARING_MODES
            and (self.parent != "active" or self.run_id is not None)
        ):
            updates["run_mode"] = None  # the session's own parent= or run_id= wins over the workflow's mode
        return updates

    def _require_backend(self) -> None:
        super()._require_backend()
        # Importing MLflow takes seconds in a fresh process (a pod): done here, before the online
        # deadline starts, so that the deadline bounds the server's answer, not the import.
        import mlflow.tracking  # noqa: F401

    def _configured_uri(self) -> str | None:
        return self.tracking_uri or _fluent.user_tracking_uri()

    def _ambient_credentials(self) -> bool:
        # A tracking server to talk to is what takes an MLflow run online (many need no key).
        return bool(self._configured_uri())

    def _known_secrets(self) -> tuple[str, ...]:
        return tuple(value for value in (os.environ.get(TOKEN_ENV_VAR), os.environ.get(PASSWORD_ENV_VAR)) if value)

    def _secret_forms(self, key: str) -> tuple[str, ...]:
        forms = [key]
        if ":" in key:
            forms.append(key.split(":", 1)[1])
        return tuple(forms)

    def _experiment_name(self) -> str:
        if self.experiment_name:
            return self.experiment_name
        configured = os.environ.get(EXPERIMENT_NAME_ENV_VAR)
        if configured:
            return configured
        for variable in WORKFLOW_ENV_VARS:
            workflow = os.environ.get(variable)
            if workflow:
                return workflow
        return LOCAL_EXPERIMENT

    def _run_name(self, plan: OpenPlan) -> str | None:
        if self.run_name:
            return self.run_name
        if plan.sharing.run_mode == "shared":
            return plan.run_id  # the execution's name, with the scope's suffix
        context = plan.context
        name: str | None = None
        if context.is_remote and context.execution_name and context.task_name:
            name = f"{context.execution_name}.{context.task_name.split('.')[-1]}"
        elif plan.function:  # a decorated function's own name (``module.qualname``); else None: MLflow's
            name = plan.function.rsplit(".", 1)[-1]
        # The runs of a worker or rank scope: told apart by name too.
        return name + plan.sharing.suffix if name else None

    def _parent_kind(self, plan: OpenPlan) -> str:
        """``"active"``, ``"execution"`` or ``"none"``: what the run nests under, by its run mode."""
        if plan.sharing.run_mode == "shared":
            return "none"
        if plan.sharing.run_mode == "nested":
            return "execution"
        return self.parent

    def _claim_wait(self, plan: OpenPlan) -> float:
        # Online, two claims' waits must fit in the open's deadline, with room for the requests.
        deadline = plan.online_timeout if plan.mode == "online" else None
        return min(_CLAIM_WAIT, deadline / 3) if deadline else _CLAIM_WAIT

    def _policy(self, plan: OpenPlan, *, retries: int) -> _store.RequestPolicy | None:
        if plan.mode != "online":
            return None
        timeout = plan.online_timeout or self._online_deadline()
        return _store.RequestPolicy.for_secret(
            plan.api_key, max_retries=retries, timeout=timeout, backoff_factor=_BACKOFF
        )

    # ---------------------------------------------------------------- opening
    def _open(self, plan: OpenPlan) -> ActiveRun:
        import mlflow
        from mlflow import MlflowClient

        _store.install()
        _fluent.install()
        if plan.mode == "online":
            store_uri = self._configured_uri()
            if not store_uri:
                raise ValueError(
                    f"no tracking URI: pass {type(self).__name__}(tracking_uri=...) or set {TRACKING_URI_ENV_VAR}"
                )
            artifact_location = None
        else:
            store_uri = _sqlite_uri(local_store(plan.directory))
            artifact_location = (plan.directory / ARTIFACTS_FOLDER).as_uri()
        policy = self._policy(plan, retries=_OPEN_RETRIES)
        with _store.requests(policy):
            client = MlflowClient(store_uri)
            experiment_id = _experiment_id(client, self._experiment_name(), artifact_location)
            if self.run_id is not None:
                client.update_run(self.run_id, status="RUNNING")
                run = client.get_run(self.run_id)
            elif plan.sharing.run_mode == "shared":
                run = client.get_run(self._shared_run(client, experiment_id, plan))
                self._join_as_writer(store_uri, run.info.run_id, plan, self.tags)
            else:
                tags = self._tags(plan)
                parent_id = self._parent_run_id(client, store_uri, experiment_id, plan)
                if parent_id is not None:
                    tags[PARENT_TAG] = parent_id
                execution_parent = parent_id is not None and self._parent_kind(plan) == "execution"
                if execution_parent:
                    tags[_shared.WRITER_TAG] = self._writer_key(plan)
                run = client.create_run(experiment_id, run_name=self._run_name(plan), tags=tags)
                if execution_parent and parent_id is not None:
                    self._join_as_writer(store_uri, parent_id, plan)
        self._guard(run.info.run_id, store_uri, plan)
        return mlflow.ActiveRun(run)

    def _join_as_writer(
        self, store_uri: str, run_id: str, plan: OpenPlan, tags: Mapping[str, str] | None = None
    ) -> None:
        """Record this writer, running, on the run it shares (a shared run, or the execution's parent)."""
        running = self._writer_value(plan, "RUNNING")
        _shared.join(_store.store_for(store_uri), run_id, self._writer_key(plan), running, tags)

    def _writer_key(self, plan: OpenPlan) -> str:
        return _shared.writer_key(plan.context, plan.function)

    def _writer_value(self, plan: OpenPlan, status: str, error: BaseException | None = None) -> str:
        # A pod's attempt: `sync` merging an earlier attempt's offline copy must not undo a retry's end.
        attempt = plan.context.attempt if plan.context.is_remote else None
        return _shared.writer_value(status, plan.sharing.writer, error, attempt)

    def _run_tags(self, plan: OpenPlan) -> dict[str, str]:
        """The tags of the run this writer writes to when it creates it (or its offline twin)."""
        if plan.sharing.run_mode != "shared":
            return self._tags(plan)
        tags = {**self._execution_tags(plan.context), SHARED_TAG: str(plan.run_id)}
        if self.description:
            tags["mlflow.note.content"] = self.description
        tags.update(self.tags or {})
        return tags

    @staticmethod
    def _execution_tags(context: ExecutionContext) -> dict[str, str]:
        """The tags of a run the execution's tasks share: the execution's, none of one task's."""
        metadata = context.flyte_metadata()
        tags = {_tag_name(key): value for key, value in metadata.items() if key in EXECUTION_WIDE}
        tags["flyte.execution_mode"] = "remote" if context.is_remote else "local"
        return tags

    def _shared_run(self, client: MlflowClient, experiment_id: str, plan: OpenPlan) -> str:
        """The execution's shared run (of this scope): found by its tag, or created by its first writer."""
        identity = str(plan.run_id)

        def create() -> str:
            run = client.create_run(experiment_id, run_name=self._run_name(plan), tags=self._run_tags(plan))
            return str(run.info.run_id)

        name = self._experiment_name()
        return _shared.find_or_create(
            client, name, experiment_id, SHARED_TAG, identity, create, wait=self._claim_wait(plan)
        )

    def _tags(self, plan: OpenPlan) -> dict[str, str]:
        context = plan.context
        tags = {_tag_name(key): value for key, value in context.flyte_metadata().items()}
        tags["flyte.execution_mode"] = "remote" if context.is_remote else "local"
        if plan.function and "flyte.task.name" not in tags:
            tags["flyte.task.name"] = plan.function
        if context.is_remote:
            tags["flyte.attempt"] = str(context.attempt)
            if plan.group is not None:
                tags["flyte.group"] = plan.group
            if context.map_index is not None:
                tags["flyte.map_index"] = str(context.map_index)
        if context.is_distributed:
            tags["flyte.rank"] = str(context.rank)
            tags["flyte.world_size"] = str(context.world_size)
            tags["flyte.local_rank"] = str(context.local_rank)
            tags["flyte.group_rank"] = str(context.group_rank)
        if plan.source_file:
            tags["mlflow.source.name"] = plan.source_file
        if self.description:
            tags["mlflow.note.content"] = self.description
        tags.update(self.tags or {})
        return tags

    def _parent_run_id(self, client: MlflowClient, store_uri: str, experiment_id: str, plan: OpenPlan) -> str | None:
        kind = self._parent_kind(plan)
        if kind == "none":
            return None
        if kind == "execution":
            return self._execution_parent(client, experiment_id, plan)
        import mlflow

        active = mlflow.active_run()
        if active is None:
            return None
        guard = _store.owner(active.info.run_id)
        # A run in another store (an online parent, this run offline) cannot be its parent.
        if guard is not None and guard.store is not _store.store_for(store_uri):
            return None
        return str(active.info.run_id)

    def _execution_parent(self, client: MlflowClient, experiment_id: str, plan: OpenPlan) -> str:
        """The execution's parent run: found by its tag, or created by the task that claims it first
        (:func:`._shared.find_or_create`)."""
        context = plan.context
        if context.is_remote and context.execution_name:
            key = "/".join(
                part or "-" for part in (context.execution_project, context.execution_domain, context.execution_name)
            )
            name = context.execution_name
        else:  # a local workflow runs its tasks in one process; a local torch elastic job shares its run id
            key = name = shared_base(context)

        def create() -> str:
            tags = {EXECUTION_PARENT_TAG: key, **self._execution_tags(context)}
            return str(client.create_run(experiment_id, run_name=name, tags=tags).info.run_id)

        experiment_name = self._experiment_name()
        return _shared.find_or_create(
            client, experiment_name, experiment_id, EXECUTION_PARENT_TAG, key, create, wait=self._claim_wait(plan)
        )

    def _guard(self, run_id: str, store_uri: str, plan: OpenPlan) -> None:
        session = self

        def continue_offline(guard: _store.RunGuard, error: BaseException) -> tuple[Any, str]:
            from mlflow import MlflowClient

            local_uri = _sqlite_uri(local_store(plan.directory))
            client = MlflowClient(local_uri)
            experiment_id = _experiment_id(
                client, session._experiment_name(), (plan.directory / ARTIFACTS_FOLDER).as_uri()
            )
            tags = {**guard.tags, **session._run_tags(plan), ONLINE_TWIN_TAG: guard.run_id}
            tags.pop(PARENT_TAG, None)
            twin = client.create_run(experiment_id, run_name=self._run_name(plan), tags=tags)
            twin_id = twin.info.run_id
            if guard.params:
                from mlflow.entities import Param

                client.log_batch(twin_id, params=[Param(k, v) for k, v in guard.params.items()])
            return _store.store_for(local_uri), str(twin_id)

        def describe(guard: _store.RunGuard, error: BaseException) -> str:
            why = _store.failure_text(error, *plan.secrets)
            if guard.offline is not None:
                where = plan.directory / STORE_FILE
                return (
                    f"{type(session).__name__}: the tracking server stopped answering ({why}), so run "
                    f"{guard.run_id} continues offline as run {guard.offline[1]} in {where}; browse it with: "
                    f"mlflow ui --backend-store-uri {_sqlite_uri(where)}"
                )
            return f"{type(session).__name__}: MLflow could not record into run {guard.run_id}: {why}"

        _store.own(
            _store.RunGuard(
                run_id=run_id,
                store=_store.store_for(store_uri),
                policy=self._policy(plan, retries=_BLOCK_RETRIES),
                on_error=self.on_error,
                continue_offline=continue_offline if plan.mode == "online" else None,
                describe=describe,
                shared_writer=self._writer_key(plan) if plan.sharing.run_mode == "shared" else None,
            )
        )

    # ---------------------------------------------------------------- offline runs
    @classmethod
    def _find_offline(cls, root: Path) -> list[OfflineRun]:
        return _sync.find_offline_runs(root)

    def _upload_target(self, key: str | None, options: Mapping[str, str]) -> UploadTarget | str:
        uri = options.get("tracking_uri") or self.tracking_uri or os.environ.get(TRACKING_URI_ENV_VAR)
        if not uri:
            return "no tracking server (MLFLOW_TRACKING_URI is not set; or pass --mlflow-tracking-uri URI)"
        return UploadTarget(key=key, options={**options, "tracking_uri": uri})

    def _offline_data(self, handle: ActiveRun, plan: OpenPlan) -> list[tuple[Path, str]]:
        guard = _store.owner(handle.info.run_id)
        if plan.mode != "offline" and (guard is None or guard.offline is None):
            return []  # online all along: the server has it
        store = plan.directory / STORE_FILE
        run_id = guard.offline[1] if guard is not None and guard.offline is not None else handle.info.run_id
        items = [(_snapshot(store), STORE_FILE)]
        artifacts = plan.directory / ARTIFACTS_FOLDER / run_id
        if artifacts.is_dir():
            items.append((artifacts, f"{ARTIFACTS_FOLDER}/{run_id}"))
        return items

    def _upload_offline(self, run: OfflineRun, target: UploadTarget, progress: Progress) -> str | None:
        _store.install()
        return _sync.upload_offline_run(run, target, progress)

    # ---------------------------------------------------------------- the block
    def _handle_scope(self, handle: ActiveRun, plan: OpenPlan) -> AbstractContextManager[Any]:
        stack = ExitStack()
        try:
            uri = self._configured_uri() if plan.mode == "online" else None
            stack.enter_context(_fluent.holding_tracking_uri(uri or _sqlite_uri(plan.directory / STORE_FILE)))
            stack.enter_context(_fluent.active_run(handle))
            if self.autologs:
                stack.enter_context(_fluent.autolog(self.framework))
        except BaseException:
            stack.close()
            raise
        return stack

    def _log_metrics(self, handle: ActiveRun, metrics: Mapping[str, float | int]) -> None:
        from mlflow.entities import Metric

        guard = _store.owner(handle.info.run_id)
        if guard is None:  # the run already ended
            return
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
        guard.store.log_batch(handle.info.run_id, metrics=batch, params=[], tags=[])

    # ---------------------------------------------------------------- closing
    def _close(self, handle: ActiveRun, plan: OpenPlan, error: BaseException | None) -> None:
        run_id = handle.info.run_id
        guard = _store.owner(run_id)
        if guard is None:
            return
        try:
            self._end(guard.store, run_id, plan, error)
        finally:
            _store.release(run_id)

    def _end(self, store: Any, run_id: str, plan: OpenPlan, error: BaseException | None) -> None:
        from mlflow.entities import RunStatus, RunTag

        if error is None:
            status = "FINISHED"
        elif isinstance(error, Terminated):
            status = "KILLED"
        else:
            status = "FAILED"
        # An attempt abandoned for taking too long to go online wrote nothing: the block runs offline.
        value = None if isinstance(error, OnlineTimeout) else self._writer_value(plan, status, error)
        with _store.requests(self._policy(plan, retries=_OPEN_RETRIES)):  # the parent's calls: this run's credentials
            if plan.sharing.run_mode == "shared":
                # The run is every writer's: this one's end is its tag; the status is theirs together.
                _shared.leave(store, run_id, self._writer_key(plan), value)
                return
            now = int(time.time() * 1000)
            if error is not None:
                error_type = type(error)
                message = redact(exception_message(error), *plan.secrets)[:_MESSAGE_LIMIT]
                tags = [
                    RunTag("flyte.error.type", f"{error_type.__module__}.{error_type.__qualname__}"),
                    RunTag("flyte.error.message", message or "-"),
                ]
                store.log_batch(run_id, metrics=[], params=[], tags=tags)
            store.update_run_info(run_id, RunStatus.from_string(status), now, None)
            if self._parent_kind(plan) == "execution":
                # The execution's parent ends with its children: see _shared.
                parent_id = store.get_run(run_id).data.tags.get(PARENT_TAG)
                if parent_id:
                    _shared.leave(store, parent_id, self._writer_key(plan), value)

    # ---------------------------------------------------------------- reporting
    def _run_info(self, handle: ActiveRun, plan: OpenPlan, error: BaseException | None) -> RunInfo:
        run_id = handle.info.run_id
        guard = _store.owner(run_id)
        offline_store = plan.directory / STORE_FILE
        store: Any = None
        if guard is not None:
            store = guard.store
        else:  # the run is closed (the deck is made after it ends): read it where it was logged
            store_uri = self._configured_uri() if plan.mode == "online" else _sqlite_uri(offline_store)
            store = _store.store_for(store_uri) if store_uri else None
        went_offline = guard is not None and guard.offline is not None
        fields: dict[str, str | None] = {
            "run id": run_id,
            "experiment": self._experiment_name(),
            "mode": "offline" if went_offline else plan.mode,
            "Flyte execution": plan.context.execution_id,
        }
        if went_offline and guard is not None and guard.offline is not None:
            fields["offline run id"] = guard.offline[1]
        url: str | None = None
        local_path: str | None = None
        if plan.mode == "online" and not went_offline:
            uri = self._configured_uri() or ""
            fields["tracking URI"] = _without_userinfo(uri)
            host = self.link_host or (uri if uri.startswith(("http://", "https://")) else None)
            if host:
                url = f"{_without_userinfo(host).rstrip('/')}/#/experiments/{handle.info.experiment_id}/runs/{run_id}"
        else:
            local_path = f"{offline_store} (browse it with: mlflow ui --backend-store-uri {_sqlite_uri(offline_store)})"
        logged: dict[str, Any] = {}
        if store is not None:
            try:
                with _store.requests(self._policy(plan, retries=_OPEN_RETRIES)):
                    logged = _logged(store, run_id)
            except Exception as read_error:  # the deck still shows the run
                logged = {"note": f"The logged values could not be read ({type(read_error).__name__})"}
        name = logged.pop("name", None) or handle.info.run_name or run_id
        fields["name"] = name
        parent = logged.pop("parent", None)
        if parent:
            fields["parent run id"] = parent
        writers = logged.pop("writers", None)
        if plan.sharing.run_mode == "shared":
            fields["shared run"] = f"{SHARED_TAG} = {plan.run_id}"
            fields["writers so far"] = writers
        status = logged.pop("status", None)
        return RunInfo(
            backend=self.display_name,
            name=name,
            fields=fields,
            url=url,
            local_path=local_path,
            failed=error is not None,
            status=status or (f"failed with {type(error).__name__}" if error is not None else "finished"),
            **logged,
        )


def _logged(store: Any, run_id: str) -> dict[str, Any]:
    """What the run holds, read from its store: series, parameters, the user's tags, status."""
    run = store.get_run(run_id)
    series: dict[str, list[tuple[float, float]]] = {}
    for key in run.data.metrics:
        history = sorted(store.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))
        series[key] = [(float(metric.step), float(metric.value)) for metric in history]
    tags = run.data.tags
    user_tags = [
        f"{key}={value}"
        for key, value in sorted(tags.items())
        if not key.startswith(("mlflow.", "flyte.", "flyte_ctx_tracking."))
    ]
    status = str(run.info.status).lower()
    writers: dict[str, int] = {}
    for key, value in tags.items():
        if key.startswith(_shared.WRITER_PREFIX):
            state = value.split(":", 1)[0].strip().lower()
            writers[state] = writers.get(state, 0) + 1
    error_type = tags.get("flyte.error.type")
    if error_type:
        status = f"{status} with {error_type.rsplit('.', 1)[-1]}"
    return {
        "series": series,
        "config": dict(sorted(run.data.params.items())),
        "tags": user_tags,
        "status": status,
        "name": run.info.run_name,
        "parent": tags.get(PARENT_TAG),
        "writers": ", ".join(f"{count} {state}" for state, count in sorted(writers.items())) or None,
    }


mlflow_session = MlflowSession
"""The public name of :class:`MlflowSession`: ``with mlflow_session(...) as run:``."""


class mlflow_run(SessionDecorator, session=MlflowSession):
    """Decorate a task so each call runs in an MLflow run: the parameters of :func:`mlflow_session`.

    Put it below ``@task``::

        @task
        @mlflow_run(experiment_name="fraud", tags={"team": "risk"})
        def train() -> float:
            mlflow.log_metric("auc", 0.93)
            ...
    """

    HOST_KEY: ClassVar[str] = "host"
    EXPERIMENT_KEY: ClassVar[str] = "experiment_name"

    session: MlflowSession

    def get_extra_config(self) -> dict[str, str]:
        """``host`` (the MLflow UI), ``experiment_name`` and ``link_type``, for a console link template
        (see ``docs/mlflow.md``): ``"mlflow-run"`` (the pod's run, by its ``flyte.execution_id`` tag),
        or ``"mlflow-shared-run"`` for a shared run (by its ``flyte_ctx_tracking.shared_run`` tag: the
        execution's name). The workflow's defaults count as registration sees them (flytekit calls
        this when the workflow is registered)."""
        session = self.session._with_defaults()
        config: dict[str, str] = {}
        host = session.link_host or session.tracking_uri
        if host and host.startswith(("http://", "https://")):
            config[self.HOST_KEY] = _without_userinfo(host)
        if session.experiment_name:
            config[self.EXPERIMENT_KEY] = session.experiment_name
        config[self.LINK_TYPE_KEY] = SHARED_LINK_TYPE if session.run_mode == "shared" else LINK_TYPE
        return config


class mlflow_autolog(mlflow_run):
    """flytekitplugins-mlflow's decorator: MLflow autologging of ``framework`` in a run of each call.

    Same parameters (``framework``, default ``mlflow.sklearn``; ``experiment_name``) plus any of
    :func:`mlflow_session`'s; the run's metrics and parameters are shown in a deck::

        @task
        @mlflow_autolog(framework=mlflow.sklearn)
        def train() -> float: ...
    """

    positional: ClassVar[tuple[str, ...] | None] = ()

    def _make_session(self, **kwargs: Any) -> MlflowSession:
        kwargs.setdefault("framework", "sklearn")
        kwargs.setdefault("autolog", True)
        return MlflowSession(**kwargs)
