"""MLflow's run modes and rank scopes, against a real ``mlflow server``, read back with ``MlflowClient``.

A torch elastic job runs the way its operator runs it (two pods, two rank processes each through
``pyflyte-execute``, all started at once, so that they race to create the runs they share); a
workflow's tasks run pod by pod with one execution id; the job's offline runs are synced from the
pods' copies. Every module here shares the session's server (conftest.ONE_WORKER_GROUPS).
"""

from __future__ import annotations

import io
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from flytekit import task, workflow
from mlflow import MlflowClient
from mlflow.entities import Run
from rich.console import Console

from flyte_ctx_tracking import TrackingWarning, mlflow_run, mlflow_session, tracking_defaults, tracking_root
from flyte_ctx_tracking._sync import RECORD_FILE, UPLOADED, sync_offline_runs

from .conftest import EXECUTION_NAME, PodRunner, run_pod_job
from .mlflow_server import MlflowServer

SHARED = pytest.mark.usefixtures("mlflow_server")
SHARED_TAG = "flyte_ctx_tracking.shared_run"
PARENT_TAG = "flyte_ctx_tracking.execution_parent"
WRITER = "flyte_ctx_tracking.writer."
# Another project than test_mlflow.py's pods: an execution's parent is per project, domain and name.
PROJECT = "mlflow-sharing"
EXECUTION_KEY = f"{PROJECT}/development/{EXECUTION_NAME}"
NODE0, NODE1 = (f"{EXECUTION_NAME}-n0-0-worker-{node}" for node in (0, 1))


@pytest.fixture(autouse=True)
def _no_mlflow_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _runs(client: MlflowClient, experiment: str) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    return list(client.search_runs([found.experiment_id], order_by=["attributes.start_time"]))


def _writers(run: Run) -> dict[str, str]:
    """The run's writers and how each ended (``n0-rank3: FINISHED``)."""
    return {k.removeprefix(WRITER): v.split(":")[0] for k, v in run.data.tags.items() if k.startswith(WRITER)}


