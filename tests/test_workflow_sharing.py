"""A workflow's tasks, run pod by pod through ``pyflyte-execute`` (one execution id, a node each), end
in one place per tracker, read back from the files the backends wrote: one W&B group, one Comet
experiment key, one Neptune shared identity. The workflow's settings come from the environment a
launch plan sets, not from the decorators. (MLflow's parent and shared runs, on a real server, are
in ``test_mlflow_sharing.py``.)
"""

from __future__ import annotations

from typing import Any

import pytest

from flyte_ctx_tracking.sessions.comet import shared_experiment_key

from .comet_archive import archives
from .conftest import EXECUTION_NAME, PodRun, PodRunner
from .neptune_oplog import offline_runs
from .wandb_records import find_runs

WORKFLOW = """
from flytekit import task
from flyte_ctx_tracking import comet_session, current_run, neptune_session, wandb_init

def also_to_comet_and_neptune(name: str, value: float) -> None:
    with comet_session(run_mode="shared") as experiment:
        experiment.log_metric(name, value)
    with neptune_session(project="ml-team/fraud", run_mode="shared") as run:
        run[f"metrics/{name}"].append(value)

@task
@wandb_init
def prepare() -> int:
    current_run("wandb").log({"rows": 10})
    also_to_comet_and_neptune("rows", 10)
    return 10

@task
@wandb_init(tags=["mine"])
def train() -> int:
    current_run("wandb").log({"auc": 0.9})
    also_to_comet_and_neptune("auc", 0.9)
    return 1
"""

WORKFLOW_DEFAULTS = {
    "FLYTE_CTX_TRACKING_RUN_MODE": "nested",
    "FLYTE_CTX_TRACKING_PROJECT": "fraud",
    "FLYTE_CTX_TRACKING_TAGS": "team-risk,nightly",
}


@pytest.fixture
def pods(pod_run: PodRunner) -> list[PodRun]:
    """The workflow's two tasks, each in its pod, with the launch plan's environment."""
    ran = [
        pod_run(WORKFLOW, "prepare", node_id="n0", env=WORKFLOW_DEFAULTS),
        pod_run(WORKFLOW, "train", node_id="n1", env=WORKFLOW_DEFAULTS),
    ]
    for pod in ran:
        assert pod.returncode == 0, pod.output
    return ran


def test_a_workflows_tasks_end_in_one_place_per_tracker_with_the_workflows_defaults(pods: list[PodRun]) -> None:
    # W&B, nested (the workflow's default): a run per task, one group, the workflow's project and tags.
    wandb = [run for pod in pods for run in find_runs(pod.workdir / "tracking")]
    assert [run.run_id for run in wandb] == [f"{EXECUTION_NAME}-n0-0", f"{EXECUTION_NAME}-n1-0"]
    assert {run.group for run in wandb} == {EXECUTION_NAME}
    assert [run.job_type for run in wandb] == ["prepare", "train"]
    assert {run.project for run in wandb} == {"fraud"}  # no decorator named a project
    assert wandb[1].tags[:3] == ["mine", "team-risk", "nightly"]  # the task's own tags first

    # Comet, shared: both pods' archives carry the execution's one key; uploading appends them.
    comet = [archive for pod in pods for archive in archives(pod.workdir / "tracking" / "comet")]
    key = shared_experiment_key(EXECUTION_NAME, "fraud", None)
    assert [archive.key for archive in comet] == [key, key]
    assert {archive.experiment["resume_strategy"] for archive in comet} == {"get_or_create"}
    logged: dict[str, Any] = {}
    for archive in comet:
        logged.update({p["metric"]["metricName"]: p["metric"]["metricValue"] for p in archive.payloads("metric_msg")})
    assert {"rows", "auc"} <= set(logged)
    task_names = {name for archive in comet for name, value in archive.others.items() if name.endswith("/task/name")}
    assert len(task_names) == 2  # each task's own fields under its own writer's name

    # Neptune, shared: offline it cannot share, so each task keeps a run, found together by the execution.
    neptune = [run for pod in pods for run in offline_runs(pod.workdir / "tracking" / "neptune")]
    assert len(neptune) == 2
    assert {run.value("flyte/shared_id") for run in neptune} == {EXECUTION_NAME}
    assert {run.value("flyte/name") for run in neptune} == {EXECUTION_NAME}
    for pod in pods:  # one warning per pod says so, and what happens instead
        assert pod.output.count("cannot do run_mode='shared' offline") == 1, pod.output
