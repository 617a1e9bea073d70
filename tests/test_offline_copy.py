"""Offline runs leave the pod with the task: copied under the raw output prefix when the session closes."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import EXECUTION_NAME, NODE_ID, PodRunner

TRACKERS_TASK = """
from flytekit import task
from flyte_ctx_tracking import comet_session, neptune_session, wandb_session

@task
def train() -> int:
    with wandb_session(project="fraud") as run:
        run.log({"loss": 0.5})
    with comet_session(project_name="fraud") as experiment:
        experiment.log_metric("loss", 0.5)
    with neptune_session(project="ml-team/fraud") as run:
        run["loss"].append(0.5)
    return 1
"""


def _copied(prefix: Path, kind: str) -> Path:
    return prefix / "flyte-ctx-tracking" / EXECUTION_NAME / NODE_ID / "0" / kind


def test_a_pods_offline_runs_are_copied_under_the_raw_output_prefix(pod_run: PodRunner) -> None:
    pod = pod_run(TRACKERS_TASK, "train")
    assert pod.returncode == 0, pod.stderr[-3000:]
    raw = pod.workdir / "raw"
    wandb_runs = list(_copied(raw, "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and list(wandb_runs[0].glob("run-*.wandb"))
    assert [p.suffix for p in _copied(raw, "comet").iterdir()] == [".zip"]
    neptune_runs = list((_copied(raw, "neptune") / ".neptune" / "offline").glob("run__*"))
    assert len(neptune_runs) == 1 and list(neptune_runs[0].glob("data-*.log"))
    # Nothing of the user's is lost: the pod's local data is still there.
    assert list((pod.workdir / "tracking" / "wandb").rglob("offline-run-*"))


MLFLOW_TASK = """
import mlflow
from flytekit import task
from flyte_ctx_tracking import mlflow_session

@task
def train() -> int:
    with mlflow_session("fraud") as run:
        mlflow.log_metric("loss", 0.5, step=0)
        mlflow.log_metric("loss", 0.25, step=1)
    return 1
"""


def test_an_mlflow_pods_store_leaves_with_it_and_syncs_from_the_prefix(pod_run: PodRunner, tmp_path: Path) -> None:
    import shutil

    from flyte_ctx_tracking._sync import sync

    pod = pod_run(MLFLOW_TASK, "train")
    assert pod.returncode == 0, pod.stderr[-3000:]
    durable = tmp_path / "bucket"
    shutil.move(pod.workdir / "raw", durable)
    shutil.rmtree(pod.workdir)  # the pod is gone
    copied = _copied(durable, "mlflow")
    assert (copied / "mlflow.db").is_file()
    results = sync(durable, backends=["mlflow"], dry_run=True)
    assert [(r.run.kind, r.status) for r in results] == [("mlflow", "to upload")]
