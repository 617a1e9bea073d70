"""Offline MLflow runs, from a local store to a tracking server: found, and copied whole, once.

A copy carries the run's name, start and end times, status, parameters, tags, every metric's
history (values, steps, timestamps) and its artifacts. It is tagged with the offline run's id, so a
second sync finds it on the server and does not copy it again, even when the record of uploads was
lost. The offline twin of an online run that lost its server is merged into that online run instead.

Runs several writers share are merged, not copied: each pod has a store of its own, with its own
copy of the execution's shared run and parent run, and on the server they become ONE run again.
An offline shared run (tag ``flyte_ctx_tracking.shared_run``) and an offline execution parent
(``flyte_ctx_tracking.execution_parent``) are merged into the server's run of the same tag, found
or created as the sessions do it (:func:`._shared.find_or_create`), and a child keeps its parent
as that one run. Each merge leaves ``flyte_ctx_tracking.merged.<offline run id>`` on the run, so
that it is never merged twice. A store copied several times (each rank of a pod copies it when its
session closes) is read from the copy that holds the most.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..._offline import OfflineRun, Progress, UploadTarget
from . import _shared, _store

__all__ = ["SYNCED_FROM_TAG", "find_offline_runs", "upload_offline_run"]

STORE_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "artifacts"
SYNCED_FROM_TAG = "flyte_ctx_tracking.offline_run_id"
MERGED_TAG = "flyte_ctx_tracking.merged_offline_run_id"  # an earlier version's mark of a merged twin
MERGED_PREFIX = "flyte_ctx_tracking.merged."
ONLINE_TWIN_TAG = "flyte_ctx_tracking.online_run_id"
PARENT_TAG = "mlflow.parentRunId"
_BATCH = 1000  # MLflow accepts at most 1000 metrics, 100 params and 100 tags per log_batch
_PARAM_BATCH = 100
_TERMINAL = ("FINISHED", "FAILED", "KILLED")
_CLAIM_WAIT = 10.0
# Tags that say where a run came from or what it was merged from: never carried into another run.
_OWN_TAGS = (SYNCED_FROM_TAG, MERGED_TAG, ONLINE_TWIN_TAG, PARENT_TAG, "mlflow.runName")


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def find_offline_runs(root: Path) -> list[OfflineRun]:
    """Every run of every local store (``mlflow.db``) under ``root``, oldest first."""
    from mlflow.entities import ViewType

    # Run ids are unique: the same run in two copies of a store is one run, read from the fuller copy.
    best: dict[str, tuple[tuple[int, ...], int, OfflineRun]] = {}
    for store in sorted(root.rglob(STORE_FILE)):
        client = _client(f"sqlite:///{store}")
        experiments = {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ALL)}
        for run in client.search_runs(list(experiments), run_view_type=ViewType.ACTIVE_ONLY, max_results=50_000):
            label = f"{experiments.get(run.info.experiment_id, '?')}/{run.info.run_name or run.info.run_id}"
            key = f"mlflow:{run.info.run_id}"
            fullness = _fullness(run)
            if key not in best or fullness > best[key][0]:
                best[key] = (fullness, run.info.start_time or 0, OfflineRun("mlflow", store, label, key))
    return [run for _, _, run in sorted(best.values(), key=lambda item: item[1])]


def _fullness(run: Any) -> tuple[int, ...]:
    """How much of a run a copy holds: a later copy of a store has more writers ended, a later end,
    more metrics, parameters and tags (a store only grows)."""
    tags = run.data.tags
    ended = sum(
        key.startswith(_shared.WRITER_PREFIX) and value.split(":", 1)[0] in _TERMINAL for key, value in tags.items()
    )
    data = run.data
    return ended, run.info.end_time or 0, len(data.metrics), len(data.params), len(tags)


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
    """Copy one offline run to ``target.options["tracking_uri"]`` (or merge it into the run it is part
    of there); return its address in MLflow's UI."""
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
        if target_id is None and _shared.group_tag(tags) is not None:
            target_id = _group_run(server, experiment.name, experiment_id, offline)
        if target_id is None:
            tags = _reattached(server, source, experiment.name, experiment_id, tags)
            tags[SYNCED_FROM_TAG] = offline_id
            created = server.create_run(
                experiment_id, start_time=offline.info.start_time, tags=tags, run_name=offline.info.run_name
            )
            _copy(source, server, run, offline, created.info.run_id, progress, merge=False)
            _end(tracking_uri, created.info.run_id, offline)
            return _url(tracking_uri, experiment_id, created.info.run_id)
        online = server.get_run(target_id)
        if not _merged(online.data.tags, offline_id):
            _copy(source, server, run, offline, target_id, progress, merge=True)
            server.set_tag(target_id, MERGED_PREFIX + offline_id, run.label)  # last: a merge cut short is done again
        _end(tracking_uri, target_id, offline, merged=True)
        _end_as_child(server, tracking_uri, target_id, offline)
        return _url(tracking_uri, experiment_id, target_id)


def _merged(tags: Mapping[str, str], offline_id: str) -> bool:
    return MERGED_PREFIX + offline_id in tags or tags.get(MERGED_TAG) == offline_id


