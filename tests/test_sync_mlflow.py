"""``flyte-ctx-tracking sync`` to a real MLflow server: offline runs copied whole, once, from a data
directory or from a pod's copy prefix after the pod is gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from flyte_ctx_tracking import mlflow_session
from flyte_ctx_tracking._sync import RECORD_FILE, main

from .conftest import EXECUTION_NAME, NODE_ID, PodRunner
from .mlflow_server import MlflowServer

SHARED = pytest.mark.usefixtures("mlflow_server")  # one server for the group (conftest.ONE_WORKER_GROUPS)
SCENARIO = Path(__file__).parent / "scenarios" / "sync_recorded.py"
SYNCED_FROM = "flyte_ctx_tracking.offline_run_id"


@pytest.fixture(autouse=True)
def _no_mlflow_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _offline_runs(root: Path, experiment: str) -> dict[str, str]:
    """A parent with a child, and a failed run, in the offline store under ``root``; their ids by name."""
    artifact = root.parent / "notes.txt"
    artifact.write_text("what the model saw\n", encoding="utf-8")
    ids: dict[str, str] = {}
    with mlflow_session(experiment, run_name="train", mode="offline", directory=root) as run:
        mlflow.log_params({"lr": 0.01, "layers": 3})
        mlflow.set_tag("team", "risk")
        for step in range(4):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_artifact(str(artifact))
        with mlflow_session(experiment, run_name="fold-0", mode="offline", directory=root) as child:
            mlflow.log_metric("auc", 0.9)
        ids["train"], ids["fold-0"] = run.info.run_id, child.info.run_id
    with (
        pytest.raises(ValueError),
        mlflow_session(experiment, run_name="broken", mode="offline", directory=root) as run,
    ):
        ids["broken"] = run.info.run_id
        mlflow.log_metric("loss", 9.0)
        raise ValueError("bad batch")
    return ids


def _copies(client: MlflowClient, experiment: str) -> dict[str, object]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return {run.data.tags[SYNCED_FROM]: run for run in client.search_runs([found.experiment_id])}


@SHARED
def test_sync_copies_offline_runs_whole_to_the_server_and_never_twice(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    root = tmp_path / "tracking"
    ids = _offline_runs(root, "sync-whole")
    local = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert main(["sync", str(root), "--mlflow-tracking-uri", mlflow_server.url]) == 0

    server = mlflow_server.client()
    copies = _copies(server, "sync-whole")
    assert set(copies) == set(ids.values())
    train, fold, broken = (copies[ids[name]] for name in ("train", "fold-0", "broken"))
    assert train.info.run_name == "train" and train.info.status == "FINISHED"  # type: ignore[attr-defined]
    assert train.data.params == {"lr": "0.01", "layers": "3"}  # type: ignore[attr-defined]
    assert train.data.tags["team"] == "risk"  # type: ignore[attr-defined]
    offline_history = [(m.step, m.value, m.timestamp) for m in local.get_metric_history(ids["train"], "loss")]
    copied_history = [(m.step, m.value, m.timestamp) for m in server.get_metric_history(train.info.run_id, "loss")]  # type: ignore[attr-defined]
    assert sorted(copied_history) == sorted(offline_history) and len(copied_history) == 4
    assert [a.path for a in server.list_artifacts(train.info.run_id)] == ["notes.txt"]  # type: ignore[attr-defined]
    assert train.info.start_time == local.get_run(ids["train"]).info.start_time  # type: ignore[attr-defined]
    # The child keeps its parent, as the copy of the parent.
    assert fold.data.tags["mlflow.parentRunId"] == train.info.run_id  # type: ignore[attr-defined]
    assert broken.info.status == "FAILED" and broken.data.tags["flyte.error.type"] == "builtins.ValueError"  # type: ignore[attr-defined]

    # Again: the record says all were uploaded; without the record, the server's tags still do.
    assert main(["sync", str(root), "--mlflow-tracking-uri", mlflow_server.url]) == 0
    (root / RECORD_FILE).unlink()
    assert main(["sync", str(root), "--mlflow-tracking-uri", mlflow_server.url]) == 0
    assert len(_copies(server, "sync-whole")) == 3
    assert len(server.search_runs([server.get_experiment_by_name("sync-whole").experiment_id])) == 3  # type: ignore[union-attr]
    assert (root / "mlflow.db").exists()  # nothing local deleted


@SHARED
def test_a_failed_upload_does_not_stop_the_others_and_the_exit_status_says_so(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    root = tmp_path / "tracking"
    with mlflow_session("sync-gone", run_name="lost", mode="offline", directory=root):
        mlflow.log_metric("loss", 1.0)
    with mlflow_session("sync-kept", run_name="kept", mode="offline", directory=root):
        mlflow.log_metric("loss", 2.0)
    server = mlflow_server.client()
    server.delete_experiment(server.create_experiment("sync-gone"))  # runs cannot be created in it
    assert main(["sync", str(root), "--mlflow-tracking-uri", mlflow_server.url]) == 1
    kept = server.get_experiment_by_name("sync-kept")
    assert kept is not None and [r.info.run_name for r in server.search_runs([kept.experiment_id])] == ["kept"]
    record = json.loads((root / RECORD_FILE).read_text(encoding="utf-8"))
    assert len(record) == 1  # the failed run is tried again next time


POD_TASK = """
import mlflow
from flytekit import task
from flyte_ctx_tracking import mlflow_session, wandb_session