def _children(runs: list[Run], parent: Run) -> list[Run]:
    return [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


# ------------------------------------------------------------------------------ a torch elastic job
JOB = """
import os
import time
from pathlib import Path

import mlflow
from flytekit import task
from flyte_ctx_tracking import execution_context, mlflow_session

COMBINATIONS = {
    "online-shared-global": {"run_mode": "shared"},
    "online-shared-worker": {"run_mode": "shared", "rank_scope": "worker"},
    "online-new-worker": {"run_mode": "new", "rank_scope": "worker"},
    "online-nested-worker": {"run_mode": "nested", "rank_scope": "worker"},
    "offline-shared-global": {"run_mode": "shared", "mode": "offline"},
    "offline-nested-worker": {"run_mode": "nested", "rank_scope": "worker", "mode": "offline"},
}


def all_ranks_ready(rank: int, world: int) -> None:
    # Every rank opens its first session at the same moment: they race to create the shared run.
    folder = Path(os.environ["JOB_BARRIER"])
    (folder / f"rank{rank}").touch()
    deadline = time.monotonic() + 120
    while len(list(folder.glob("rank*"))) < world and time.monotonic() < deadline:
        time.sleep(0.01)


@task
def train() -> str:
    context = execution_context()
    all_ranks_ready(context.rank, context.world_size)
    opened = []
    for experiment, options in COMBINATIONS.items():
        with mlflow_session(experiment, **options) as run:
            if run is not None:  # the ranks a scope leaves out get None
                mlflow.log_metric(f"rank{context.rank}", context.rank)
            opened.append(f"{experiment}={run.info.run_id if run is not None else '-'}")
    return " ".join(opened)
"""


@pytest.fixture(scope="module")
def job(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One elastic job (2 nodes x 2 ranks) of every combination, shared by the tests of what it wrote:
    per rank, the run id each combination opened (``-`` for none), and the job's folder."""
    folder = tmp_path_factory.mktemp("mlflow-job")
    barrier = folder / "barrier"
    barrier.mkdir()
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "JOB_BARRIER": str(barrier),
        "MLFLOW_EXPERIMENT_NAME": "",
        "FLYTE_INTERNAL_EXECUTION_PROJECT": PROJECT,
    }
    ranks = run_pod_job(folder / "job", JOB, "train", env=env)
    for rank in ranks:
        assert rank.returncode == 0, rank.output[-3000:]
    opened = [dict(item.split("=") for item in str(rank.outputs["o0"]).split()) for rank in ranks]
    yield {"opened": opened, "folder": folder / "job", "warnings": [rank.stderr for rank in ranks]}


@SHARED
def test_a_shared_run_of_the_global_scope_holds_every_ranks_metrics(mlflow_server: MlflowServer, job: Any) -> None:
    (run,) = _runs(mlflow_server.client(), "online-shared-global")
    assert {rank["online-shared-global"] for rank in job["opened"]} == {run.info.run_id}
    assert run.data.metrics == {"rank0": 0, "rank1": 1, "rank2": 2, "rank3": 3}
    assert run.info.status == "FINISHED" and run.info.run_name == EXECUTION_NAME
    assert _writers(run) == dict.fromkeys(("n0-rank0", "n0-rank1", "n0-rank2", "n0-rank3"), "FINISHED")
    tags = run.data.tags
    assert tags[SHARED_TAG] == tags["flyte.name"] == EXECUTION_NAME and tags["flyte.project"] == PROJECT
    assert "flyte.execution_id" not in tags and "flyte.rank" not in tags  # one pod's, one rank's: not the run's
    assert "rank 3 (worker 1, local rank 1)" in tags[f"{WRITER}n0-rank3"]


@SHARED
def test_a_shared_run_of_the_worker_scope_is_one_per_node(mlflow_server: MlflowServer, job: Any) -> None:
    runs = _runs(mlflow_server.client(), "online-shared-worker")
    by_identity = {run.data.tags[SHARED_TAG]: sorted(run.data.metrics) for run in runs}
    assert by_identity == {
        f"{EXECUTION_NAME}-worker0": ["rank0", "rank1"],
        f"{EXECUTION_NAME}-worker1": ["rank2", "rank3"],
    }
    ids = {run.data.tags[SHARED_TAG]: run.info.run_id for run in runs}
    expected = [ids[f"{EXECUTION_NAME}-worker{rank // 2}"] for rank in range(4)]
    assert [rank["online-shared-worker"] for rank in job["opened"]] == expected
    assert all(run.info.status == "FINISHED" and len(_writers(run)) == 2 for run in runs)


@SHARED
def test_new_runs_of_the_worker_scope_are_opened_by_each_nodes_local_rank_zero(
    mlflow_server: MlflowServer, job: Any
) -> None:
    runs = _runs(mlflow_server.client(), "online-new-worker")
    assert {run.info.run_name: run.data.metrics for run in runs} == {
        f"{EXECUTION_NAME}.train-worker0": {"rank0": 0},
        f"{EXECUTION_NAME}.train-worker1": {"rank2": 2},
    }
    assert [rank["online-new-worker"] != "-" for rank in job["opened"]] == [True, False, True, False]
    assert {run.data.tags["flyte.execution_id"] for run in runs} == {NODE0, NODE1}  # each pod's name
    assert {run.data.tags["flyte.group_rank"] for run in runs} == {"0", "1"}


@SHARED
def test_nested_runs_of_the_worker_scope_are_children_of_the_executions_one_parent(
    mlflow_server: MlflowServer, job: Any
) -> None:
    runs = _runs(mlflow_server.client(), "online-nested-worker")
    (parent,) = (run for run in runs if PARENT_TAG in run.data.tags)
    assert parent.data.tags[PARENT_TAG] == EXECUTION_KEY and parent.info.run_name == EXECUTION_NAME
    children = _children(runs, parent)
    assert sorted(next(iter(run.data.metrics)) for run in children) == ["rank0", "rank2"]
    assert len(runs) == 3
    assert parent.info.status == "FINISHED" and _writers(parent) == {"n0-rank0": "FINISHED", "n0-rank2": "FINISHED"}


@SHARED
def test_offline_shared_and_nested_runs_of_two_pods_sync_into_one_run_and_one_parent(
    mlflow_server: MlflowServer, job: Any, tmp_path: Path
) -> None:
    # What the pods copied out when their sessions closed (each rank a copy of its node's store).
    bucket = tmp_path / "bucket"
    for node in ("node0", "node1"):
        shutil.copytree(job["folder"] / node / "raw", bucket / node)
    assert len(list(bucket.rglob("mlflow.db"))) == 4
    options = {"mlflow": {"tracking_uri": mlflow_server.url}}

    def sync() -> list[Any]:
        return sync_offline_runs(bucket, backends=["mlflow"], options=options, console=Console(file=io.StringIO()))

    first = sync()
    assert {result.status for result in first} == {UPLOADED}, [(r.run.label, r.status, r.message) for r in first]
    client = mlflow_server.client()

    def read_back() -> tuple[Run, Run, list[Run]]:
        (shared,) = _runs(client, "offline-shared-global")
        runs = _runs(client, "offline-nested-worker")
        (parent,) = (run for run in runs if PARENT_TAG in run.data.tags)
        assert len(runs) == 3
        return shared, parent, _children(runs, parent)

    shared, parent, children = read_back()
    assert shared.data.metrics == {"rank0": 0, "rank1": 1, "rank2": 2, "rank3": 3}
    assert _writers(shared) == dict.fromkeys(("n0-rank0", "n0-rank1", "n0-rank2", "n0-rank3"), "FINISHED")
    assert shared.info.status == "FINISHED" and shared.data.tags[SHARED_TAG] == EXECUTION_NAME
    assert parent.data.tags[PARENT_TAG] == EXECUTION_KEY and parent.info.status == "FINISHED"
    assert sorted(next(iter(child.data.metrics)) for child in children) == ["rank0", "rank2"]
    assert _writers(parent) == {"n0-rank0": "FINISHED", "n0-rank2": "FINISHED"}

    # Again, with the record of uploads, then without it: the server's tags say what was merged.
    assert {result.status for result in sync()} == {"uploaded before"}
    (bucket / RECORD_FILE).unlink()
    assert {result.status for result in sync()} == {UPLOADED}
    again, parent_again, children_again = read_back()
    assert again.info.run_id == shared.info.run_id and parent_again.info.run_id == parent.info.run_id
    assert {c.info.run_id for c in children_again} == {c.info.run_id for c in children}
    assert len(client.get_metric_history(again.info.run_id, "rank3")) == 1


@SHARED
def test_syncing_a_failed_attempts_offline_copy_does_not_undo_its_retrys_success(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def pod(attempt: int) -> None:  # node n1 of execution "retried" (the environment a pod gets)
        for name, value in {
            "FLYTE_INTERNAL_EXECUTION_ID": "retried",
            "FLYTE_INTERNAL_EXECUTION_PROJECT": PROJECT,
            "FLYTE_INTERNAL_EXECUTION_DOMAIN": "development",
            "HOSTNAME": f"retried-n1-{attempt}",
            "FLYTE_ATTEMPT_NUMBER": str(attempt),
            "FLYTE_CTX_TRACKING_DIR": str(tmp_path / f"attempt{attempt}"),
        }.items():
            monkeypatch.setenv(name, value)

    options = {"run_mode": "shared", "offline_copy": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackingWarning)
        pod(0)  # the server was unreachable: offline, and it failed
        with pytest.raises(RuntimeError), mlflow_session("retried", mode="offline", **options):
            mlflow.log_metric("loss", 9.0)
            raise RuntimeError("out of memory")
        pod(1)  # the retry: online, and it succeeded
        with mlflow_session("retried", tracking_uri=mlflow_server.url, **options) as run:
            mlflow.log_metric("loss", 0.5)
    results = sync_offline_runs(
        tmp_path / "attempt0",
        backends=["mlflow"],
        options={"mlflow": {"tracking_uri": mlflow_server.url}},
        console=Console(file=io.StringIO()),
    )
    assert [result.status for result in results] == [UPLOADED]
    (shared,) = _runs(mlflow_server.client(), "retried")
    assert shared.info.run_id == run.info.run_id and shared.info.status == "FINISHED"
    assert shared.data.tags[f"{WRITER}n1"].startswith("FINISHED: a block, attempt 1")
    history = mlflow_server.client().get_metric_history(run.info.run_id, "loss")
    assert sorted(metric.value for metric in history) == [0.5, 9.0]  # both attempts' metrics are there


# ------------------------------------------------------------------------------ a workflow, pod by pod
TASKS = """
import mlflow
from flytekit import task
from flyte_ctx_tracking import mlflow_run, mlflow_session

@task(enable_deck=True)
def train(epochs: int) -> str:
    with mlflow_session("sharing-pods", run_mode="nested") as child:
        mlflow.log_metric("loss", 0.5)
    with mlflow_session("sharing-pods", run_mode="shared") as shared:
        for epoch in range(epochs):
            mlflow.log_metric("train_loss", 1.0 / (epoch + 1), step=epoch)
        mlflow.log_param("epochs", epochs)
    return f"{child.info.run_id} {shared.info.run_id}"

@task
@mlflow_run(run_mode="nested")  # the experiment: the workflow's project
def evaluate() -> str:
    mlflow.log_metric("auc_of_child", 0.9)
    child = mlflow.active_run().info.run_id
    with mlflow_session() as shared:  # the workflow's run mode: shared
        mlflow.log_metric("auc", 0.93)
        mlflow.log_param("epochs", 3)  # train logged 2: kept apart, not an error
    return f"{child} {shared.info.run_id}"
"""


@SHARED
def test_a_workflows_tasks_in_pods_end_in_one_parent_run_and_one_shared_run(
    mlflow_server: MlflowServer, pod_run: PodRunner
) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "FLYTE_INTERNAL_EXECUTION_PROJECT": PROJECT}
    first = pod_run(TASKS, "train", inputs={"epochs": 2}, env=env, node_id="n0")
    assert first.returncode == 0, first.output[-3000:]
    workflow_defaults = {
        "FLYTE_CTX_TRACKING_RUN_MODE": "shared",
        "FLYTE_CTX_TRACKING_PROJECT": "sharing-pods",
        "FLYTE_CTX_TRACKING_TAGS": "nightly",
        "MLFLOW_EXPERIMENT_NAME": "not-this-one",  # the workflow's project comes first
    }
    second = pod_run(TASKS, "evaluate", env={**env, **workflow_defaults}, node_id="n1")
    assert second.returncode == 0, second.output[-3000:]
    assert "logged epochs='2' first" in second.output

    client = mlflow_server.client()
    runs = _runs(client, "sharing-pods")
    (train_child, train_shared), (evaluate_child, evaluate_shared) = (
        str(pod.outputs["o0"]).split() for pod in (first, second)
    )
    (parent,) = (run for run in runs if PARENT_TAG in run.data.tags)
    assert {run.info.run_id for run in _children(runs, parent)} == {train_child, evaluate_child}
    assert parent.data.tags[PARENT_TAG] == EXECUTION_KEY and parent.info.status == "FINISHED"
    assert _writers(parent) == {"n0": "FINISHED", "n1": "FINISHED"}

    (shared,) = (run for run in runs if SHARED_TAG in run.data.tags)
    assert shared.info.run_id == train_shared == evaluate_shared
    assert shared.data.tags[SHARED_TAG] == EXECUTION_NAME and shared.info.status == "FINISHED"
    assert sorted((m.step, m.value) for m in client.get_metric_history(shared.info.run_id, "train_loss")) == [
        (0, 1.0),
        (1, 0.5),
    ]
    assert shared.data.metrics["auc"] == 0.93
    assert shared.data.params == {"epochs": "2", "epochs/n1": "3"}
    assert _writers(shared) == {"n0": "FINISHED", "n1": "FINISHED"}
    assert shared.data.tags["nightly"] == ""  # the workflow's tags, as MLflow tags without a value
    assert len(runs) == 4

    deck = first.deck_html
    assert deck is not None and "A shared run (run_mode=" in deck and "written by every task and rank" in deck
    assert f"{mlflow_server.url}/#/experiments/{shared.info.experiment_id}/runs/{shared.info.run_id}" in deck
    assert f"{SHARED_TAG} = {EXECUTION_NAME}" in deck


# ------------------------------------------------------------------------------ locally, offline
def test_a_local_workflows_tasks_share_one_run_in_the_local_store_with_the_workflows_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "not-this-one")

    @task
    @mlflow_run(run_mode="shared", tags={"team": "risk"})
    def prepare() -> int:
        mlflow.log_param("seed", 1)
        mlflow.log_metric("rows", 100)
        return 1

    @task
    @mlflow_run(run_mode="shared")
    def train(seed: int) -> str:
        mlflow.log_param("seed", 2)  # prepare logged 1
        mlflow.log_metric("loss", 0.25)
        return str(mlflow.active_run().info.run_id)

    @workflow
    def wf() -> str:
        return train(seed=prepare())

    with warnings.catch_warnings(record=True) as caught, tracking_defaults(project="local-sharing", tags=["nightly"]):
        warnings.simplefilter("always")
        run_id = wf()
    ours = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 2 and "runs offline" in ours[0], ours  # offline: said once; the parameter: once
    assert "logged seed='1' first; this writer's values are logged as seed/train='2'" in ours[1]
    client = MlflowClient(f"sqlite:///{tracking_root() / 'mlflow' / 'mlflow.db'}")
    (run,) = _runs(client, "local-sharing")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.metrics == {"rows": 100, "loss": 0.25}
    assert run.data.params == {"seed": "1", "seed/train": "2"}
    assert _writers(run) == {"prepare": "FINISHED", "train": "FINISHED"}
    assert (run.data.tags["team"], run.data.tags["nightly"]) == ("risk", "")
    assert run.data.tags[SHARED_TAG].startswith("local-")


