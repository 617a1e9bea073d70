"""Shared fixtures.

``pod_run`` runs a task module the way a Flyte pod runs it: flytekit's own ``pyflyte-execute``
entrypoint (remote mode), inputs as a LiteralMap file, and the environment a pod gets. Every
integration's end-to-end tests use it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# The backends' own telemetry (whylogs usage stats, comet_ml's and wandb's Sentry reports) would try
# to reach the internet; the suite runs with no network, so it is switched off for the whole run,
# pods included (they inherit this environment).
for _name, _value in {
    "WHYLOGS_NO_ANALYTICS": "1",
    "COMET_ERROR_TRACKING_ENABLE": "false",
    "WANDB_ERROR_REPORTING": "false",
}.items():
    os.environ.setdefault(_name, _value)

# MLflow's migrated empty store is kept in the user's cache folder; tests get a throwaway HOME each,
# so the suite shares one cache folder of its own (subprocesses and pods inherit it).
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="flyte-ctx-tracking-test-cache-"))

REPO = Path(__file__).resolve().parent.parent
EXECUTION_NAME = "ab3kq9x2m4n5p6r7s8t1"
NODE_ID = "n0"
# Variables that would make a test depend on the machine it runs on, or reach a network.
_SCRUBBED_ENV = (
    *("WANDB_API_KEY", "COMET_API_KEY", "NEPTUNE_API_TOKEN", "FLYTE_EXECUTION_URL", "HOSTNAME"),
    # The backends' own settings, which sessions honour: a developer's shell must not change results.
    *("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DISABLED", "NEPTUNE_MODE"),
    *("NEPTUNE_PROJECT", "COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME", "COMET_WORKSPACE", "COMET_START_ONLINE"),
)


# Modules whose tests must all run in one xdist worker: their module-scoped fixture is costly (a JVM
# for Spark). xdist's own `--dist loadgroup` cannot do it on pytest 9: it tags a test by rewriting
# `item._nodeid`, which pytest 9 no longer reads, so grouped tests still spread over the workers.
# Modules whose tests share something costly to start (a JVM, an `mlflow server`): each group runs in
# one worker, so that the session- or module-scoped fixture starts once.
ONE_WORKER_GROUPS = {
    "tests/test_whylogs_scale.py": "spark",
    "tests/test_mlflow.py": "mlflow_server",
    "tests/test_sync_mlflow.py": "mlflow_server",
    "tests/test_mlflow_sharing.py": "mlflow_server",
    "tests/test_wandb_sharing.py": "wandb_job",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With the default `--dist load`: each test is scheduled on its own, as `load` does, except the
    tests of each of ONE_WORKER_GROUPS, which go to one worker together (xdist's own `loadgroup`
    does not group on pytest 9)."""
    if config.getvalue("dist") != "load":
        return None  # another --dist asked for on the command line: xdist's own scheduler
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerPerListedModule(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return ONE_WORKER_GROUPS.get(nodeid.split("::", 1)[0], nodeid)

    return OneWorkerPerListedModule(config, log)


def _end_a_leftover_comet_experiment() -> None:
    """comet_ml runs one experiment per process: one an earlier test left running in this worker
    (an abandoned online attempt that started late) must not refuse this test's."""
    if "comet_ml" not in sys.modules:
        return
    import comet_ml

    from flyte_ctx_tracking.sessions import comet

    running = comet_ml.get_running_experiment()
    if running is not None and not running.ended:
        with contextlib.suppress(Exception):
            running.end()
    with comet._TURN_LOCK:
        comet._EXPERIMENT_TURN.clear()


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test writes under its own tmp dir and never under the repository."""
    root = tmp_path / "tracking"
    monkeypatch.setenv("FLYTE_CTX_TRACKING_DIR", str(root))
    monkeypatch.delenv("FLYTE_CTX_TRACKING_MODE", raising=False)
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    from flyte_ctx_tracking._defaults import DEFAULTS_ENV_VARS

    for name in DEFAULTS_ENV_VARS.values():  # a developer's workflow defaults would change results
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith(("FLYTE_INTERNAL_", "_FSEC_", "BATCH_JOB_ARRAY")):
            monkeypatch.delenv(name, raising=False)
    # Backends keep their own settings in $HOME: a throwaway home keeps tests from reading a
    # developer's logins and from writing next to them.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)
    from flyte_ctx_tracking import _session

    _session._NOTICES.clear()  # each test sees the once-per-process notices (offline, run modes, defaults)
    _end_a_leftover_comet_experiment()
    yield root


@dataclass
class PodRun:
    """What a pod run left behind."""

    returncode: int
    stdout: str
    stderr: str
    workdir: Path
    output_prefix: Path
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        """stdout and stderr together: everything the pod printed."""
        return self.stdout + self.stderr

    @property
    def deck_html(self) -> str | None:
        """The ``deck.html`` flytekit wrote to the output prefix, if decks were on."""
        path = self.output_prefix / "deck.html"
        return path.read_text(encoding="utf-8") if path.exists() else None

    @property
    def error(self) -> str | None:
        """The message of ``error.pb`` when the task failed."""
        path = self.output_prefix / "error.pb"
        if not path.exists():
            return None
        from flyteidl.core import errors_pb2

        document = errors_pb2.ErrorDocument()
        document.ParseFromString(path.read_bytes())
        return str(document.error.message)

    def files(self) -> Iterator[Path]:
        """Every file the run wrote under its working directory."""
        return (p for p in self.workdir.rglob("*") if p.is_file())


def _to_literal_map_file(inputs: Mapping[str, Any], path: Path) -> None:
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import LiteralMap

    ctx = FlyteContextManager.current_context()
    literals = {
        name: TypeEngine.to_literal(ctx, value, type(value), TypeEngine.to_literal_type(type(value)))
        for name, value in inputs.items()
    }
    path.write_bytes(LiteralMap(literals=literals).to_flyte_idl().SerializeToString())


def _primitive(literal: Any) -> Any:
    """A primitive literal's Python value; other literals are returned as they are."""
    scalar = literal.scalar
    if scalar is not None and scalar.primitive is not None:
        return scalar.primitive.value
    return literal


def _read_outputs(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    from flyteidl.core import literals_pb2
    from flytekit.models.literals import LiteralMap

    idl = literals_pb2.LiteralMap()
    idl.ParseFromString(path.read_bytes())
    return {name: _primitive(lit) for name, lit in LiteralMap.from_flyte_idl(idl).literals.items()}


PodRunner = Callable[..., PodRun]


def _pod_launch(
    workdir: Path,
    module: str,
    task_name: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    secrets: Mapping[tuple[str, str], str] | None = None,
    env: Mapping[str, str] | None = None,
    attempt: int = 0,
    node_id: str = NODE_ID,
    hostname: str | None = None,
    execution_url: str | None = None,
    output_prefix: Path | None = None,
) -> tuple[list[str], dict[str, str], Path]:
    """The ``pyflyte-execute`` command of a pod running ``module.task_name`` in ``workdir``, its
    environment, and its output prefix. The module file must be in ``workdir``."""
    output_prefix = output_prefix or workdir / "outputs"
    output_prefix.mkdir(parents=True, exist_ok=True)
    inputs_file = output_prefix / "inputs.pb"
    _to_literal_map_file(inputs or {}, inputs_file)

    pod_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE_INTERNAL_", "_FSEC_"))}
    pod_env.update(
        {
            # The task module, and the repository so that pod tasks can import test helpers.
            "PYTHONPATH": os.pathsep.join([str(workdir), str(REPO), pod_env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "FLYTE_INTERNAL_EXECUTION_ID": EXECUTION_NAME,
            "FLYTE_INTERNAL_EXECUTION_PROJECT": "flytesnacks",
            "FLYTE_INTERNAL_EXECUTION_DOMAIN": "development",
            "FLYTE_INTERNAL_EXECUTION_WORKFLOW": f"{module}.wf",
            "FLYTE_INTERNAL_EXECUTION_LAUNCHPLAN": f"{module}.wf",
            "FLYTE_INTERNAL_TASK_PROJECT": "flytesnacks",
            "FLYTE_INTERNAL_TASK_DOMAIN": "development",
            "FLYTE_INTERNAL_TASK_NAME": f"{module}.{task_name}",
            "FLYTE_INTERNAL_TASK_VERSION": "v1",
            "HOSTNAME": hostname or f"{EXECUTION_NAME}-{node_id}-{attempt}",
            "FLYTE_ATTEMPT_NUMBER": str(attempt),
            "FLYTE_CTX_TRACKING_DIR": str(workdir / "tracking"),
            "HOME": str(workdir / "home"),
        }
    )
    (workdir / "home").mkdir(exist_ok=True)
    if execution_url:
        pod_env["FLYTE_EXECUTION_URL"] = execution_url
    for (group, key), value in (secrets or {}).items():
        pod_env[f"_FSEC_{group.upper()}_{key.upper()}"] = value
    pod_env.update(env or {})

    entrypoint = Path(sys.executable).parent / "pyflyte-execute"
    command = [
        str(entrypoint),
        "--inputs",
        str(inputs_file),
        "--output-prefix",
        str(output_prefix),
        "--raw-output-data-prefix",
        str(workdir / "raw"),
        "--resolver",
        "flytekit.core.python_auto_container.default_task_resolver",
        "--",
        "task-module",
        module,
        "task-name",
        task_name,
    ]
    return command, pod_env, output_prefix


def _pod_result(workdir: Path, output_prefix: Path, returncode: int, stdout: str, stderr: str) -> PodRun:
    return PodRun(
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        workdir=workdir,
        output_prefix=output_prefix,
        outputs=_read_outputs(output_prefix / "outputs.pb"),
    )


@pytest.fixture
def pod_run(tmp_path: Path) -> PodRunner:
    """Run ``task_name`` from ``source`` (a module's text) through ``pyflyte-execute`` as a pod would.

    Keyword arguments: ``inputs`` (dict of primitives), ``secrets`` (``{(group, key): value}``,
    mounted as ``_FSEC_GROUP_KEY``), ``env`` (more variables), ``attempt``, ``node_id``,
    ``hostname`` (default ``{execution}-{node}-{attempt}``), ``execution_url``.
    """
    counter = iter(range(1_000_000))

    def run(
        source: str,
        task_name: str,
        *,
        execution_url: str
        | None = "https://flyte.example.com/console/projects/flytesnacks/domains/development/executions/"
        + EXECUTION_NAME,
        **options: Any,
    ) -> PodRun:
        workdir = tmp_path / f"pod{next(counter)}"
        workdir.mkdir()
        module = f"pod_tasks_{workdir.name}"
        (workdir / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        command, env, output_prefix = _pod_launch(workdir, module, task_name, execution_url=execution_url, **options)
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
        return _pod_result(workdir, output_prefix, done.returncode, done.stdout, done.stderr)

    return run


PodJob = Callable[..., list[PodRun]]


def run_pod_job(
    job: Path, source: str, task_name: str, *, nodes: int = 2, local_ranks: int = 2, **options: Any
) -> list[PodRun]:
    """Run ``task_name`` from ``source`` in the folder ``job`` as a torch elastic job does: ``nodes``
    pods (named as the training operator names them, ``<execution>-<node>-<attempt>-worker-<i>``),
    each running ``local_ranks`` processes through ``pyflyte-execute`` at once, with ``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` and ``GROUP_RANK`` set per process. A node's
    ranks share its pod's name and data directory. Returns one :class:`PodRun` per rank, in rank
    order (its ``workdir`` is its node's).

    Keyword arguments: those of ``pod_run`` (``env``, ``attempt``, ``node_id``...).
    """
    module = f"pod_tasks_{job.name}".replace("-", "_")
    node_id, attempt = options.pop("node_id", NODE_ID), options.get("attempt", 0)
    world = nodes * local_ranks
    started: list[tuple[Path, Path, subprocess.Popen[str]]] = []
    try:
        for rank in range(world):
            node, local = divmod(rank, local_ranks)
            workdir = job / f"node{node}"
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
            elastic = {
                "RANK": str(rank),
                "LOCAL_RANK": str(local),
                "WORLD_SIZE": str(world),
                "LOCAL_WORLD_SIZE": str(local_ranks),
                "GROUP_RANK": str(node),
            }
            command, env, output_prefix = _pod_launch(
                workdir,
                module,
                task_name,
                node_id=node_id,
                hostname=f"{EXECUTION_NAME}-{node_id}-{attempt}-worker-{node}",
                output_prefix=workdir / f"outputs-rank{rank}",
                **{**options, "env": {**options.get("env", {}), **elastic}},
            )
            process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            started.append((workdir, output_prefix, process))
        runs = []
        for workdir, output_prefix, process in started:
            stdout, stderr = process.communicate(timeout=300)
            runs.append(_pod_result(workdir, output_prefix, process.returncode, stdout, stderr))
        return runs
    finally:
        for _, _, process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def pod_job(tmp_path: Path) -> PodJob:
    """:func:`run_pod_job` in this test's folder: ``pod_job(source, task_name, nodes=2, local_ranks=2)``."""
    counter = iter(range(1_000_000))

    def run(source: str, task_name: str, **options: Any) -> list[PodRun]:
        return run_pod_job(tmp_path / f"job{next(counter)}", source, task_name, **options)

    return run


# ------------------------------------------------------------------------------ MLflow
from tests.mlflow_server import MlflowServer, running_server  # noqa: E402


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` (SQLite backend, a free port on 127.0.0.1), shared by the test session.

    Starting one costs seconds of CPU: the modules that use it are one group of ONE_WORKER_GROUPS, so
    that one worker starts it, once.
    """
    with running_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server