def _copy(
    source: Any, server: Any, run: OfflineRun, offline: Any, target_id: str, progress: Progress, *, merge: bool
) -> None:
    """The offline run's parameters, metrics and artifacts (and when merging, its tags) into ``target_id``."""
    from mlflow.entities import Metric, Param, RunTag

    offline_id = offline.info.run_id
    progress(0.1)
    params = [Param(key, value) for key, value in offline.data.params.items()]
    if merge and params:
        # Writers of one shared run in two pods that logged one parameter with two values: each keeps its own.
        writers = sorted(key.removeprefix(_shared.WRITER_PREFIX) for key in offline.data.tags if _is_writer(key))
        label = "+".join(writers)[:100] or offline_id
        params, _ = _shared.split_conflicting_params(server.get_run(target_id).data.params, params, label)
    for chunk in _chunks(params, _PARAM_BATCH):
        server.log_batch(target_id, params=chunk)
    if merge:
        # A writer's tag from an earlier attempt (that ran offline) never replaces a retry's.
        current = server.get_run(target_id).data.tags
        tags = [
            RunTag(key, value)
            for key, value in offline.data.tags.items()
            if not _not_carried(key) and (not _is_writer(key) or _shared.supersedes(value, current.get(key)))
        ]
        for chunk in _chunks(tags, _PARAM_BATCH):
            server.log_batch(target_id, tags=chunk)
    keys = sorted(offline.data.metrics)
    for done, key in enumerate(keys, start=1):
        history = source.get_metric_history(offline_id, key)
        metrics = [Metric(m.key, m.value, m.timestamp, m.step) for m in history]
        for chunk in _chunks(metrics, _BATCH):
            server.log_batch(target_id, metrics=chunk)  # a metric already there (a merge redone) is not doubled
        progress(0.1 + 0.7 * done / len(keys))
    folder = _artifact_folder(offline.info.artifact_uri, run.path, offline_id)
    if folder is not None:
        server.log_artifacts(target_id, str(folder))
    progress(0.9)


def _is_writer(key: str) -> bool:
    return key.startswith(_shared.WRITER_PREFIX)


def _not_carried(key: str) -> bool:
    """Tags a merge leaves out: where the run came from, and the identity the target has already."""
    return (
        key in _OWN_TAGS or key.startswith(MERGED_PREFIX) or key in (_shared.SHARED_TAG, _shared.EXECUTION_PARENT_TAG)
    )


def _end(tracking_uri: str, target_id: str, offline: Any, *, merged: bool = False) -> None:
    """The status of the copy: the offline run's; for a run several writers share, all of theirs."""
    from mlflow.entities import RunStatus

    store = _store.store_for(tracking_uri)
    if merged and _shared.settle(store, target_id) is not None:
        return
    status = offline.info.status if offline.info.status in _TERMINAL else "KILLED"
    # Through the store: the client's set_terminated prints the run's address, which the table shows.
    store.update_run_info(target_id, RunStatus.from_string(status), offline.info.end_time, None)


def _end_as_child(server: Any, tracking_uri: str, target_id: str, offline: Any) -> None:
    """A child of an execution parent that lost its server mid-block ended in its offline twin, where
    its parent could not be told: tell it now."""
    online = server.get_run(target_id).data.tags
    parent, key = online.get(PARENT_TAG), online.get(_shared.WRITER_TAG)
    if not parent or not key or ONLINE_TWIN_TAG not in offline.data.tags:
        return
    parent_tags = server.get_run(parent).data.tags
    status = offline.info.status if offline.info.status in _TERMINAL else "KILLED"
    previous = parent_tags.get(_shared.WRITER_PREFIX + key, "")
    writer = previous.split(":", 1)[1].strip() if ":" in previous else ""
    _shared.leave(_store.store_for(tracking_uri), parent, key, _shared.writer_value(status, writer))


def _group_run(server: Any, experiment_name: str, experiment_id: str, offline: Any) -> str:
    """The server's run an offline shared run or execution parent is part of: found by its tag, or
    created (as the offline one, without its writers) by the first to claim it."""
    tag, value = _shared.group_tag(offline.data.tags) or ("", "")

    def create() -> str:
        tags = {key: text for key, text in offline.data.tags.items() if not _not_carried(key) and not _is_writer(key)}
        tags[tag] = value
        created = server.create_run(
            experiment_id, start_time=offline.info.start_time, tags=tags, run_name=offline.info.run_name
        )
        return str(created.info.run_id)

    return _shared.find_or_create(server, experiment_name, experiment_id, tag, value, create, wait=_CLAIM_WAIT)


def _reattached(
    server: Any, source: Any, experiment_name: str, experiment_id: str, tags: dict[str, str]
) -> dict[str, str]:
    """``tags`` with the parent the copy has on the server: the one execution parent for a child of
    one (whichever pod's store it was in), else the copy of its offline parent when that was copied."""
    parent = tags.pop(PARENT_TAG, None)
    if not parent:
        return tags
    try:
        offline_parent = source.get_run(parent)
    except Exception:  # a parent outside this store (an online one the run could not nest under)
        offline_parent = None
    if offline_parent is not None and _shared.group_tag(offline_parent.data.tags) is not None:
        tags[PARENT_TAG] = _group_run(server, experiment_name, experiment_id, offline_parent)
        return tags
    parents = server.search_runs([experiment_id], f"tags.`{SYNCED_FROM_TAG}` = '{parent}'", max_results=1)
    if parents:
        tags[PARENT_TAG] = parents[0].info.run_id
    return tags


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
