"""MLflow against a real ``mlflow server`` (SQLite backend, 127.0.0.1), read back with ``MlflowClient``.

One server is shared by the tests marked ``SHARED`` (one xdist worker runs them, see conftest's
``mlflow_server``); the test that stops a server mid-block starts its own. Scenarios where a server
fails run in a subprocess with a hard time limit. The offline tests read the local store,
``$FLYTE_CTX_TRACKING_DIR/mlflow/mlflow.db``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pytest
from flytekit import task
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from flyte_ctx_tracking import (
    TrackingWarning,
    memray_profile,
    mlflow_autolog,
    mlflow_run,
    mlflow_session,
    whylogs_profile,
)
from flyte_ctx_tracking._session import log_to_active_trackers

from .conftest import EXECUTION_NAME, PodRunner
from .mlflow_server import MlflowServer, recording_proxy, running_server

SHARED = pytest.mark.usefixtures("mlflow_server")  # one server for the group (conftest.ONE_WORKER_GROUPS)
SCENARIO = Path(__file__).parent / "scenarios" / "online_block.py"
HARD_LIMIT = 150  # seconds for a scenario subprocess: anything near it is a hang
KEY = "MlflowKey" + "7" * 31
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
OFFLINE_TWIN_TAG = "flyte_ctx_tracking.online_run_id"
EXECUTION_PARENT_TAG = "flyte_ctx_tracking.execution_parent"


@pytest.fixture(autouse=True)
def _no_mlflow_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer's MLflow settings must not reach the tests; MLflow's default store (``./mlflow.db``)
    would be the working directory's: make that the test's own."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", *CREDENTIAL_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _offline_client(root: Path) -> MlflowClient:
    store = root / "mlflow" / "mlflow.db"
    assert store.exists(), list(root.rglob("*"))
    return MlflowClient(f"sqlite:///{store}")


def _all_runs(client: MlflowClient, filter_string: str = "") -> list[Run]:
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return list(client.search_runs(experiments, filter_string, run_view_type=ViewType.ALL))


def _experiment_name(client: MlflowClient, run: Run) -> str:
    return str(client.get_experiment(run.info.experiment_id).name)


@contextmanager
def _tracking_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours: list[warnings.WarningMessage] = []
        yield ours
    ours.extend(w for w in caught if issubclass(w.category, TrackingWarning))


# ------------------------------------------------------------------------------ sessions, online
@SHARED
def test_a_session_logs_metrics_params_and_tags_to_the_server_and_finishes(mlflow_server: MlflowServer) -> None:
    with _tracking_warnings() as ours:
        with mlflow_session("fraud", tracking_uri=mlflow_server.url, run_name="baseline", tags={"team": "risk"}) as run:
            assert mlflow.active_run() is not None and mlflow.active_run().info.run_id == run.info.run_id
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_params({"lr": 0.01, "optimizer": "adam"})
    assert ours == []
    assert mlflow.active_run() is None
    client = mlflow_server.client()
    recorded = client.get_run(run.info.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.info.run_name == "baseline" and _experiment_name(client, recorded) == "fraud"
    assert _history(client, run.info.run_id, "loss") == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    assert recorded.data.params == {"lr": "0.01", "optimizer": "adam"}
    assert recorded.data.tags["team"] == "risk"
    assert recorded.data.tags["flyte.execution_mode"] == "local"
    assert recorded.data.tags["mlflow.source.name"] == __file__


@SHARED
def test_a_failing_block_ends_failed_with_the_error_type_and_raises_the_same_exception(
    mlflow_server: MlflowServer,
) -> None:
    error = ValueError("diverged at step 3")
    with pytest.raises(ValueError) as raised, mlflow_session("fraud", tracking_uri=mlflow_server.url) as run:
        mlflow.log_metric("loss", 9.0)
        raise error
    assert raised.value is error
    recorded = mlflow_server.client().get_run(run.info.run_id)
    assert recorded.info.status == "FAILED"
    assert recorded.data.tags["flyte.error.type"] == "builtins.ValueError"
    assert recorded.data.tags["flyte.error.message"] == "diverged at step 3"
    assert recorded.data.metrics == {"loss": 9.0}


@SHARED
def test_mlflow_run_on_a_local_task_logs_to_the_server_named_after_the_task(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)

    @task
    @mlflow_run(experiment_name="fraud-tasks", tags={"team": "risk"})
    def train(epochs: int) -> str:
        for epoch in range(epochs):
            mlflow.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
        mlflow.log_param("epochs", epochs)
        return str(mlflow.active_run().info.run_id)

    run_id = train(epochs=2)
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_server.url  # the user's setting, as it was
    client = mlflow_server.client()
    recorded = client.get_run(run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.info.run_name == "train" and _experiment_name(client, recorded) == "fraud-tasks"
    assert recorded.data.tags["flyte.task.name"].endswith("train")
    assert recorded.data.tags["team"] == "risk"
    assert recorded.data.params == {"epochs": "2"}
    assert _history(client, run_id, "loss") == [(0, 1.0), (1, 0.5)]


@SHARED
def test_nested_sessions_make_a_child_run_and_the_outer_run_continues(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    with mlflow_session("cv") as outer:
        with mlflow_session("cv", run_name="fold") as inner:
            assert mlflow.active_run().info.run_id == inner.info.run_id != outer.info.run_id
            mlflow.log_metric("fold_auc", 0.9)
        assert mlflow.active_run().info.run_id == outer.info.run_id
        mlflow.log_metric("auc", 0.91)
    client = mlflow_server.client()
    child, parent = client.get_run(inner.info.run_id), client.get_run(outer.info.run_id)
    assert child.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert "mlflow.parentRunId" not in parent.data.tags
    assert child.info.run_name == "fold"
    assert child.data.metrics == {"fold_auc": 0.9} and parent.data.metrics == {"auc": 0.91}
    assert child.info.status == parent.info.status == "FINISHED"


@SHARED
def test_the_fluent_api_logs_into_each_blocks_own_run_in_threads_and_asyncio_tasks(
    mlflow_server: MlflowServer,
) -> None:
    workers = 3
    barrier = threading.Barrier(workers, timeout=120)  # every block is open while the others log

    def in_a_thread(index: int) -> tuple[str, str]:
        with mlflow_session("fluent", tracking_uri=mlflow_server.url, run_name=f"thread-{index}") as run:
            barrier.wait()
            for step in range(3):
                mlflow.log_metric("value", index * 10 + step, step=step)
            mlflow.log_param("worker", f"thread-{index}")
            barrier.wait()
            return run.info.run_id, mlflow.active_run().info.run_id

    with ThreadPoolExecutor(workers) as pool:
        threads = list(pool.map(in_a_thread, range(workers)))

    async def in_a_task(index: int, started: asyncio.Event, count: list[int]) -> tuple[str, str]:
        async with mlflow_session("fluent", tracking_uri=mlflow_server.url, run_name=f"task-{index}") as run:
            count.append(index)
            if len(count) == workers:
                started.set()
            await started.wait()  # every task is inside its block
            for step in range(3):
                mlflow.log_metric("value", 100 + index * 10 + step, step=step)
                await asyncio.sleep(0)
            mlflow.log_param("worker", f"task-{index}")
            return run.info.run_id, mlflow.active_run().info.run_id

    async def main() -> list[tuple[str, str]]:
        started, count = asyncio.Event(), []
        return list(await asyncio.gather(*(in_a_task(i, started, count) for i in range(workers))))

    tasks = asyncio.run(main())
    client = mlflow_server.client()
    for offset, results, kind in ((0, threads, "thread"), (100, tasks, "task")):
        assert len({run_id for run_id, _ in results}) == workers
        for index, (run_id, active_id) in enumerate(results):
            assert active_id == run_id
            recorded = client.get_run(run_id)
            assert recorded.info.run_name == f"{kind}-{index}" and recorded.info.status == "FINISHED"
            assert recorded.data.params == {"worker": f"{kind}-{index}"}
            expected = [(step, float(offset + index * 10 + step)) for step in range(3)]
            assert _history(client, run_id, "value") == expected
    assert mlflow.active_run() is None


# ------------------------------------------------------------------------------ in pods
POD_TASKS = """
import mlflow
from flytekit import task
from flyte_ctx_tracking import mlflow_run, mlflow_session