def test_a_shared_run_fails_with_a_writer_and_finishes_when_its_retry_succeeds() -> None:
    attempts = iter([RuntimeError("diverged"), None])

    @mlflow_run(experiment_name="retries", run_mode="shared")
    def train() -> str:
        run_id = str(mlflow.active_run().info.run_id)
        error = next(attempts)
        if error is not None:
            raise error
        return run_id

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackingWarning)
        with mlflow_session("retries", run_mode="shared") as other:
            mlflow.log_metric("other", 1.0)
        client = MlflowClient(f"sqlite:///{tracking_root() / 'mlflow' / 'mlflow.db'}")
        with pytest.raises(RuntimeError, match="diverged"):
            train()
        failed = client.get_run(other.info.run_id)
        run_id = train()  # the retry: the same writer
    assert failed.info.status == "FAILED" and _writers(failed) == {"block": "FINISHED", "train": "FAILED"}
    assert failed.data.tags[f"{WRITER}train"] == "FAILED: task train (RuntimeError)"
    recovered = client.get_run(run_id)
    assert run_id == other.info.run_id and recovered.info.status == "FINISHED"
    assert _writers(recovered) == {"block": "FINISHED", "train": "FINISHED"}
    assert "flyte.error.type" not in recovered.data.tags  # a writer's failure is its tag's, not the run's


