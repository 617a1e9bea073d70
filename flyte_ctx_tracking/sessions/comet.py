"""Comet: ``comet_session`` (a block, a task, or a decorator) and the ``comet_ml_login`` shortcut.

The session starts a Comet experiment with ``comet_ml.start`` and ends it; inside the block it is
what ``comet_ml.get_running_experiment()`` and ``current_run("comet")`` return. Everything that is
not Comet-specific (lifecycle, reentrancy, modes, secrets, ranks, decks) lives in the session core.

Comet-specific decisions, each documented in ``docs/comet.md``:

* identity: in remote runs with no key, the experiment key is flytekitplugins-comet-ml's (the pod
  name without dashes plus a 10-character suffix) whenever Comet accepts it, so Flyte console
  Comet links keep working; only where Comet would reject it is a valid key derived
  deterministically instead (:func:`flyte_experiment_key`);
* Comet's own settings fill what the code leaves out: ``COMET_PROJECT_NAME`` and
  ``COMET_WORKSPACE`` (keys and console links use them too), ``COMET_OFFLINE_DIRECTORY``, and
  ``COMET_START_ONLINE`` / ``COMET_AUTO_LOG_DISABLE`` for a session left at ``mode="auto"``;
* one experiment per process: comet_ml ends the running experiment when another one starts, so a
  different Comet session entered while one is open does not start (it follows ``on_error``);
* run modes: ``new`` (an experiment per task or block, as flytekitplugins-comet-ml keys it) and
  ``shared`` (every writer opens the one experiment whose key the execution derives, with
  ``get_or_create``; offline, every writer's archive carries that key, and uploading them appends
  them into one experiment). What differs per writer goes under ``flyte/writers/<writer>/``;
* a failed block is recorded in the experiment itself: ``flyte/status`` = ``failed`` and the
  error in "others", and Comet's own crash report (``customer_error_reported`` in the offline
  archive, the "crashed" state once uploaded);
* ending an experiment: system metrics sampling (CPU, network, disk) is off unless asked for,
  because stopping its thread costs up to ~1.1 s for every experiment.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import re
import threading
import uuid
import zipfile
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .._decorator import SessionDecorator
from .._defaults import TrackingDefaults
from .._fields import flyte_fields, writer_label, writer_prefix
from .._offline import OfflineRun, Progress, UploadTarget
from .._preserve import relative_to_data
from .._secrets import SecretSpec, redact
from .._session import OpenPlan, RunInfo, SessionUnavailable, TrackingSession, describe_exception, warn
from .._termination import Terminated
from .._validate import check_str, check_str_list, check_url, file_stem

if TYPE_CHECKING:
    from comet_ml import ExperimentConfig
    from comet_ml.experiment import CometExperiment

__all__ = ["CometSession", "_comet_ml_login_class", "comet_ml_login", "comet_session"]

DEFAULT_HOST = "https://www.comet.com"
COMET_REDIRECT = "https://www.comet.com/api/experiment/redirect?experimentKey="
COMET_ML_EXECUTION_TYPE_VALUE = "comet-ml-execution-id"
COMET_ML_CUSTOM_TYPE_VALUE = "comet-ml-custom-id"
COMET_ML_SHARED_TYPE_VALUE = "comet-ml-shared-id"
"""The console link of a shared experiment: ``{executionName}{link_suffix}`` (see docs/comet.md)."""
SHARED_FOLDER = "shared"
"""Where offline archives of shared experiments go, one folder per writer, under the data directory."""

# Comet accepts experiment keys that are alphanumeric and 32 to 50 characters long.
_VALID_KEY = re.compile(r"^[A-Za-z0-9]{32,50}$")
_KEY_MIN, _KEY_MAX = 32, 50

# Comet's own settings the session honours: (config name, environment variable). comet_ml reads each
# from the variable first, then from its config files (./.env, ~/.comet.config, ./.comet.config).
_PROJECT_SETTING = ("comet.project_name", "COMET_PROJECT_NAME")
_WORKSPACE_SETTING = ("comet.workspace", "COMET_WORKSPACE")
_ONLINE_SETTING = ("comet.start.online", "COMET_START_ONLINE")  # comet_ml.start's `online`
_DISABLE_SETTING = ("comet.auto_log.disable", "COMET_AUTO_LOG_DISABLE")  # ExperimentConfig's `disabled`
_OFFLINE_DIRECTORY_VARIABLE = "COMET_OFFLINE_DIRECTORY"

# The keyword arguments comet_ml 3.58's ExperimentConfig accepts (tests check this list against the
# installed client). Kept here so that a bad keyword fails at construction without importing comet_ml.
_EXPERIMENT_CONFIG_KWARGS = frozenset(
    {
        "disabled",
        "log_code",
        "log_graph",
        "parse_args",
        "display_summary_level",
        "log_git_metadata",
        "log_git_patch",
        "log_env_details",
        "log_env_gpu",
        "log_env_host",
        "log_env_cpu",
        "log_env_network",
        "log_env_disk",
        "auto_output_logging",
        "auto_param_logging",
        "auto_metric_logging",
        "auto_log_co2",
        "auto_metric_step_rate",
        "auto_histogram_epoch_rate",
        "auto_histogram_gradient_logging",
        "auto_histogram_activation_logging",
        "auto_histogram_tensorboard_logging",
        "auto_histogram_weight_logging",
        "distributed_node_identifier",
        "name",
        "tags",
    }
)
# What else reaches comet_ml.start: its `mode` ("get_or_create", "get", "create") under a name that
# does not clash with the session's own `mode`, and `source`.
_START_KWARGS = {"start_mode": "mode", "source": "source"}
_REJECTED_KWARGS = {
    "api_key": "pass secret= (a flytekit Secret or a callable); a key in code would leak",
    "online": "pass mode='online' or mode='offline'",
    "project": "pass project_name=",
}
# System metrics sampling whose thread costs up to ~1.1 s to stop at the end of every experiment.
_SAMPLED_SYSTEM_METRICS = ("log_env_cpu", "log_env_network", "log_env_disk")
# comet_ml.start's mode that lets several writers open one experiment.
_GET_OR_CREATE = "get_or_create"
# comet_ml runs one experiment per process, and starting one ends the one running: sessions take
# turns, atomically, so that a second experiment (in another thread) is refused instead.
_TURN_LOCK = threading.Lock()
_EXPERIMENT_TURN: dict[str, Any] = {}  # "turn": the open holding it, "experiment": what it started


def _take_turn(turn: int, running: Any) -> None:
    """Take the process's one experiment for the open ``turn``, or raise ``SessionUnavailable``."""
    with _TURN_LOCK:
        holder = _EXPERIMENT_TURN.get("turn")
        if holder is None and running is not None and not running.ended:
            busy = f"Comet experiment {running.get_key()} is still running in this process"
        elif holder is not None and holder != turn:
            busy = (
                "another Comet session's experiment is still running in this process (an outer block, another thread)"
            )
        else:
            _EXPERIMENT_TURN.clear()
            _EXPERIMENT_TURN["turn"] = turn
            return
    raise SessionUnavailable(
        f"{busy}, and comet_ml runs one experiment per process (starting another would end it). End it "
        "first, or enter the same session (same project_name, workspace and experiment_key) to log into it"
    )