@task(enable_deck=True)
def train(epochs: int) -> str:
    with mlflow_session("fraud-pods", parent="execution") as run:
        for epoch in range(epochs):
            mlflow.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
        return run.info.run_id

@task
@mlflow_run(experiment_name="fraud-pods", parent="execution")
def evaluate() -> str:
    mlflow.log_metric("auc", 0.93)
    return mlflow.active_run().info.run_id
"""


@SHARED
def test_pod_runs_of_one_execution_are_named_after_it_and_share_one_parent_run(
    mlflow_server: MlflowServer, pod_run: PodRunner
) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    first = pod_run(POD_TASKS, "train", inputs={"epochs": 2}, env=env, node_id="n0")
    assert first.returncode == 0, first.output[-3000:]
    second = pod_run(POD_TASKS, "evaluate", env=env, node_id="n1")
    assert second.returncode == 0, second.output[-3000:]

    client = mlflow_server.client()
    train, evaluate = client.get_run(first.outputs["o0"]), client.get_run(second.outputs["o0"])
    for recorded, task_name, node in ((train, "train", "n0"), (evaluate, "evaluate", "n1")):
        tags = recorded.data.tags
        assert recorded.info.run_name == f"{EXECUTION_NAME}.{task_name}"
        assert recorded.info.status == "FINISHED"
        assert tags["flyte.execution_id"] == f"{EXECUTION_NAME}-{node}-0"  # the pod's name
        assert tags["flyte.name"] == EXECUTION_NAME
        assert (tags["flyte.project"], tags["flyte.domain"]) == ("flytesnacks", "development")
        assert tags["flyte.task.name"].endswith(f".{task_name}") and tags["flyte.task.version"] == "v1"
        assert tags["flyte.execution_url"].endswith(EXECUTION_NAME)
        assert tags["flyte.execution_mode"] == "remote"
    assert _history(client, train.info.run_id, "loss") == [(0, 1.0), (1, 0.5)]
    assert evaluate.data.metrics == {"auc": 0.93}

    (parent,) = _all_runs(client, f"tags.`{EXECUTION_PARENT_TAG}` = 'flytesnacks/development/{EXECUTION_NAME}'")
    assert train.data.tags["mlflow.parentRunId"] == evaluate.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.info.run_name == EXECUTION_NAME and parent.info.status == "FINISHED"
    assert _experiment_name(client, parent) == "fraud-pods"

    deck = first.deck_html
    assert deck is not None and "MLflow run (finished)" in deck and "loss: 2 values" in deck
    assert f"{mlflow_server.url}/#/experiments/{train.info.experiment_id}/runs/{train.info.run_id}" in deck


# ------------------------------------------------------------------------------ credentials
@SHARED
def test_a_secret_goes_with_its_own_runs_requests_only_and_never_into_the_environment(
    mlflow_server: MlflowServer,
) -> None:
    basic, token = "alice:" + KEY, "Token" + KEY
    secrets: dict[str, Any] = {"basic": lambda: basic, "bearer": lambda: token, "none": None}
    barrier = threading.Barrier(len(secrets), timeout=120)
    environments: list[dict[str, str | None]] = []

    def session(name: str) -> str:
        with mlflow_session("credentials", tracking_uri=proxy.url, run_name=name, secret=secrets[name]) as run:
            barrier.wait()  # all three runs are open at once
            mlflow.log_metric("x", 1.0)
            environments.append({variable: os.environ.get(variable) for variable in CREDENTIAL_VARIABLES})
            barrier.wait()
            mlflow.log_param("who", name)
            return str(run.info.run_id)

    with recording_proxy(mlflow_server.url) as proxy, ThreadPoolExecutor(len(secrets)) as pool:
        run_ids = dict(zip(secrets, pool.map(session, secrets), strict=True))

    expected = {
        "basic": "Basic " + base64.b64encode(basic.encode()).decode(),
        "bearer": f"Bearer {token}",
        "none": None,
    }
    for name, run_id in run_ids.items():
        sent = [r.authorization for r in proxy.requests if run_id in r.path or run_id in r.body]
        assert len(sent) >= 3, (name, sent)  # the metric, the parameter, the end of the run
        assert set(sent) == {expected[name]}, name
    assert environments == [dict.fromkeys(CREDENTIAL_VARIABLES)] * len(secrets)
    assert all(variable not in os.environ for variable in CREDENTIAL_VARIABLES)
    client = mlflow_server.client()
    for run_id in run_ids.values():
        recorded = client.get_run(run_id)
        assert recorded.info.status == "FINISHED"
        stored = json.dumps([recorded.data.tags, recorded.data.params])
        assert KEY not in stored


# ------------------------------------------------------------------------------ a server failing mid-block
def _paused_scenario(url: str, on_error: str, cwd: Path, stop: Any) -> tuple[dict[str, Any], str]:
    """The scenario logs, says READY, and waits; ``stop()`` takes the server away; the scenario goes on."""
    env = {**os.environ, "SCENARIO_KEY": KEY, "FLYTE_CTX_TRACKING_ONLINE_TIMEOUT": "3"}
    process = subprocess.Popen(
        [sys.executable, str(SCENARIO), "mlflow", url, on_error, "pause"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )
    limit = threading.Timer(HARD_LIMIT, process.kill)  # a hang ends the scenario, and fails the test
    limit.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None and process.stdin is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("READY"):
                break
        stop()
        out, err = process.communicate("go\n", timeout=HARD_LIMIT)
    finally:
        limit.cancel()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    output = "".join(lines) + out + err
    results = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and results, output[-3000:]
    return json.loads(results[-1][len("RESULT ") :]), output


def _assert_no_key(root: Path, *texts: str) -> None:
    for text in texts:
        assert KEY not in text
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_server_stopped_mid_block_the_run_continues_offline_with_one_warning(
    tmp_path: Path, _isolated_tracking: Path
) -> None:
    with running_server(tmp_path / "dying-server") as server:
        result, output = _paused_scenario(server.url, "warn", tmp_path, server.stop)
    assert result["ran"] and result["block_done"] and result["raised"] is None
    online_id = result["run_id"]
    assert result["active_run"] == online_id  # the block's run, as the user knows it
    ours = [w for w in result["warnings"] if w["category"] == "TrackingWarning"]
    assert len(ours) == 1, ours
    message = ours[0]["message"]
    assert "continues offline" in message and online_id in message
    assert ours[0]["filename"] == str(SCENARIO)  # the user's `mlflow.log_metric` line, not MLflow's client
    assert f"mlflow ui --backend-store-uri sqlite:///{_isolated_tracking / 'mlflow' / 'mlflow.db'}" in message

    # What was logged before the server stopped is on the server's own database.
    before = MlflowClient(server.store_uri)
    assert _history(before, online_id, "loss") == [(0, 0.25)]
    assert before.get_run(online_id).data.params == {"lr": "0.01"}

    # The rest is in the offline twin, which carries the run's parameters and points at it.
    offline = _offline_client(_isolated_tracking)
    (twin,) = _all_runs(offline, f"tags.`{OFFLINE_TWIN_TAG}` = '{online_id}'")
    assert twin.info.status == "FINISHED"
    assert twin.data.params == {"lr": "0.01", "batch": "32"}
    assert twin.data.tags["phase"] == "after"
    assert _history(offline, twin.info.run_id, "loss") == [(1, 0.125), (2, 0.25 / 3)]
    assert _experiment_name(offline, twin) == "loopback"
    _assert_no_key(tmp_path, output, json.dumps(result))


@SHARED
def test_on_error_raise_a_server_gone_mid_block_raises_tracking_error_without_the_key(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    with recording_proxy(mlflow_server.url) as proxy:
        result, output = _paused_scenario(proxy.url, "raise", tmp_path, proxy.stop)
    assert result["ran"] and not result.get("block_done")
    assert result["raised"] and result["raised"].startswith("TrackingError")
    assert "Connection refused" in result["raised"] or "ConnectionError" in result["raised"]
    recorded = mlflow_server.client().get_run(result["run_id"])
    assert _history(mlflow_server.client(), result["run_id"], "loss") == [(0, 0.25)]
    assert recorded.data.params == {"lr": "0.01"}
    _assert_no_key(tmp_path, output, json.dumps(result))


# ------------------------------------------------------------------------------ autolog, offline
def _iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    return features, labels


@pytest.fixture
def _no_requirements_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Autologging saves the model, and MLflow infers its pip requirements by importing it in a
    subprocess (15 s on two busy cores): the model's default requirements are enough here."""
    import mlflow.models

    def defaults(model_uri: str, flavor: str, fallback: list[str] | None = None, **_: Any) -> list[str]:
        return list(fallback or [])

    monkeypatch.setattr(mlflow.models, "infer_pip_requirements", defaults)