def test_a_claim_whose_writer_died_before_creating_the_shared_run_is_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flyte_ctx_tracking import execution_context
    from flyte_ctx_tracking._sharing import shared_base
    from flyte_ctx_tracking.sessions.mlflow import _session as session_module
    from flyte_ctx_tracking.sessions.mlflow import _shared

    monkeypatch.setattr(session_module, "_CLAIM_WAIT", 0.2)  # how long the others wait for the claimer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackingWarning)
        with mlflow_session("claims"):  # the store and the experiment
            pass
        client = MlflowClient(f"sqlite:///{tracking_root() / 'mlflow' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("claims")
        identity = shared_base(execution_context())
        # A writer claimed the shared run, and died before creating it.
        client.create_experiment(_shared._claim_name("claims", experiment.experiment_id, SHARED_TAG, identity, 0))
        with mlflow_session("claims", run_mode="shared") as run:
            mlflow.log_metric("loss", 0.5)
    (shared,) = (recorded for recorded in _runs(client, "claims") if SHARED_TAG in recorded.data.tags)
    assert shared.info.run_id == run.info.run_id and shared.data.metrics == {"loss": 0.5}
    assert shared.info.status == "FINISHED"


def test_the_console_link_config_finds_a_shared_run_by_its_tag_and_takes_the_workflows_project() -> None:
    link = {"host": "https://mlflow.example.com", "experiment_name": "fraud"}
    assert mlflow_run("fraud", link_host=link["host"]).get_extra_config() == {**link, "link_type": "mlflow-run"}
    shared = mlflow_run("fraud", link_host=link["host"], run_mode="shared")
    assert shared.get_extra_config() == {**link, "link_type": "mlflow-shared-run"}
    with tracking_defaults(project="fraud", run_mode="shared"):
        assert mlflow_run(link_host=link["host"]).get_extra_config() == {**link, "link_type": "mlflow-shared-run"}


def test_run_mode_and_parent_or_run_id_together_are_refused_naming_both() -> None:
    for options in ({"parent": "execution", "run_mode": "nested"}, {"parent": "none", "run_mode": "shared"}):
        with pytest.raises(ValueError, match=rf"parent='{options['parent']}' and run_mode='{options['run_mode']}'"):
            mlflow_session("x", **options)
    with pytest.raises(ValueError, match="parent='none' and run_mode='shared'.*pass one of them"):
        mlflow_run(run_mode="shared", parent="none")  # the decorator too, when it is built
    with pytest.raises(ValueError, match="run_id='abc123' resumes that run, and run_mode='shared'"):
        mlflow_session(run_id="abc123", run_mode="shared")
    with pytest.raises(
        ValueError, match="run_mode='together' is not supported; use one of 'auto', 'new', 'shared', 'nested'"
    ):
        mlflow_session(run_mode="together")  # type: ignore[arg-type]
    # A workflow's run mode does not override a session's own parent: it keeps its top-level run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackingWarning)
        with tracking_defaults(run_mode="nested"), mlflow_session("own-parent", parent="none") as run:
            pass
    client = MlflowClient(f"sqlite:///{tracking_root() / 'mlflow' / 'mlflow.db'}")
    (recorded,) = _runs(client, "own-parent")
    assert recorded.info.run_id == run.info.run_id and "mlflow.parentRunId" not in recorded.data.tags
