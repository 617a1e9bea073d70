"""Offline MLflow runs, from a local store to a tracking server: found, and copied whole, once.

A copy carries the run's name, start and end times, status, parameters, tags, every metric's
history (values, steps, timestamps) and its artifacts. It is tagged with the offline run's id, so a
second sync finds it on the server and does not copy it again, even when the record of uploads was
lost. A child run keeps its parent when the parent was copied first (runs go in start order). The
offline twin of an online run that lost its server is merged into that online run instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..._offline import OfflineRun, Progress, UploadTarget
from . import _store

__all__ = ["SYNCED_FROM_TAG", "find_offline_runs", "upload_offline_run"]

STORE_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "artifacts"
SYNCED_FROM_TAG = "flyte_ctx_tracking.offline_run_id"
MERGED_TAG = "flyte_ctx_tracking.merged_offline_run_id"
ONLINE_TWIN_TAG = "flyte_ctx_tracking.online_run_id"
PARENT_TAG = "mlflow.parentRunId"
_BATCH = 1000  # MLflow accepts at most 1000 metrics, 100 params and 100 tags per log_batch
_PARAM_BATCH = 100
_TERMINAL = ("FINISHED", "FAILED", "KILLED")


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def find_offline_runs(root: Path) -> list[OfflineRun]:
    """Every run of every local store (``mlflow.db``) under ``root``, oldest first."""
    from mlflow.entities import ViewType

    found: list[tuple[int, OfflineRun]] = []
    for store in sorted(root.rglob(STORE_FILE)):
        client = _client(f"sqlite:///{store}")
        experiments = {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ALL)}
        for run in client.search_runs(list(experiments), run_view_type=ViewType.ACTIVE_ONLY, max_results=50_000):
            label = f"{experiments.get(run.info.experiment_id, '?')}/{run.info.run_name or run.info.run_id}"
            key = f"mlflow:{run.info.run_id}"  # run ids are unique: the same run in two copies is one run
            found.append((run.info.start_time or 0, OfflineRun("mlflow", store, label, key)))
    found.sort(key=lambda item: item[0])
    unique: dict[str, OfflineRun] = {}
    for _, run in found:
        unique.setdefault(run.identity, run)
    return list(unique.values())


def _run_id(run: OfflineRun) -> str:
    return run.identity.split(":", 1)[1]


def _url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _artifact_folder(artifact_uri: str, store: Path, run_id: str) -> Path | None:
    """The run's local artifacts: where the store says, else beside the store (a copy made in a pod
    keeps ``artifacts/<run id>/artifacts`` next to ``mlflow.db``)."""
    parts = urlsplit(artifact_uri)
    if parts.scheme not in ("", "file"):
        return None
    for folder in (Path(unquote(parts.path)), store.parent / ARTIFACTS_FOLDER / run_id / "artifacts"):
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    return None


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def upload_offline_run(run: OfflineRun, target: UploadTarget, progress: Progress) -> str | None:
    """Copy one offline run to ``target.options["tracking_uri"]``; return its address in MLflow's UI."""
    from mlflow.entities import Metric, Param, RunStatus

    tracking_uri = target.options["tracking_uri"]
    source = _client(f"sqlite:///{run.path}")
    offline_id = _run_id(run)
    offline = source.get_run(offline_id)
    experiment = source.get_experiment(offline.info.experiment_id)
    with _store.requests(_store.RequestPolicy.for_secret(target.key)):
        server = _client(tracking_uri)
        found = server.get_experiment_by_name(experiment.name)
        experiment_id = found.experiment_id if found is not None else server.create_experiment(experiment.name)
        copied = server.search_runs([experiment_id], f"tags.`{SYNCED_FROM_TAG}` = '{offline_id}'", max_results=1)
        if copied and copied[0].info.status in _TERMINAL:
            return _url(tracking_uri, experiment_id, copied[0].info.run_id)  # copied by an earlier sync
        for partial in copied:  # an earlier sync stopped half way: start again
            server.delete_run(partial.info.run_id)
        tags = dict(offline.data.tags)
        target_id = _merge_target(server, tags, offline_id)
        if target_id is None:
            parent = tags.pop(PARENT_TAG, None)
            if parent:
                parents = server.search_runs([experiment_id], f"tags.`{SYNCED_FROM_TAG}` = '{parent}'", max_results=1)
                if parents:
                    tags[PARENT_TAG] = parents[0].info.run_id
            tags[SYNCED_FROM_TAG] = offline_id
            created = server.create_run(
                experiment_id, start_time=offline.info.start_time, tags=tags, run_name=offline.info.run_name
            )
            target_id = created.info.run_id
        else:
            online = server.get_run(target_id)
            if online.data.tags.get(MERGED_TAG) == offline_id and online.info.status in _TERMINAL:
                return _url(tracking_uri, experiment_id, target_id)  # merged by an earlier sync
        progress(0.1)
        params = [Param(key, value) for key, value in offline.data.params.items()]
        for chunk in _chunks(params, _PARAM_BATCH):
            server.log_batch(target_id, params=chunk)
        keys = sorted(offline.data.metrics)
        for done, key in enumerate(keys, start=1):
            history = source.get_metric_history(offline_id, key)
            metrics = [Metric(m.key, m.value, m.timestamp, m.step) for m in history]
            for chunk in _chunks(metrics, _BATCH):
                server.log_batch(target_id, metrics=chunk)
            progress(0.1 + 0.7 * done / len(keys))
        folder = _artifact_folder(offline.info.artifact_uri, run.path, offline_id)
        if folder is not None:
            server.log_artifacts(target_id, str(folder))
        progress(0.9)
        status = offline.info.status if offline.info.status in _TERMINAL else "KILLED"
        if MERGED_TAG not in tags and ONLINE_TWIN_TAG in offline.data.tags and SYNCED_FROM_TAG not in tags:
            server.set_tag(target_id, MERGED_TAG, offline_id)  # last: a merge cut short is done again
        # Through the store: the client's set_terminated prints the run's address, which the table shows.
        _store.store_for(tracking_uri).update_run_info(
            target_id, RunStatus.from_string(status), offline.info.end_time, None
        )
        return _url(tracking_uri, experiment_id, target_id)


def _merge_target(server: Any, tags: dict[str, str], offline_id: str) -> str | None:
    """The online run an offline twin continues, when the server has it."""
    online_id = tags.pop(ONLINE_TWIN_TAG, None)
    if not online_id:
        return None
    try:
        return str(server.get_run(online_id).info.run_id)
    except Exception:  # the server never had it (another server now): copy as a run of its own
        tags[ONLINE_TWIN_TAG] = online_id
        return None