def _end_turn(turn: int, experiment: Any) -> None:
    """Give the turn back, unless another experiment of the same open took it over since (an
    abandoned online attempt closing late must not end its offline retry's turn)."""
    with _TURN_LOCK:
        mine = _EXPERIMENT_TURN.get("experiment")
        if _EXPERIMENT_TURN.get("turn") == turn and (mine is None or mine is experiment):
            _EXPERIMENT_TURN.clear()


def link_suffix(project_name: str | None, workspace: str | None) -> str:
    """The 10-character suffix flytekitplugins-comet-ml appends to experiment keys and console links.

    The first 5 bytes of SHAKE-256 over ``"{project_name}-{workspace}"``, as hex.
    """
    return hashlib.shake_256(f"{project_name}-{workspace}".encode()).hexdigest(5)


def is_valid_experiment_key(key: object) -> bool:
    """True when Comet accepts ``key`` as an experiment key: alphanumeric, 32 to 50 characters."""
    return isinstance(key, str) and _VALID_KEY.match(key) is not None


def plugin_experiment_key(pod_name: str, project_name: str | None, workspace: str | None) -> str:
    """flytekitplugins-comet-ml's experiment key for a pod: the pod name without its dashes, then
    :func:`link_suffix`. Flyte console Comet links (``link_type="comet-ml-execution-id"``) are
    built the same way. Not always a key Comet accepts: see :func:`is_valid_experiment_key`."""
    return pod_name.replace("-", "") + link_suffix(project_name, workspace)


def shared_link_suffix(project_name: str | None, workspace: str | None) -> str:
    """What follows the execution name in the key of an execution's shared experiment (and in its
    console link, ``link_type="comet-ml-shared-id"``): 12 hex characters of SHAKE-256 over
    ``"shared-{project_name}-{workspace}"``, so that Flyte's 20-character execution names make a
    32-character key, the shortest Comet accepts."""
    return hashlib.shake_256(f"shared-{project_name}-{workspace}".encode()).hexdigest(6)


def shared_experiment_key(shared_id: str, project_name: str | None, workspace: str | None) -> str:
    """The key every writer of a shared experiment derives from its shared identity.

    ``{shared_id}{shared_link_suffix}`` when Comet accepts it (an execution's name, 20 to 38
    alphanumeric characters, as Flyte generates them): a console link can compute it from
    ``{{ .executionName }}``. Otherwise (a worker's identity ``<execution>-worker1``, a local one,
    a custom execution name with dashes) a key derived from the identity, as
    :func:`flyte_experiment_key` derives them: valid, and the same in every writer.
    """
    key = shared_id + shared_link_suffix(project_name, workspace)
    if is_valid_experiment_key(key):
        return key
    return flyte_experiment_key(f"shared|{shared_id}", project_name, workspace)