@pytest.mark.usefixtures("_no_requirements_inference")
def test_flytekitplugins_mlflow_usage_with_only_the_import_changed(_isolated_tracking: Path) -> None:
    # flytekitplugins-mlflow's README, with `from flytekitplugins.mlflow import mlflow_autolog` replaced.
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    @task(enable_deck=True)
    @mlflow_autolog(framework=mlflow.sklearn)
    def train_model(max_iter: int) -> float:
        features, labels = _iris()
        model = LogisticRegression(max_iter=max_iter, C=0.5)
        model.fit(features, labels)
        return float(model.score(features, labels))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's own (signature inference, pip requirements)
        score = train_model(max_iter=200)
    client = _offline_client(_isolated_tracking)
    (run,) = _all_runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "train_model"
    assert _experiment_name(client, run) == "local workflow"  # flytekitplugins-mlflow's for local runs
    assert run.data.params["max_iter"] == "200" and run.data.params["C"] == "0.5"
    assert run.data.tags["estimator_name"] == "LogisticRegression"
    assert run.data.metrics["training_accuracy_score"] == pytest.approx(score)
    assert list((_isolated_tracking / "mlflow" / "artifacts").rglob("MLmodel"))  # the model, beside the store
    assert mlflow.active_run() is None


@pytest.mark.usefixtures("_no_requirements_inference")
def test_autolog_is_on_inside_the_block_only(_isolated_tracking: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    features, labels = _iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow_session("autolog", autolog=True, framework="sklearn") as run:
            LinearRegression().fit(features, labels)
        LinearRegression(fit_intercept=False).fit(features, labels)  # after the block: not logged
    client = _offline_client(_isolated_tracking)
    (recorded,) = _all_runs(client)
    assert recorded.info.run_id == run.info.run_id
    assert recorded.data.params["fit_intercept"] == "True"
    assert "training_score" in recorded.data.metrics
    assert mlflow.active_run() is None
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # MLflow's default store


# ------------------------------------------------------------------------------ profilers, offline
def test_memray_and_whylogs_numbers_land_in_the_active_mlflow_run(_isolated_tracking: Path) -> None:
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow_session("profiled") as run:
            assert log_to_active_trackers({"custom/peak_mb": 12.5}) == ["mlflow"]
            with memray_profile("join") as memory:
                kept = [bytearray(1024 * 1024) for _ in range(4)]
            del kept
            with whylogs_profile("tx") as data:
                data.log(pd.DataFrame({"amount": [1.0, 3.0]}))
    client = _offline_client(_isolated_tracking)
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["custom/peak_mb"] == 12.5
    assert memory.peak_memory is not None and memory.peak_memory >= 4 * 1024 * 1024
    assert metrics["memray/join/peak_memory_bytes"] == memory.peak_memory
    assert metrics["memray/join/total_allocations"] == memory.total_allocations
    assert metrics["whylogs/tx/amount/count"] == 2
    assert metrics["whylogs/tx/amount/mean"] == 2.0
    assert (metrics["whylogs/tx/amount/min"], metrics["whylogs/tx/amount/max"]) == (1.0, 3.0)
