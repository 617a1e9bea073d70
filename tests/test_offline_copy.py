"""Offline runs leave the pod with the task: copied under the raw output prefix when the session closes."""

from __future__ import annotations

from pathlib import Path

import pytest

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

    from flyte_ctx_tracking import sync_offline_runs

    pod = pod_run(MLFLOW_TASK, "train")
    assert pod.returncode == 0, pod.stderr[-3000:]
    durable = tmp_path / "bucket"
    shutil.move(pod.workdir / "raw", durable)
    shutil.rmtree(pod.workdir)  # the pod is gone
    copied = _copied(durable, "mlflow")
    assert (copied / "mlflow.db").is_file()
    results = sync_offline_runs(durable, backends=["mlflow"], dry_run=True)
    assert [(r.run.kind, r.status) for r in results] == [("mlflow", "to upload")]


def test_a_copy_that_fails_warns_and_the_task_and_its_local_data_stay(tmp_path: Path) -> None:
    import warnings

    from flyte_ctx_tracking import TrackingWarning, neptune_session

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with neptune_session(project="ml-team/fraud", mode="offline", offline_copy="/proc/self/no-such/prefix") as run:
            run["loss"].append(0.5)
    ours = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 1 and "could not copy its data to /proc/self/no-such/prefix" in ours[0], ours
    assert list((tmp_path / "tracking" / "neptune" / ".neptune" / "offline").glob("run__*"))


def test_an_explicit_prefix_receives_the_data_in_a_local_run_too(tmp_path: Path) -> None:
    from flytekit import task

    from flyte_ctx_tracking import neptune_session

    prefix = tmp_path / "bucket"

    @task(enable_deck=True)
    def tracked() -> int:
        with neptune_session(project="ml-team/fraud", mode="offline", offline_copy=str(prefix)) as run:
            run["loss"].append(0.5)
        return 1

    assert tracked() == 1
    copied = list((prefix / "flyte-ctx-tracking").rglob("run__*"))
    assert len(copied) == 1 and copied[0].parent.name == "offline"


TELEMETRY = """
import os, sys
SWITCHES = ("WANDB_ERROR_REPORTING", "COMET_ERROR_TRACKING_ENABLE", "MLFLOW_DISABLE_TELEMETRY", "WHYLOGS_NO_ANALYTICS")
for name in SWITCHES:
    os.environ.pop(name, None)
os.environ["COMET_ERROR_TRACKING_ENABLE"] = "yes-mine"  # a user's own value wins
from flyte_ctx_tracking import comet_session, mlflow_session, wandb_session, whylogs_profile
with wandb_session(project="p", mode="offline"), comet_session(mode="offline"), mlflow_session("e", mode="offline"):
    with whylogs_profile("t", interactive=False) as prof:
        prof.log({"x": 1})
print("STATE", {name: os.environ.get(name) for name in SWITCHES})
"""


def test_sessions_not_online_turn_off_the_backends_phone_home_unless_the_user_set_it(tmp_path: Path) -> None:
    import ast
    import os
    import subprocess
    import sys

    env = {**os.environ, "FLYTE_CTX_TRACKING_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-c", TELEMETRY],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = ast.literal_eval(next(line for line in done.stdout.splitlines() if line.startswith("STATE "))[6:])
    assert state == {
        "WANDB_ERROR_REPORTING": "false",
        "COMET_ERROR_TRACKING_ENABLE": "yes-mine",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "WHYLOGS_NO_ANALYTICS": "1",
    }


def test_a_copy_to_a_remote_prefix_is_found_there_by_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fsspec's in-memory filesystem stands for a bucket: flytekit's data persistence writes and reads
    # it as it does s3:// or gs://, in this process.
    from flyte_ctx_tracking import neptune_session, sync_offline_runs

    monkeypatch.setenv("FLYTE_CTX_TRACKING_SYNC_CACHE", str(tmp_path / "cache"))
    prefix = "memory://bucket/copies"
    with neptune_session(project="ml-team/fraud", mode="offline", offline_copy=prefix) as run:
        run["loss"].append(0.5)
    uuid = next((tmp_path / "tracking").rglob("run__*")).name.split("__")[1]
    results = sync_offline_runs(prefix, backends=["neptune"], dry_run=True)
    assert [(r.run.kind, r.run.label, r.status) for r in results] == [("neptune", f"offline/{uuid}", "to upload")]
    assert results[0].run.path.is_relative_to(tmp_path / "cache")  # downloaded first, read locally