def flyte_experiment_key(
    run_id: str, project_name: str | None, workspace: str | None, *, pod_name: str | None = None
) -> str:
    """The experiment key of a remote run with no key given.

    When ``run_id`` is the pod's own name (``pod_name``) and flytekitplugins-comet-ml's key for it
    (:func:`plugin_experiment_key`) is one Comet accepts, this is that key, whatever the pod name
    looks like (hashed or named node ids, map-task indexes, retries, replica suffixes), so Flyte
    console Comet links keep pointing at the experiment. Like the plugin's, two pod names that
    differ only by where their dashes are get the same key.

    Otherwise (a pod name whose key would be too short, too long or not alphanumeric, a per-rank
    run id, no pod name) the key is derived from the whole run id: its first 20 alphanumeric
    characters, then hex characters of SHA-256 over the run id, project and workspace, 50 in all.
    It is always valid, stable for the same run id, and distinct per run id.
    """
    if pod_name is not None and run_id == pod_name:
        key = plugin_experiment_key(pod_name, project_name, workspace)
        if is_valid_experiment_key(key):
            return key
    readable = re.sub(r"[^A-Za-z0-9]", "", run_id)[:20]
    digest = hashlib.sha256(f"{run_id}|{project_name}-{workspace}".encode()).hexdigest()
    return (readable + digest)[:_KEY_MAX]


def _comet_config() -> Any:
    """comet_ml's settings (re-read on every call, as comet_ml does), or None when comet_ml is not installed."""
    if importlib.util.find_spec("comet_ml") is None:
        return None
    from comet_ml.config import get_config

    return get_config()


def _comet_setting(setting: tuple[str, str]) -> Any:
    """One of Comet's own settings as comet_ml reads it: its environment variable, else its config
    files; None when unset. Without comet_ml installed, the environment variable alone. Raises
    what comet_ml raises for a value it cannot parse."""
    name, variable = setting
    config = _comet_config()
    value = os.environ.get(variable) if config is None else config[name]
    if isinstance(value, str):
        return value.strip() or None
    return value


def _comet_switch_on(setting: tuple[str, str]) -> bool:
    """True when one of Comet's boolean settings is set and true (an unreadable one is not)."""
    try:
        return _comet_setting(setting) is True
    except Exception:
        return False


def _comet_name(setting: tuple[str, str]) -> str | None:
    """A project or workspace name from Comet's settings (the variable alone if its config is unreadable)."""
    try:
        value = _comet_setting(setting)
    except Exception:  # a broken config file: comet_ml itself reads the variable first
        value = os.environ.get(setting[1], "").strip() or None
    return None if value is None else str(value)


def comet_target(project_name: str | None, workspace: str | None) -> tuple[str | None, str | None]:
    """The project and workspace an experiment goes to: the ones given, else Comet's own settings
    (``COMET_PROJECT_NAME``, ``COMET_WORKSPACE``, or Comet's config files), else None (Comet's
    defaults). Experiment keys and console links are computed from these, so they match."""
    return (
        project_name if project_name is not None else _comet_name(_PROJECT_SETTING),
        workspace if workspace is not None else _comet_name(_WORKSPACE_SETTING),
    )


def _chose_offline_directory(experiment_config: ExperimentConfig) -> bool:
    """True when an ExperimentConfig's offline directory was chosen in code: neither comet_ml's default
    nor Comet's own setting (``COMET_OFFLINE_DIRECTORY``, which ranks below FLYTE_CTX_TRACKING_DIR)."""
    if experiment_config.has_default_offline_directory():
        return False
    try:
        configured = _comet_config().get_comet_offline_directory()
    except Exception:
        return True
    return bool(experiment_config.offline_directory != configured)


def _marked_key(key: str, suffix: str) -> str:
    """A user-given key made distinct per worker or rank: ``-worker1`` appends ``w1``, ``-rank3``
    appends ``r3`` (cutting the key to Comet's 50 characters first); "" keeps it."""
    if not suffix:
        return key
    scoped = re.fullmatch(r"-(worker|rank)(\d+)", suffix)
    marker = f"{scoped.group(1)[0]}{scoped.group(2)}" if scoped else re.sub(r"[^A-Za-z0-9]", "", suffix)
    return key[: _KEY_MAX - len(marker)] + marker


