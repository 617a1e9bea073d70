"""Weights & Biases: ``wandb_session`` (a block, a function or a task) and the ``wandb_init`` decorator.

Only what is specific to W&B lives here; the lifecycle (reentrancy, threads, ``on_error``, mode,
ranks, secrets, decks) is the session core's. What this module adds:

* one independent ``wandb`` run per session (``reinit="create_new"``), finished through the run
  object, so a different session nested inside opens its own run and never finishes the outer one;
* credentials for this run only: the resolved key and ``api_host`` go into this run's
  ``wandb.Settings``; nothing calls ``wandb.login``, nothing writes ``~/.netrc``, and the process-wide
  session credentials W&B sets while opening an online run are put back as they were;
* the Flyte identity (pod name as run id, an execution's runs in one group, the task as job type)
  and metadata (``flyte``
  config entry, execution URL at the head of the notes, execution project and domain as tags).

``wandb`` is imported only when a run opens: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import re
import shlex
import shutil
import struct
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .._decorator import SessionDecorator
from .._defaults import TrackingDefaults
from .._offline import OfflineRun, Progress, UploadTarget
from .._secrets import SecretSpec, redact
from .._session import OpenPlan, RunInfo, TrackingSession, tracking_root, warn
from .._validate import check_str, check_str_list, check_url, shorten_id

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

__all__ = ["WandbSession", "wandb_init", "wandb_session"]

DEFAULT_HOST = "https://wandb.ai"
DEFAULT_API_HOST = "https://api.wandb.ai"
WANDB_EXECUTION_TYPE_VALUE = "wandb-execution-id"
WANDB_CUSTOM_TYPE_VALUE = "wandb-custom-id"
WANDB_SHARED_TYPE_VALUE = "wandb-shared-id"
"""Link type of a run the whole execution shares: its id is the execution's name (``{{ .executionName }}``)."""
WANDB_GROUP_TYPE_VALUE = "wandb-group"
"""Link type of a task whose runs are per worker or rank, or nested: the execution's group of runs."""

# What W&B itself rejects (wandb.Settings validators), checked here so that bad input fails when
# the session is built, without importing wandb.
_RUN_ID_RESERVED = ":;,#?/'"
_PROJECT_RESERVED = "/\\#?%:"
_MAX_PROJECT = 128
_MAX_TAG = 64
_MAX_JOB_TYPE = 64  # W&B's limit on job_type
# Pod names can be long; the run id also names the offline folder, so keep it short.
_MAX_RUN_ID = 64
_OFFLINE_SUFFIX = "-offline"
_MAX_LABEL = 64
# WANDB_MODE's values (with W&B's old aliases) as session modes.
_WANDB_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
# W&B names the run's folder `offline-run-<date>_<time>-<id>`: a file name has at most 255 bytes.
_MAX_USER_RUN_ID_BYTES = 200
# Arguments this module sets itself; the user's values are merged in, not passed twice.
_MERGED = (
    *("config", "tags", "notes", "group", "job_type", "settings", "reinit", "mode", "dir", "id"),
    *("project", "entity"),
)


def _check_run_id(owner: str, run_id: object) -> None:
    if run_id is None:
        return
    if not isinstance(run_id, str):
        raise TypeError(f"{owner}: id={run_id!r} is not accepted; pass the run id as a str, or None")
    if not run_id.strip() or run_id != run_id.strip():
        raise ValueError(
            f"{owner}: id={run_id!r} is not a valid W&B run id; it must be non-empty, without surrounding spaces"
        )
    bad = sorted({char for char in run_id if char in _RUN_ID_RESERVED or not char.isprintable()})
    if bad:
        raise ValueError(
            f"{owner}: id={run_id!r} is not a valid W&B run id: it contains {''.join(bad)!r}; "
            f"W&B run ids may use any printable characters except {_RUN_ID_RESERVED!r}"
        )
    if len(run_id.encode()) > _MAX_USER_RUN_ID_BYTES:
        raise ValueError(
            f"{owner}: id={run_id[:40]!r}... is {len(run_id.encode())} bytes long; W&B names the run's folder "
            f"after it, so it may be at most {_MAX_USER_RUN_ID_BYTES} bytes (UTF-8)"
        )


def _derived_run_id(identity: str | None) -> str | None:
    """The run id of a remote run: the pod name (as flytekitplugins-wandb, for console links), with
    anything W&B would reject (garbage in the execution id) made a dash, and bounded in length."""
    if not identity:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", identity).strip("-.")
    return shorten_id(safe, _MAX_RUN_ID) if safe else None