@task
def train() -> int:
    with mlflow_session("pod-sync", run_name="in-the-pod") as run:
        mlflow.log_metric("loss", 0.5, step=0)
        mlflow.log_metric("loss", 0.25, step=1)
    with wandb_session(project="fraud") as run:
        run.log({"loss": 0.25})
    return 1
"""


@SHARED
def test_a_pods_offline_runs_sync_from_the_copy_prefix_after_the_pod_is_gone(
    mlflow_server: MlflowServer, pod_run: PodRunner, tmp_path: Path
) -> None:
    pod = pod_run(POD_TASK, "train")
    assert pod.returncode == 0, pod.stderr[-3000:]
    bucket = tmp_path / "bucket"
    shutil.move(pod.workdir / "raw", bucket)  # durable storage keeps the raw output prefix...
    shutil.rmtree(pod.workdir)  # ...and the pod, its disk with it, is gone
    copied = bucket / "flyte-ctx-tracking" / EXECUTION_NAME / NODE_ID / "0"
    assert (copied / "mlflow" / "mlflow.db").is_file() and list((copied / "wandb").glob("offline-run-*"))

    recording = tmp_path / "calls.jsonl"
    environment = {**os.environ, "WANDB_API_KEY": "PodSyncKey" + "1" * 30, "COLUMNS": "200"}
    command = [sys.executable, str(SCENARIO), str(recording), "--", "sync", str(bucket)]
    done = subprocess.run(
        [*command, "--mlflow-tracking-uri", mlflow_server.url],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    server = mlflow_server.client()
    experiment = server.get_experiment_by_name("pod-sync")
    assert experiment is not None
    (run,) = server.search_runs([experiment.experiment_id])
    assert run.info.run_name == "in-the-pod" and run.data.tags["flyte.execution_id"] == f"{EXECUTION_NAME}-{NODE_ID}-0"
    assert sorted((m.step, m.value) for m in server.get_metric_history(run.info.run_id, "loss")) == [
        (0, 0.5),
        (1, 0.25),
    ]
    calls = [json.loads(line) for line in recording.read_text(encoding="utf-8").splitlines()]
    assert [call["backend"] for call in calls] == ["wandb"]
    assert calls[0]["paths"] == [str(p) for p in (copied / "wandb").glob("offline-run-*")]