class CometSession(
    TrackingSession["CometExperiment"], kind="comet", display_name="Comet", backend="comet_ml", extra="comet"
):
    """A Comet experiment around a block: ``with comet_session(...) as experiment:``.

    The block gets the real ``comet_ml`` experiment, started with ``comet_ml.start`` and ended when
    the block exits (as failed when it raises); inside, ``comet_ml.get_running_experiment()`` and
    ``current_run("comet")`` return it. Also usable as ``async with`` and as a decorator.

    Args:
        project_name: the Comet project. None: ``COMET_PROJECT_NAME`` (or Comet's config file), else
            Comet's default.
        workspace: the Comet workspace. None: ``COMET_WORKSPACE`` (or Comet's config file), else
            Comet's default.
        secret: a flytekit ``Secret`` or a callable holding the API key. The key is given to this
            experiment only: no ``comet_ml.login``, no config file, no environment variable.
        experiment_key: the experiment's key (alphanumeric, 32-50 characters). None: in remote runs
            the key flytekitplugins-comet-ml derives from the pod name (a derived one where Comet
            would reject that); locally a fresh one; with ``run_mode="shared"``, the key the
            execution derives (:func:`shared_experiment_key`). A worker's or rank's experiment
            appends ``w<N>`` or ``r<N>`` to a key you give (except rank 0's new one).
        host: the Comet server, used for Flyte console links (``get_extra_config``).
        offline_directory: where offline archives go (Comet's name for ``directory``; default
            ``$FLYTE_CTX_TRACKING_DIR/comet``, else ``COMET_OFFLINE_DIRECTORY``, else
            ``./.flyte-ctx-tracking/comet``; a shared experiment's writers each write a folder
            of their own under ``shared/``).
        experiment_config: a ``comet_ml.ExperimentConfig``, instead of its keyword arguments.
        **login_kwargs: the shared options below, ``comet_ml.ExperimentConfig`` arguments (``tags``,
            ``name``, ``log_code``, ``auto_metric_logging``, ``log_env_cpu``...), ``start_mode``
            (comet_ml.start's ``mode``) and ``source``.

    Raises:
        ValueError: an experiment key Comet would reject, an unknown ``mode`` or ``on_error``.
        TypeError: an unknown keyword argument, or a secret of an unsupported type.
    """

    credential_sources: ClassVar[str] = "COMET_API_KEY is not set and there is no saved `comet login`"
    # comet_ml.start(mode="get_or_create") lets several writers open one experiment, offline too: each
    # writes an archive with the experiment's key, and uploading them appends them into one experiment.
    run_modes: ClassVar[Mapping[str, tuple[str, ...]]] = {"online": ("new", "shared"), "offline": ("new", "shared")}
    telemetry_off: ClassVar[Mapping[str, str]] = {"COMET_ERROR_TRACKING_ENABLE": "false"}
    project_name: str | None
    workspace: str | None
    experiment_key: str | None
    host: str
    experiment_config: ExperimentConfig | None

    def __init__(
        self,
        project_name: str | None = None,
        workspace: str | None = None,
        secret: SecretSpec = None,
        experiment_key: str | None = None,
        host: str = DEFAULT_HOST,
        *,
        offline_directory: str | os.PathLike[str] | None = None,
        experiment_config: ExperimentConfig | None = None,
        **login_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if offline_directory is not None:
            if "directory" in login_kwargs:
                raise TypeError(f"{owner}: pass offline_directory= or directory=, not both")
            login_kwargs["directory"] = offline_directory
        login_kwargs = self._take_options(login_kwargs, secret=secret)
        check_str(owner, "project_name", project_name, non_empty=True)
        check_str(owner, "workspace", workspace, non_empty=True)
        if experiment_key is not None and not is_valid_experiment_key(experiment_key):
            raise ValueError(
                f"{owner}: experiment_key={experiment_key!r} is not accepted by Comet; an experiment key must be "
                "alphanumeric (A-Z, a-z, 0-9) and 32 to 50 characters long, or None to let the session choose one"
            )
        check_url(owner, "host", host)
        start_kwargs: dict[str, Any] = {}
        config_kwargs: dict[str, Any] = {}
        for name, value in login_kwargs.items():
            if name in _REJECTED_KWARGS:
                raise TypeError(f"{owner}: {name}= is not accepted; {_REJECTED_KWARGS[name]}")
            if name in _START_KWARGS:
                start_kwargs[_START_KWARGS[name]] = value
            elif name in _EXPERIMENT_CONFIG_KWARGS:
                config_kwargs[name] = value
            else:
                accepted = ", ".join(sorted({*_EXPERIMENT_CONFIG_KWARGS, *_START_KWARGS}))
                raise TypeError(f"{owner}: unknown keyword argument {name}=; Comet accepts: {accepted}")
        if "tags" in config_kwargs:
            config_kwargs["tags"] = check_str_list(owner, "tags", config_kwargs["tags"]) or []
        start_mode = start_kwargs.get("mode")
        if self.run_mode == "shared" and start_mode not in (None, _GET_OR_CREATE):
            raise ValueError(
                f"{owner}: start_mode={start_mode!r} contradicts run_mode='shared', whose writers open the "
                f"experiment with start_mode={_GET_OR_CREATE!r}; pass one of them"
            )
        if experiment_config is not None:
            if config_kwargs:
                raise TypeError(
                    f"{owner}: pass either experiment_config= or its keyword arguments "
                    f"({', '.join(sorted(config_kwargs))}), not both"
                )
            if type(experiment_config).__name__ != "ExperimentConfig":
                raise TypeError(
                    f"{owner}: experiment_config={type(experiment_config).__name__} is not accepted; "
                    "pass a comet_ml.ExperimentConfig"
                )
            if self.directory is None and _chose_offline_directory(experiment_config):
                self.directory = Path(experiment_config.offline_directory)
        self._keep(locals())
        self.config_kwargs = config_kwargs
        self.start_kwargs = start_kwargs
        self.login_kwargs = {
            **config_kwargs,
            **{name: login_kwargs[name] for name in _START_KWARGS if name in login_kwargs},
        }

    # ------------------------------------------------------------------ core hooks
    def _reuse_key(self) -> Hashable:
        return (self.project_name, self.workspace, self.experiment_key)

    def _ambient_credentials(self) -> bool:
        return bool(self._known_secrets())

    def _known_secrets(self) -> tuple[str, ...]:
        from comet_ml.config import get_config

        return tuple(key for key in (os.environ.get("COMET_API_KEY"), get_config()["comet.api_key"]) if key)

    def _backend_mode(self) -> str | None:
        """Comet's own switches: ``COMET_AUTO_LOG_DISABLE`` (``comet.auto_log.disable``, an experiment
        that records nothing) -> ``"disabled"``; else ``COMET_START_ONLINE`` (``comet.start.online``,
        comet_ml.start's ``online``) -> ``"online"`` or ``"offline"``; unset -> None."""
        modes = ((_DISABLE_SETTING, "disabled", None), (_ONLINE_SETTING, "online", "offline"))
        for setting, when_true, when_false in modes:
            try:
                value = _comet_setting(setting)
            except Exception as error:  # a typo in a process-wide setting must not fail every task
                warn(
                    f"{type(self).__name__}: Comet's setting {setting[1]} ({setting[0]}) is not readable "
                    f"({describe_exception(error)}); it is ignored"
                )
                continue
            if value is True:
                return when_true
            if value is False and when_false is not None:
                return when_false
        return None

    def _backend_directory(self) -> str | None:
        """``COMET_OFFLINE_DIRECTORY`` (or ``comet.offline_directory`` in Comet's config files)."""
        config = _comet_config()
        if config is None:
            return os.environ.get(_OFFLINE_DIRECTORY_VARIABLE)
        from comet_ml.config import DEFAULT_OFFLINE_DATA_DIRECTORY

        directory = config.get_comet_offline_directory()
        if not isinstance(directory, str):
            return None
        # comet_ml returns its default (".cometml-runs") when nothing is set: that is not a setting.
        chosen = bool(os.environ.get(_OFFLINE_DIRECTORY_VARIABLE, "").strip())
        return directory if chosen or directory != DEFAULT_OFFLINE_DATA_DIRECTORY else None

    def _backend_defaults(self, defaults: TrackingDefaults) -> dict[str, Any]:
        """The workflow's project and entity as ``project_name`` and ``workspace`` where none is given
        (over ``COMET_PROJECT_NAME``/``COMET_WORKSPACE``); its tags after the session's own."""
        updates = defaults.fill(self, project="project_name", entity="workspace")
        if defaults.tags:
            if self.experiment_config is not None:
                config = copy.copy(self.experiment_config)
                config.tags = list(dict.fromkeys([*(config.tags or []), *defaults.tags]))
                updates["experiment_config"] = config
            else:
                tags = list(dict.fromkeys([*self.config_kwargs.get("tags", []), *defaults.tags]))
                updates["config_kwargs"] = {**self.config_kwargs, "tags": tags}
        return updates

    def target(self) -> tuple[str | None, str | None]:
        """The project and workspace this session's experiments go to (:func:`comet_target`)."""
        return comet_target(self.project_name, self.workspace)

    def experiment_key_for(self, plan: OpenPlan) -> str | None:
        """The key this session gives its experiment under ``plan`` (None: Comet generates one)."""
        return self._key_for(plan, *self.target())

    def _key_for(self, plan: OpenPlan, project_name: str | None, workspace: str | None) -> str | None:
        context, sharing = plan.context, plan.sharing
        shared = sharing.run_mode == "shared"
        # A new run of a worker or rank: rank 0 keeps the key it has with rank_scope="global" (the
        # console link's); the others' keys are their own.
        keeps_pods = not shared and context.rank == 0
        if self.experiment_key is not None:
            return self.experiment_key if keeps_pods else _marked_key(self.experiment_key, sharing.suffix)
        if plan.run_id is None:  # a new local run: a fresh key each time, as Comet makes them
            return None
        if shared:
            return shared_experiment_key(plan.run_id, project_name, workspace)
        run_id = (context.run_identity() or plan.run_id) if keeps_pods else plan.run_id
        return flyte_experiment_key(run_id, project_name, workspace, pod_name=context.pod_name)

    def _experiment_config(self, plan: OpenPlan) -> tuple[ExperimentConfig, bool]:
        """The ExperimentConfig for this experiment, and whether the session logs the code itself."""
        from comet_ml import ExperimentConfig

        if self.experiment_config is not None:
            config = copy.copy(self.experiment_config)
            config.tags = list(config.tags or [])
        else:
            config = ExperimentConfig(**self.config_kwargs)
        config.offline_directory = str(plan.directory)
        if plan.sharing.run_mode == "shared":
            label = writer_label(plan)
            if plan.mode == "offline":
                # comet_ml names the archive of a get_or_create experiment `<key>-<6 letters>.zip`, the
                # letters from `random`, which training code seeds alike in every rank: two writers in
                # one directory would write one file. A folder per writer keeps every archive.
                writer = plan.directory / SHARED_FOLDER / f"{file_stem(label, 'writer')}.{uuid.uuid4().hex[:8]}"
                writer.mkdir(parents=True, exist_ok=True)
                config.offline_directory = str(writer)
            if config.distributed_node_identifier is None:
                # Comet's own prefix for system metrics: each writer's CPU and GPU charts stay apart.
                config.distributed_node_identifier = label
        config.tags = plan.context.tags(config.tags)
        # Comet would log the first file outside comet_ml on the stack, which is this library's.
        log_code = config.log_code is not False
        config.log_code = False
        # Under a Flyte task, sys.argv are pyflyte-execute's arguments, not hyperparameters.
        if config.parse_args is None:
            config.parse_args = False
        if config.log_env_details is not True:
            for name in _SAMPLED_SYSTEM_METRICS:
                if getattr(config, name) is None:
                    setattr(config, name, False)
        return config, log_code

    def _open(self, plan: OpenPlan) -> CometExperiment:
        import comet_ml

        # The open's turn at the process's one experiment: an online attempt and its offline retry
        # share the execution context object, so the retry may take over an abandoned attempt's turn.
        turn = id(plan.context)
        running = comet_ml.get_running_experiment()
        _take_turn(turn, running)
        try:
            experiment = self._start(plan)
        except BaseException:
            # comet_ml registers an experiment as running before it fails to start it: end that
            # one, or every later Comet session in the process would be refused.
            started = comet_ml.get_running_experiment()
            with _TURN_LOCK:  # not an experiment the retry of an abandoned attempt started since
                ours = "experiment" not in _EXPERIMENT_TURN
            if ours and started is not None and started is not running and not started.ended:
                with contextlib.suppress(Exception):
                    started.end()
            _end_turn(turn, None)
            raise
        with _TURN_LOCK:  # an abandoned attempt returning late never replaces its retry's experiment
            _EXPERIMENT_TURN.setdefault("experiment", experiment)
        return experiment

    def _start(self, plan: OpenPlan) -> CometExperiment:
        import comet_ml

        config, log_code = self._experiment_config(plan)
        online = plan.mode == "online"
        project_name, workspace = self.target()  # once: the key and the experiment agree on them
        start_kwargs = dict(self.start_kwargs)
        if plan.sharing.run_mode == "shared":  # also over COMET_START_MODE: the first writer creates it
            start_kwargs["mode"] = _GET_OR_CREATE
        experiment = comet_ml.start(
            api_key=plan.api_key if online else None,
            workspace=workspace,
            project_name=project_name,
            experiment_key=self._key_for(plan, project_name, workspace),
            online=online,
            experiment_config=config,
            **start_kwargs,
        )
        try:
            if getattr(experiment, "disabled", False):
                # comet_ml disables every experiment while its own switch is on, whatever the mode.
                if not self.config_kwargs.get("disabled") and _comet_switch_on(_DISABLE_SETTING):
                    warn(
                        f"{type(self).__name__}: Comet's setting {_DISABLE_SETTING[1]} ({_DISABLE_SETTING[0]}) "
                        f"disabled this {plan.mode} experiment: Comet records nothing"
                    )
            elif online and not getattr(experiment, "alive", True):
                # comet_ml "starts" an experiment it could not register and logs nothing to it
                # ("Your experiment will not be logged"): that is a failed start.
                raise ConnectionError("Comet did not register the experiment with the server; nothing would be logged")
            experiment.log_others(flyte_fields(plan))
            if log_code and plan.source_file:  # the task's file, or the file of the `with` block
                experiment.log_code(file_name=plan.source_file)
        except BaseException:
            experiment.end()
            raise
        return experiment

    @classmethod
    def _find_offline(cls, root: Path) -> list[OfflineRun]:
        runs = []
        for archive in sorted(root.rglob("*.zip")):
            try:
                with zipfile.ZipFile(archive) as zipped:
                    complete = "experiment.json" in zipped.namelist()  # written when the experiment ends
            except (OSError, zipfile.BadZipFile):
                continue
            if complete:
                # A shared experiment's archives all start with its key: the writer's folder tells them apart.
                shared = archive.parent.parent.name == SHARED_FOLDER
                label = f"{archive.parent.name}/{archive.stem}" if shared else archive.stem
                runs.append(OfflineRun("comet", archive, label))
        return runs

    def _upload_target(self, key: str | None, options: Mapping[str, str]) -> UploadTarget | str:
        target = super()._upload_target(key, options)
        if isinstance(target, str):
            return target
        return UploadTarget(key=target.key, options={**options, **_upload_overrides(self, options)})

    def _upload_offline(self, run: OfflineRun, target: UploadTarget, progress: Progress) -> str | None:
        from comet_ml import offline
        from comet_ml.offline_utils import extract_experiment_key_from_offline_file

        accepted = offline.upload_single_offline_experiment(
            str(run.path),
            api_key=target.key,
            force_upload=False,
            display_level="info",
            override_workspace=target.options.get("workspace"),
            override_project_name=target.options.get("project_name"),
        )
        if not accepted:
            raise RuntimeError(f"Comet did not accept {run.path.name} (uploaded before, or refused: see its messages)")
        key = extract_experiment_key_from_offline_file(str(run.path))
        return f"{COMET_REDIRECT}{key}" if key else None

    def _offline_data(self, handle: CometExperiment, plan: OpenPlan) -> list[tuple[Path, str]]:
        archive = self.archive_path(handle) if plan.mode == "offline" else None  # what `comet upload` takes
        if archive is None or not archive.is_file():
            return []
        return [(archive, relative_to_data(archive, plan.directory))]  # a shared writer's folder included

    def _close(self, handle: CometExperiment, plan: OpenPlan, error: BaseException | None) -> None:
        # A shared experiment: each writer's outcome under its own name; the experiment's own
        # flyte/status only says "failed" (a later writer's success must not hide an earlier failure).
        shared = plan.sharing.run_mode == "shared"
        prefix = writer_prefix(plan)
        try:
            if error is None:
                handle.log_other(prefix + "status", "succeeded")
            else:
                detail = redact(describe_exception(error), *plan.secrets)[:2000]
                status = "terminated" if isinstance(error, Terminated) else "failed"
                outcome = {prefix + "status": status, prefix + "error": detail}
                if shared:
                    outcome["flyte/status"] = status
                handle.log_others(outcome)
                # What comet_ml's own excepthook does for an uncaught exception; flytekit catches the
                # task's exception first, so without this Comet would show the experiment as finished.
                report = getattr(handle, "_report_experiment_error", None)
                if callable(report):
                    report(f"The Flyte task block failed: {detail}", has_crashed=True)
        finally:
            try:
                handle.end()
            finally:
                _end_turn(id(plan.context), handle)

    def _log_metrics(self, handle: CometExperiment, metrics: Mapping[str, float | int]) -> None:
        handle.log_metrics(dict(metrics))

    def _run_info(self, handle: CometExperiment, plan: OpenPlan, error: BaseException | None) -> RunInfo:
        archive = self.archive_path(handle) if plan.mode == "offline" else None
        url: str | None = None
        if plan.mode == "online":
            url = getattr(handle, "url", None)
        project_name, workspace = self.target()
        name = self.config_kwargs.get("name") or getattr(self.experiment_config, "name", None)
        return RunInfo(
            backend=self.display_name,
            name=str(name) if name else handle.get_key(),
            fields={
                "experiment key": handle.get_key(),
                "project": handle.project_name or project_name,
                "workspace": handle.workspace or workspace,
                "mode": plan.mode,
                "status": "failed" if error is not None else ("finished" if handle.ended else "running"),
            },
            url=url,
            local_path=str(archive) if archive is not None else None,
            sync_command=f"comet upload {archive}" if archive is not None else None,
            failed=error is not None,
            status=f"failed with {type(error).__name__}" if error is not None else "finished",
            **_logged(handle, archive, plan.mode),
        )

    @staticmethod
    def archive_path(handle: CometExperiment) -> Path | None:
        """Where an offline experiment's ``.zip`` archive is (once ended) or will be written."""
        directory = getattr(handle, "offline_directory", None)
        name_of = getattr(handle, "_get_offline_archive_file_name", None)
        if not directory or not callable(name_of):
            return None
        return Path(directory) / str(name_of())


def _read_archive(path: Path) -> tuple[dict[str, list[tuple[float, float]]], dict[str, str], list[str]]:
    """The metric series, user parameters and tags an offline experiment's archive records."""
    with zipfile.ZipFile(path) as archive:
        experiment = json.loads(archive.read("experiment.json"))
        names = set(archive.namelist())
        messages = archive.read("messages.json").decode() if "messages.json" in names else ""
    series: dict[str, list[tuple[float, float]]] = {}
    parameters: dict[str, str] = {}
    for line in messages.splitlines():
        if not line.strip():
            continue
        message = json.loads(line)
        payload = message.get("payload") or {}
        if message.get("type") == "metric_msg":
            metric = payload.get("metric") or {}
            name, value = metric.get("metricName"), _number(metric.get("metricValue"))
            if not isinstance(name, str) or value is None:
                continue
            points = series.setdefault(name, [])
            step = _number(metric.get("step"))
            points.append((float(len(points)) if step is None else step, value))
        elif message.get("type") == "parameter_msg":
            param = payload.get("param") or {}
            name = param.get("paramName")
            if isinstance(name, str) and param.get("source") != "auto-logged":
                value = param.get("paramValue")
                parameters[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    tags = [str(tag) for tag in experiment.get("tags") or ()]
    return series, parameters, tags


def _number(value: Any) -> float | None:
    """A finite or non-finite number from a metric message (Comet may send numbers as text)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _logged(handle: CometExperiment, archive: Path | None, mode: str) -> dict[str, Any]:
    """What was logged, as RunInfo fields, read from the offline archive once the experiment ended."""
    if mode != "offline":
        tags: list[str] = []
        with contextlib.suppress(Exception):
            tags = [str(tag) for tag in handle.get_tags()]
        return {"tags": tags, "note": "Comet keeps no local copy of what was logged online: see the experiment's page"}
    if not getattr(handle, "ended", False):
        return {}
    try:
        if archive is None:
            raise FileNotFoundError("no offline archive")
        series, parameters, tags = _read_archive(archive)
    except Exception as error:  # the deck still shows the experiment
        return {"note": f"The logged values could not be read ({type(error).__name__})"}
    return {"series": series, "config": parameters, "tags": tags}


def _upload_overrides(session: CometSession, options: Mapping[str, str]) -> dict[str, str]:
    """The workspace and project an upload goes to: the options', else the session's defaults."""
    overrides = {
        "workspace": options.get("workspace") or session.workspace,
        "project_name": options.get("project_name") or session.project_name,
    }
    return {name: value for name, value in overrides.items() if value}


comet_session = CometSession
"""The public name of :class:`CometSession`: ``with comet_session(...) as handle:``."""


class comet_ml_login(SessionDecorator, session=CometSession):
    """The decorator shortcut: every call of the task runs inside a :func:`comet_session`.

    Takes flytekitplugins-comet-ml's parameters (also positionally), so migrating is an import
    change; the other keyword arguments are :func:`comet_session`'s (``tags``, ``mode``,
    ``on_error``...). Use it below ``@task``::

        @task(secret_requests=[COMET_SECRET])
        @comet_ml_login(project_name="fraud", workspace="ml-team", secret=COMET_SECRET)
        def train() -> float:
            current_run("comet").log_metric("loss", 0.12)
            return 0.12

    ``@comet_ml_login`` without arguments works too (Comet's default project and workspace).
    """

    COMET_ML_PROJECT_NAME_KEY = "project_name"
    COMET_ML_WORKSPACE_KEY = "workspace"
    COMET_ML_EXPERIMENT_KEY_KEY = "experiment_key"
    COMET_ML_URL_SUFFIX_KEY = "link_suffix"
    COMET_ML_HOST_KEY = "host"

    session: CometSession

    def get_extra_config(self) -> dict[str, str]:
        """What flytekitplugins-comet-ml returns, so Flyte console Comet links keep working.

        Project and workspace left out in code are read from the workflow's defaults and Comet's
        settings (``COMET_PROJECT_NAME``, ``COMET_WORKSPACE``) where this runs: flytekit calls it when
        the workflow is registered, so set them there as in the task's pod, or pass them in code.

        A shared experiment's link is ``link_type="comet-ml-shared-id"`` with its own ``link_suffix``
        (the key is the execution's name and that suffix); a shared experiment per worker or rank has
        no link (no one link points at all of them), and neither does a run mode the pod's
        environment alone chooses (``FLYTE_CTX_TRACKING_RUN_MODE`` set only there).
        """
        session = self.session._with_defaults()
        project_name, workspace = session.target()
        config: dict[str, str | None] = {
            self.COMET_ML_PROJECT_NAME_KEY: project_name,
            self.COMET_ML_WORKSPACE_KEY: workspace,
            self.COMET_ML_HOST_KEY: session.host,
        }
        # The plugin requires project and workspace; ours default to Comet's, which a link cannot name.
        extra = {name: value for name, value in config.items() if value is not None}
        if session.run_mode == "shared":
            if session.rank_scope not in (None, "global"):
                return extra
            if session.experiment_key is None:
                extra[self.COMET_ML_URL_SUFFIX_KEY] = shared_link_suffix(project_name, workspace)
                extra[self.LINK_TYPE_KEY] = COMET_ML_SHARED_TYPE_VALUE
                return extra
        if session.experiment_key is None:
            extra[self.COMET_ML_URL_SUFFIX_KEY] = link_suffix(project_name, workspace)
            extra[self.LINK_TYPE_KEY] = COMET_ML_EXECUTION_TYPE_VALUE
        else:
            extra[self.COMET_ML_EXPERIMENT_KEY_KEY] = session.experiment_key
            extra[self.LINK_TYPE_KEY] = COMET_ML_CUSTOM_TYPE_VALUE
        return extra


_comet_ml_login_class = comet_ml_login
"""flytekitplugins-comet-ml's name for the decorator class."""