def _check_project(owner: str, project: object) -> None:
    if project is None:
        return
    if not isinstance(project, str):
        raise TypeError(f"{owner}: project={project!r} is not accepted; pass the project name as a str, or None")
    bad = sorted({char for char in project if char in _PROJECT_RESERVED})
    if bad or len(project) > _MAX_PROJECT or not project:
        raise ValueError(
            f"{owner}: project={project!r} is not a valid W&B project name; it must be 1 to {_MAX_PROJECT} "
            f"characters, none of {_PROJECT_RESERVED!r}"
        )


def _nested(metadata: Mapping[str, str]) -> dict[str, Any]:
    """``{"flyte/task/name": v}`` as ``{"task": {"name": v}}``: how W&B shows nested config."""
    tree: dict[str, Any] = {}
    for key, value in metadata.items():
        parts = key.split("/")[1:] if key.startswith("flyte/") else [key]
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            node = child if isinstance(child, dict) else node
        node[parts[-1]] = value
    return tree


def _exit_code(error: BaseException | None) -> int:
    if error is None:
        return 0
    if isinstance(error, SystemExit) and isinstance(error.code, int):
        return error.code or 1  # the block failed: never report success for an exception
    code = getattr(error, "exit_code", None)  # a terminated process: 128 + the signal, as Kubernetes says
    return code if isinstance(code, int) and code > 0 else 1


class WandbSession(
    TrackingSession["Run"], kind="wandb", display_name="Weights & Biases", backend="wandb", extra="wandb"
):
    """A W&B run around a block (``with``/``async with``), a function or a task (as a decorator).

    ``with wandb_session(...) as run`` yields the real ``wandb`` Run; inside, ``current_run("wandb")``
    returns it. The run finishes when the block ends: exit code 0 on success, non-zero when the block
    raised (the exception then propagates unchanged).

    Args:
        project: the W&B project; None lets W&B choose (``WANDB_PROJECT`` or "uncategorized").
        entity: the user or team; None uses the key's default entity.
        secret: a flytekit ``Secret`` holding the API key, or a callable returning it. Without one,
            ``WANDB_API_KEY`` or a saved ``wandb login`` are used; with none of them the run is offline.
        id: the run id. Default: the pod name in Flyte runs (as flytekitplugins-wandb, so console links
            keep working), a fresh id locally. W&B rejects ids containing any of ``:;,#?/'``.
        host: the W&B app URL (for links).
        api_host: the W&B API URL the key authenticates against.
        **init_kwargs: the shared options below, and what goes to ``wandb.init`` (``config``,
            ``tags``, ``notes``, ``group``, ``dir`` (W&B's name for ``directory``),
            ``name``, ``job_type``, ``settings``...). ``config``, ``notes`` and ``tags`` are kept and
            extended with the Flyte metadata; ``group`` wins over the node's default group.

    Raises:
        ValueError: an invalid run id or project name, an unknown ``mode`` or ``on_error``.
        TypeError: a secret, path or tag of the wrong type.
    """

    credential_sources: ClassVar[str] = "WANDB_API_KEY is not set and there is no saved `wandb login`"
    # Offline runs cannot be shared: each process writes its own folder, and `wandb sync` of two
    # folders with one id replays them one after the other, the later replacing the earlier.
    run_modes: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "online": ("new", "shared", "nested"),
        "offline": ("new", "nested"),
    }
    telemetry_off: ClassVar[Mapping[str, str]] = {"WANDB_ERROR_REPORTING": "false"}
    project: str | None
    entity: str | None
    id: str | None
    host: str
    api_host: str

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        secret: SecretSpec = None,
        id: str | None = None,  # wandb.init's and flytekitplugins-wandb's name
        host: str = DEFAULT_HOST,
        api_host: str = DEFAULT_API_HOST,
        **init_kwargs: Any,
    ) -> None:
        owner = "wandb_session"
        _check_project(owner, project)
        check_str(owner, "entity", entity)
        _check_run_id(owner, id)
        check_url(owner, "host", host)
        check_url(owner, "api_host", api_host)
        for name in ("id", "project", "entity"):
            if name in init_kwargs:  # only reachable through **{...}: the named parameters take them
                raise TypeError(f"{owner}: {name} was given twice")
        if "dir" in init_kwargs:  # wandb.init's name for the shared `directory`
            if "directory" in init_kwargs:
                raise TypeError(f"{owner}: pass dir= or directory=, not both")
            directory = init_kwargs.pop("dir")
            if directory is not None and not isinstance(directory, (str, os.PathLike)):
                raise TypeError(
                    f"{owner}: dir={directory!r} is not accepted; pass a path (str or os.PathLike). "
                    "(@wandb_init also accepts a FlyteDirectory or the name of a task parameter holding one.)"
                )
            init_kwargs["directory"] = directory
        init_kwargs = self._take_options(init_kwargs, secret=secret)
        check_str(owner, "group", init_kwargs.get("group"))
        check_str(owner, "notes", init_kwargs.get("notes"))
        check_str_list(owner, "tags", init_kwargs.get("tags"))
        self._keep(locals())
        self.init_kwargs: dict[str, Any] = init_kwargs

    # ------------------------------------------------------------------ core hooks
    def _backend_defaults(self, defaults: TrackingDefaults) -> dict[str, Any]:
        updates = defaults.fill(self, project="project", entity="entity")
        if defaults.tags:
            tags = list(self.init_kwargs.get("tags") or ())
            updates["init_kwargs"] = {**self.init_kwargs, "tags": [*tags, *(t for t in defaults.tags if t not in tags)]}
        return updates

    def _reuse_key(self) -> Hashable:
        # An explicit name is a different run too: a nested `name="eval"` must not log into "train".
        return (self.api_host, self.entity, self.project, self.id, self.init_kwargs.get("name"))

    def _ambient_credentials(self) -> bool:
        return bool(os.environ.get("WANDB_IDENTITY_TOKEN_FILE")) or bool(self._known_secrets())

    def _backend_mode(self) -> str | None:
        if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
            return "disabled"
        return _WANDB_MODES.get(os.environ.get("WANDB_MODE", "").strip().lower())

    def _backend_directory(self) -> str | None:
        return os.environ.get("WANDB_DIR")

    def _known_secrets(self) -> tuple[str, ...]:
        user_settings = self.init_kwargs.get("settings")
        in_settings = user_settings.get("api_key") if isinstance(user_settings, Mapping) else None
        keys = [os.environ.get("WANDB_API_KEY"), in_settings or getattr(user_settings, "api_key", None)]
        try:
            from wandb.sdk.lib.wbauth import wbnetrc

            keys.append(wbnetrc.read_netrc_auth(host=self.api_host))
        except Exception:  # no readable netrc, or wandb moved it: no saved login we can see
            pass
        return tuple(key for key in keys if isinstance(key, str) and key)

    # ---------------------------------------------------------------- offline runs
    @classmethod
    def _find_offline(cls, root: Path) -> list[OfflineRun]:
        runs = []
        for folder in sorted(root.rglob("offline-run-*")):
            if folder.is_dir() and any(folder.glob("run-*.wandb")):
                runs.append(OfflineRun("wandb", folder, folder.name))
        return runs

    def _upload_target(self, key: str | None, options: Mapping[str, str]) -> UploadTarget | str:
        target = super()._upload_target(key, options)
        if isinstance(target, str):
            return target
        settings = {"project": options.get("project") or self.project or "", "entity": options.get("entity") or ""}
        return UploadTarget(key=target.key, options={**options, **settings, "base_url": self.api_host})

    def _upload_offline(self, run: OfflineRun, target: UploadTarget, progress: Progress) -> str | None:
        import wandb
        from wandb.cli import beta_sync

        wandb.setup(settings=wandb.Settings(api_key=target.key, base_url=target.options["base_url"]))
        printed = io.StringIO()
        with contextlib.redirect_stderr(_Tee(sys.stderr, printed)):
            beta_sync.sync(
                [run.path],
                live=False,
                entity=target.options.get("entity", ""),
                project=target.options.get("project", ""),
                run_id="",
                job_type="",
                replace_tags="",
                dry_run=False,
                skip_confirmation=True,
                skip_synced=True,
                skip_online=True,
                verbose=False,
                parallelism=1,
            )
        # wandb's sync reports failures in its output only; the run's `.synced` marker says it is done.
        if not list(run.path.glob("run-*.wandb.synced")):
            raise RuntimeError(f"W&B did not confirm the upload of {run.path.name}: see its messages above")
        found = re.search(r"View run .*? at (\S+)", printed.getvalue())
        return found.group(1) if found else None

    def _open(self, plan: OpenPlan) -> Run:
        import wandb

        context = plan.context
        kwargs = {key: value for key, value in self.init_kwargs.items() if key not in _MERGED}

        sharing = plan.sharing
        # The user's id keeps the scope's runs apart too (`<id>-rank3`); a shared run's is everyone's.
        run_id = f"{self.id}{sharing.suffix}" if self.id is not None else _derived_run_id(plan.run_id)
        if run_id and plan.after_online_failure:
            # wandb-core keeps a failed online attempt's id reserved in this process: the offline
            # run takes another, and its sync command uploads it under the intended one.
            run_id = f"{run_id}{_OFFLINE_SUFFIX}"

        metadata = _nested(context.flyte_metadata())
        user_config = self.init_kwargs.get("config")
        config: Any = user_config
        late_config: dict[str, Any] | None = None
        if metadata:
            if user_config is None:
                config = {"flyte": metadata}
            elif isinstance(user_config, Mapping) and "config_include_keys" not in kwargs:
                config = dict(user_config) if "flyte" in user_config else {**user_config, "flyte": metadata}
            else:  # a YAML path, argparse namespace...: W&B reads it, the Flyte entry follows
                late_config = {"flyte": metadata}

        notes = self.init_kwargs.get("notes")
        if context.execution_url:
            link = f"[Execution URL]({context.execution_url})"
            notes = f"{link}\n{notes}" if notes else link

        tags = context.tags(self.init_kwargs.get("tags"), max_length=_MAX_TAG)

        # The core's default is `<root>/wandb`, and W&B appends `wandb/` to `dir` itself (as it does to
        # a `directory=` or WANDB_DIR of the user's).
        default = (tracking_root() / self.kind).absolute()
        root_dir = plan.directory.parent if plan.directory == default else plan.directory
        # wandb-core writes its own logs under ~/.cache/wandb: keep them with the data (a user's choice wins).
        os.environ.setdefault("WANDB_CACHE_DIR", str(plan.directory / "cache"))

        settings = wandb.Settings(base_url=self.api_host)
        if self.host.rstrip("/") != DEFAULT_HOST:
            settings.app_url_override = self.host
        user_settings = self.init_kwargs.get("settings")
        if user_settings is not None:
            settings.update_from_settings(
                user_settings if isinstance(user_settings, wandb.Settings) else wandb.Settings(**dict(user_settings))
            )
        if plan.mode == "online" and plan.api_key and not settings.api_key:
            settings.api_key = plan.api_key  # this run's settings only; offline runs never get the key
        if plan.online_timeout is not None and not _set_by_user(user_settings, "init_timeout"):
            settings.init_timeout = plan.online_timeout  # W&B gives up by itself as the core abandons it
        if sharing.run_mode == "shared":
            _share(settings, plan, user_settings)

        arguments: dict[str, Any] = {
            # W&B's own variables fill in what the session was not given.
            "project": self.project or os.environ.get("WANDB_PROJECT") or None,
            "entity": self.entity or os.environ.get("WANDB_ENTITY") or None,
            "id": run_id,
            "dir": str(root_dir),
            # An execution's runs are found together: its tasks' runs share the execution as their
            # group, the task is the job type; a node's retries and ranks keep their own run ids.
            "group": self.init_kwargs.get("group") or sharing.shared_id or _execution_group(plan),
            "job_type": self.init_kwargs.get("job_type") or _job_type(plan),
            "config": config,
            "notes": notes,
            "tags": tags or None,
            "mode": "shared" if sharing.run_mode == "shared" else plan.mode,
            "reinit": self.init_kwargs.get("reinit", "create_new"),
            # Several writers of a shared run, and a retry writing into it again, resume it.
            **({"resume": "allow"} if sharing.run_mode == "shared" else {}),
            "settings": settings,
            **kwargs,
        }
        # Online opens log in, which sets W&B's process-wide credentials: one at a time, so that
        # each puts back exactly what it found (offline opens never touch credentials).
        run: Run
        if plan.mode == "online":
            _LOG_REDACTION.protect(plan.secrets)
            runs_folder = root_dir / "wandb"
            # Bounded: an attempt abandoned at its deadline may hold the turn until W&B gives up.
            if not _ONLINE_OPEN.acquire(timeout=plan.online_timeout or -1):
                raise TimeoutError("another W&B run is still going online in this process")
            # Folders that appear while this open has the turn are its own (not another thread's).
            before = set(runs_folder.glob("run-*"))
            try:
                saved_auth = _session_auth()
                try:
                    run = _init(arguments)
                finally:
                    _restore_session_auth(saved_auth)
            except BaseException:
                # The failed attempt's folder records nothing of the block (it has not run), says it
                # exited with 0, and holds what the server echoed (the key, Basic-auth encoded).
                for folder in set(runs_folder.glob("run-*")) - before:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            finally:
                _ONLINE_OPEN.release()
        else:
            run = _init(arguments)
        _LOG_REDACTION.cover_handlers()  # this run's log file handler, if keys were seen in the process
        if late_config:
            run.config.update(late_config, allow_val_change=True)
        _make_global_if_free(run)
        return run

    def _offline_data(self, handle: Run, plan: OpenPlan) -> list[tuple[Path, str]]:
        folder = Path(str(handle.sync_dir))  # `offline-run-<time>-<id>`: what `wandb sync` takes
        return [(folder, folder.name)] if plan.mode == "offline" and folder.is_dir() else []

    def _close(self, handle: Run, plan: OpenPlan, error: BaseException | None) -> None:
        settings = handle.settings
        sync_file = None if getattr(settings, "x_skip_transaction_log", False) else Path(str(settings.sync_file))
        handle.finish(exit_code=_exit_code(error))
        # `finish()` returns before wandb-core has flushed the run's transaction log; code after
        # the block (a `wandb sync`, returning the folder as a task output) needs it complete.
        if sync_file is not None and not _wait_for_exit_record(sync_file, timeout=LOG_FLUSH_TIMEOUT):
            warn(
                f"wandb_session: W&B had not finished writing {sync_file} after {LOG_FLUSH_TIMEOUT:.0f} s; "
                "the run may still be flushing when the task ends"
            )

    def _log_metrics(self, handle: Run, metrics: Mapping[str, float | int]) -> None:
        handle.log(dict(metrics))

    def _run_info(self, handle: Run, plan: OpenPlan, error: BaseException | None) -> RunInfo:
        offline = plan.mode == "offline"
        sync_dir = str(handle.sync_dir) if offline else None
        return RunInfo(
            backend=self.display_name,
            name=handle.name or handle.id,
            fields={
                "run id": handle.id,
                "name": handle.name or None,
                "project": handle.project or self.project,
                "entity": handle.entity or self.entity,
                "group": handle.group or None,
                "mode": plan.mode,
            },
            url=None if offline else handle.url,
            local_path=sync_dir,
            sync_command=_sync_command(sync_dir, handle.id, plan) if sync_dir else None,
            failed=error is not None,
            status=f"failed with {type(error).__name__}" if error is not None else "finished",
            **_logged(handle),
        )


class _Tee(io.TextIOBase):
    """Writes to a stream and keeps a copy (to read the run's URL from what ``wandb sync`` prints)."""

    def __init__(self, stream: Any, copy: io.StringIO) -> None:
        self._stream, self._copy = stream, copy

    def write(self, text: str) -> int:
        self._copy.write(text)
        return int(self._stream.write(text))

    def flush(self) -> None:
        self._stream.flush()


class _RedactingFilter(logging.Filter):
    """Takes every key a W&B session went online with out of the records W&B logs (its ``debug.log``
    files): a failed online attempt logs what the server echoed, such as the Basic-auth form of the
    key, into whichever run's log is open, the offline retry's included."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._installed = False

    def protect(self, secrets: tuple[str, ...]) -> None:
        """Redact ``secrets`` too, from now on (installed on W&B's logger the first time)."""
        with self._lock:
            self.secrets = tuple(dict.fromkeys((*self.secrets, *secrets)))
            if not self._installed:
                logging.getLogger("wandb").addFilter(self)  # records logged to it directly
                self._installed = True
        self.cover_handlers()

    def cover_handlers(self) -> None:
        """Put the filter on the handlers of W&B's logger too: records of its child loggers
        (``wandb.sdk...``) reach those handlers without passing the logger's own filters."""
        if not self.secrets:
            return
        for handler in logging.getLogger("wandb").handlers:
            if self not in handler.filters:
                handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args, record.exc_info = redact(record.getMessage(), *self.secrets), None, None
            if record.exc_text:
                record.exc_text = redact(record.exc_text, *self.secrets)
        except Exception:  # a record we cannot format: W&B's own handling of it applies
            pass
        return True


_LOG_REDACTION = _RedactingFilter()


# What W&B raises when its helper process (wandb-core) is gone: every later init in the process
# would fail the same way until the connection to it is dropped.
_DEAD_SERVICE_ERRORS = ("MailboxClosedError", "ConnectionResetError", "BrokenPipeError", "ConnectionRefusedError")


def _init(arguments: dict[str, Any]) -> Run:
    """``wandb.init``, restarting W&B's helper process once when it died (OOM killer, a crash)."""
    import wandb

    try:
        return wandb.init(**arguments)
    except Exception as error:
        if type(error).__name__ not in _DEAD_SERVICE_ERRORS:
            raise
    with contextlib.suppress(Exception):
        wandb.teardown()  # forget the dead process; the next init starts a new one
    return wandb.init(**arguments)


def _set_by_user(user_settings: Any, name: str) -> bool:
    if isinstance(user_settings, Mapping):
        return name in user_settings
    return user_settings is not None and name in getattr(user_settings, "model_fields_set", ())


def _share(settings: Any, plan: OpenPlan, user_settings: Any) -> None:
    """W&B's shared mode: every writer logs into the one run; only the scope's rank 0 (the primary)
    owns its lifecycle, so another writer finishing first does not mark the run finished, and each
    writer's system metrics carry its own label."""
    settings.mode = "shared"
    sharing = plan.sharing
    if not _set_by_user(user_settings, "x_primary"):
        settings.x_primary = sharing.primary
    if not _set_by_user(user_settings, "x_update_finish_state"):
        settings.x_update_finish_state = sharing.primary
    if not _set_by_user(user_settings, "x_label"):
        settings.x_label = re.sub(r"[^A-Za-z0-9._-]+", "-", sharing.writer).strip("-")[:_MAX_LABEL] or None


def _execution_group(plan: OpenPlan) -> str | None:
    """The W&B group of a remote run: its Flyte execution (``None`` locally: W&B groups nothing)."""
    context = plan.context
    return context.execution_name if context.is_remote and context.execution_name else None


def _job_type(plan: OpenPlan) -> str | None:
    """The W&B job type: the task's short name in a pod, the decorated function's locally."""
    name = plan.context.task_name or plan.function
    return name.rsplit(".", 1)[-1][:_MAX_JOB_TYPE] if name else None


def _sync_command(sync_dir: str, run_id: str, plan: OpenPlan) -> str:
    """``wandb sync`` for an offline run, under its intended id when it had to take another."""
    if plan.after_online_failure and run_id.endswith(_OFFLINE_SUFFIX):
        intended = run_id[: -len(_OFFLINE_SUFFIX)]
        return f"wandb sync --id {shlex.quote(intended)} {shlex.quote(sync_dir)}"
    return f"wandb sync {shlex.quote(sync_dir)}"


_ONLINE_OPEN = threading.Lock()
LOG_FLUSH_TIMEOUT = 15.0
"""How long closing waits, at most, for wandb-core to write the run's transaction log out."""
_LOG_HEADER = b":W&B"
_LOG_HEADER_SIZE = 7
_LOG_BLOCK = 32768
_CHUNK = struct.Struct("<IHB")  # crc32, length, type (FULL=1, FIRST=2, MIDDLE=3, LAST=4)


def _tail_has_exit_record(path: Path) -> bool | None:
    """Whether the last two blocks of a ``run-*.wandb`` log hold the exit record W&B writes last.

    None when the file is missing or not a log this reader knows (then nobody should wait for it).
    """
    try:
        with path.open("rb") as file:
            header = file.read(_LOG_HEADER_SIZE)
            size = file.seek(0, os.SEEK_END)
            start = max(0, (size // _LOG_BLOCK - 1) * _LOG_BLOCK)
            file.seek(start)
            data = file.read()
    except FileNotFoundError:
        return None
    if len(header) < _LOG_HEADER_SIZE:
        return False  # created, not written yet
    if header[: len(_LOG_HEADER)] != _LOG_HEADER:
        return None
    return any(record.HasField("exit") for record in _records_in(data, start))


_MAX_RECORD_BYTES = 64 * 1024 * 1024  # a longer "record" is a corrupt length: stop reading there


def _log_records(path: Path) -> Iterator[Any]:
    """Every record of a ``run-*.wandb`` transaction log, in order."""
    data = path.read_bytes()
    if data[: len(_LOG_HEADER)] != _LOG_HEADER:
        raise ValueError(f"{path} is not a W&B transaction log")
    yield from _records_in(data, 0)


def _records_in(data: bytes, start: int) -> Iterator[Any]:
    """The complete records in ``data``: a log's bytes from file offset ``start`` (0, or a block boundary,
    where a record may begin mid-way: its pieces are skipped). Stops where the log is still being
    written; a torn record is skipped."""
    from wandb.proto import wandb_internal_pb2

    offset = _LOG_HEADER_SIZE if start == 0 else 0
    pieces: list[bytes] | None = None
    while offset + _CHUNK.size <= len(data):
        room = _LOG_BLOCK - (start + offset) % _LOG_BLOCK
        if room < _CHUNK.size:  # block trailer
            offset += room
            continue
        checksum, length, kind = _CHUNK.unpack_from(data, offset)
        if checksum == 0 and length == 0 and kind == 0:  # preallocated, never written
            return
        payload = data[offset + _CHUNK.size : offset + _CHUNK.size + length]
        if len(payload) < length:  # still being written
            return
        offset += _CHUNK.size + length
        if kind in (1, 2):
            pieces = [payload]
        elif kind in (3, 4) and pieces is not None:
            pieces.append(payload)
            if sum(map(len, pieces)) > _MAX_RECORD_BYTES:
                return
        else:
            pieces = None
            continue
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(b"".join(pieces))
            except Exception:  # a torn or partial record: keep scanning
                continue
            finally:
                pieces = None
            yield record


def _item_key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else str(item.key)


def _scalar(item: Any) -> float | None:
    """The number a history item holds (None for text, media, tables...)."""
    value: Any = None
    try:
        if item.HasField("integer") or item.HasField("number"):  # typed fields of newer clients
            value = item.integer if item.HasField("integer") else item.number
        else:
            value = json.loads(item.json if item.HasField("json") else item.value_json)
    except ValueError:  # not a field of this client's protocol, or not JSON
        try:
            value = json.loads(item.value_json)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _flatten(value: Any, prefix: str, into: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, child in value.items():
            _flatten(child, f"{prefix}/{key}" if prefix else str(key), into)
    else:
        into[prefix] = value if isinstance(value, str) else json.dumps(value, default=str)


def _read_run_log(path: Path) -> tuple[dict[str, list[tuple[float, float]]], dict[str, str], list[str]]:
    """The scalar series, flattened config (W&B's own ``_wandb`` entry left out) and tags a run's
    transaction log records."""
    series: dict[str, list[tuple[float, float]]] = {}
    config: dict[str, Any] = {}
    tags: list[str] = []
    for record in _log_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            tags = list(record.run.tags)
            for item in record.run.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_item_key(item)] = json.loads(item.value_json)
            for item in record.config.remove:
                config.pop(_item_key(item), None)
        elif kind == "history":
            items = {_item_key(item): item for item in record.history.item}
            step_item = items.get("_step")
            step = _scalar(step_item) if step_item is not None else None
            if step is None:
                step = float(record.history.step.num)
            for key, item in items.items():
                if key.startswith("_"):
                    continue
                value = _scalar(item)
                if value is not None:
                    series.setdefault(key, []).append((step, value))
    flat: dict[str, str] = {}
    _flatten({key: value for key, value in config.items() if key != "_wandb"}, "", flat)
    return series, flat, tags


def _logged(handle: Run) -> dict[str, Any]:
    """What the run's transaction log holds, as RunInfo fields; a note instead when unreadable."""
    try:
        settings = handle.settings
        if getattr(settings, "x_skip_transaction_log", False):
            return {"note": "W&B was told to keep no transaction log: see the run's page for what was logged"}
        path = Path(str(settings.sync_file))
        series, config, tags = _read_run_log(path)
    except Exception as error:  # the deck still shows the run
        return {"note": f"The logged values could not be read ({type(error).__name__})"}
    return {"series": series, "config": config, "tags": tags}


def _wait_for_exit_record(path: Path, *, timeout: float) -> bool:
    """Wait (bounded) until wandb-core has written the run's transaction log out.

    False when the wait timed out (the log may be incomplete); True otherwise, also when the log
    is in a format this reader does not know (then there is nothing to wait for).
    """
    deadline = time.monotonic() + timeout
    pause = 0.001  # the flush usually lands within milliseconds: poll fast, then back off
    try:
        while _tail_has_exit_record(path) is False:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    except Exception:  # W&B changed its log format: do not hold the task up
        return True
    return True


def _session_auth() -> Any:
    """W&B's process-wide session credentials, to put back after opening a run (None if unknown)."""
    try:
        from wandb.sdk.lib.wbauth import authenticate

        return (True, authenticate._session_auth)
    except Exception:  # wandb changed its internals: nothing we can restore
        return (False, None)


def _restore_session_auth(saved: tuple[bool, Any]) -> None:
    """Undo what ``wandb.init(settings=Settings(api_key=...))`` leaves in the process: no global login."""
    known, previous = saved
    if not known:
        return
    try:
        from wandb.sdk.lib.wbauth import authenticate

        with authenticate._session_auth_lock:
            if authenticate._session_auth is not previous:
                authenticate._locked_set_session_auth(previous)
    except Exception:  # wandb changed its internals: the run itself is unaffected
        return


def _make_global_if_free(run: Run) -> None:
    """Make ``run`` the global ``wandb.run`` (so ``wandb.log`` and W&B's callbacks work, as with
    flytekitplugins-wandb) unless another run already is; ``run.finish()`` clears it again."""
    try:
        import wandb
        from wandb.sdk.wandb_init import _set_global_run

        if wandb.run is None:
            _set_global_run(run)
    except Exception:  # wandb changed its internals: the yielded run and current_run still work
        return


wandb_session = WandbSession
"""The public name of :class:`WandbSession`: ``with wandb_session(...) as handle:``."""


class wandb_init(SessionDecorator, session=WandbSession):  # lowercase: the name flytekitplugins-wandb users import
    """The decorator shortcut: ``@wandb_init(project=..., entity=..., secret=...)`` below ``@task``.

    Same parameters, in the same order, as flytekitplugins-wandb's ``wandb_init``, so migrating is an
    import change; unlike it, ``project``, ``entity`` and ``secret`` are optional (runs go offline
    without a key). Every call of the task runs inside a :func:`wandb_session`. ``dir`` may be a
    path, a ``FlyteDirectory``, or the name of a task parameter holding either.
    """

    WANDB_PROJECT_KEY = "project"
    WANDB_ENTITY_KEY = "entity"
    WANDB_ID_KEY = "id"
    WANDB_HOST_KEY = "host"

    def _make_session(self, **kwargs: Any) -> WandbSession:
        directory = kwargs.get("dir")
        # A FlyteDirectory, or a str that may name a task parameter, is resolved per call.
        # (A FlyteDirectory is os.PathLike too, but reading its path downloads it: not at import time.)
        self._dynamic_dir = isinstance(directory, str) or callable(getattr(directory, "download", None))
        if self._dynamic_dir:
            kwargs = {key: value for key, value in kwargs.items() if key != "dir"}
        elif directory is not None and not isinstance(directory, os.PathLike):
            raise TypeError(
                f"wandb_init: dir={directory!r} is not accepted; pass a path, a FlyteDirectory, "
                "or the name of a task parameter holding one"
            )
        self._dir_spec = directory
        return WandbSession(**kwargs)

    def _session_for_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> WandbSession:
        session: WandbSession = self.session  # type: ignore[assignment]
        if not self._dynamic_dir:
            return session
        value: Any = self._dir_spec
        if isinstance(value, str):
            bound = _bind(self.task_function, args, kwargs)
            value = bound.get(value, value)  # a parameter's value, else the str is a path
            if value is None:  # an optional parameter left out: the default directory
                return session
        if callable(getattr(value, "download", None)):
            value = value.download()
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(
                f"wandb_init: dir={self._dir_spec!r} gave {type(value).__name__}; expected a path or a FlyteDirectory"
            )
        return session._replace(directory=Path(value))

    def get_extra_config(self) -> dict[str, str]:
        """What flytekitplugins-wandb attaches to the task, so Flyte console W&B links keep working."""
        # The workflow's defaults where registration sets them (FLYTE_CTX_TRACKING_PROJECT...).
        session: WandbSession = self.session._with_defaults()  # type: ignore[assignment]
        config: dict[str, str] = {self.WANDB_HOST_KEY: session.host}
        if session.project is not None:  # optional here, unlike in flytekitplugins-wandb
            config[self.WANDB_PROJECT_KEY] = session.project
        if session.entity is not None:
            config[self.WANDB_ENTITY_KEY] = session.entity
        if session.run_mode == "nested" or session.rank_scope in ("worker", "rank"):
            # No run is named after the pod: link the execution's group, where every run of it is.
            config[self.LINK_TYPE_KEY] = WANDB_GROUP_TYPE_VALUE
        elif session.id is not None:
            config[self.WANDB_ID_KEY] = session.id
            config[self.LINK_TYPE_KEY] = WANDB_CUSTOM_TYPE_VALUE
        elif session.run_mode == "shared":
            config[self.LINK_TYPE_KEY] = WANDB_SHARED_TYPE_VALUE
        else:
            config[self.LINK_TYPE_KEY] = WANDB_EXECUTION_TYPE_VALUE
        return config


def _bind(function: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name (flytekit passes task inputs as keywords)."""
    if function is None:
        return dict(kwargs)
    try:
        return dict(inspect.signature(function).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return dict(kwargs)
