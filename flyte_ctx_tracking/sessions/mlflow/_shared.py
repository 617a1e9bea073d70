"""Runs several writers share: an execution's parent run and a shared run.

MLflow chooses run ids itself, so a run that every task and rank of an execution must find is
identified by a tag (``flyte_ctx_tracking.shared_run``, ``flyte_ctx_tracking.execution_parent``)
and found by searching it, or created by the first writer. Writers that start at the same moment
(the ranks of a job, the pods of a fan-out) must not each create one:

* **Who creates it** is decided by a unique name, not by time. The first writer to create an
  experiment named after the run's tag (a *claim*: MLflow refuses a second experiment of one name,
  atomically, on a server and in a SQLite store alike) creates the run; the others wait until the
  run appears under its tag. Settling on the oldest of several runs created at once would depend on
  start times the clients' clocks assign before the server stores the run, so two writers could each
  see theirs as the oldest, and clocks of different pods differ. The claim is moved to MLflow's
  trash at once (a deleted experiment keeps its name), so it never shows among the experiments.
* A claim whose writer died before it created the run is passed over after a bounded wait: the
  next claim (a second name) decides again.

Every writer records itself on the run as a tag, ``flyte_ctx_tracking.writer.<writer>``, whose value
starts with its status (``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED``). The run's status is
theirs together (:func:`settle`): ``FAILED`` once a writer's last attempt failed, else ``KILLED``,
else ``RUNNING`` while one writes, else ``FINISHED``. A retry is the same writer, so a retry that
succeeds takes back its failed attempt's ``FAILED``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from ..._context import ExecutionContext

__all__ = [
    "CLAIM_TAG",
    "EXECUTION_PARENT_TAG",
    "SHARED_TAG",
    "WRITER_PREFIX",
    "WRITER_TAG",
    "find_or_create",
    "group_tag",
    "join",
    "leave",
    "split_conflicting_params",
    "status_of",
    "supersedes",
    "writer_key",
]

SHARED_TAG = "flyte_ctx_tracking.shared_run"
"""The shared run's identity (the execution's name, plus ``-worker<N>``/``-rank<N>`` by scope)."""
EXECUTION_PARENT_TAG = "flyte_ctx_tracking.execution_parent"
"""The execution parent's identity: ``<project>/<domain>/<execution>`` in a pod."""
WRITER_PREFIX = "flyte_ctx_tracking.writer."
"""A writer's tag on the run it shares: ``<prefix><writer>`` = ``<STATUS>: <who>``."""
WRITER_TAG = "flyte_ctx_tracking.writer"
"""On a child of an execution parent: the writer it is on its parent (for ``sync``)."""
CLAIM_TAG = "flyte_ctx_tracking.claim"
_CLAIM_PREFIX = "flyte-ctx-tracking-claim-"
_CLAIM_GENERATIONS = 2
_ORDER = ("FAILED", "KILLED", "RUNNING", "FINISHED")
_SETTLE_ROUNDS = 5
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- /]")
_KEY_LIMIT = 200


def group_tag(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """``(tag, identity)`` of a run several writers share (a shared run, an execution parent), else None."""
    for tag in (SHARED_TAG, EXECUTION_PARENT_TAG):
        if tags.get(tag):
            return tag, tags[tag]
    return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _claim_name(experiment_name: str, experiment_id: str, tag: str, value: str, generation: int) -> str:
    digest = hashlib.sha256(f"{experiment_id}\0{tag}\0{value}\0{generation}".encode()).hexdigest()[:32]
    name = f"{_CLAIM_PREFIX}{digest}"
    # Where experiment names are paths (Databricks), the claim goes beside the experiment.
    folder = experiment_name.rsplit("/", 1)[0] if experiment_name.startswith("/") else ""
    return f"{folder}/{name}" if folder else name


def _found(client: Any, experiment_id: str, query: str) -> str | None:
    runs = client.search_runs([experiment_id], query, max_results=50)
    if not runs:
        return None
    # Two runs of one identity only after a passed-over claim came back to life: all settle on one.
    return str(min(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id)).info.run_id)


def find_or_create(
    client: Any,
    experiment_name: str,
    experiment_id: str,
    tag: str,
    value: str,
    create: Callable[[], str],
    *,
    wait: float,
) -> str:
    """The id of the run tagged ``tag = value`` in the experiment, created by ``create`` by the one
    writer that claims it first; the others wait up to ``wait`` seconds per claim for it to appear.

    Raises ``TimeoutError`` when no run appeared (every claimer died), and MLflow's own errors.
    """
    query = f"tags.`{tag}` = '{_escape(value)}'"
    for generation in range(_CLAIM_GENERATIONS):
        existing = _found(client, experiment_id, query)
        if existing is not None:
            return existing
        claim = _claim_name(experiment_name, experiment_id, tag, value, generation)
        try:
            claim_id = client.create_experiment(claim, tags={CLAIM_TAG: f"{tag}={value} in experiment {experiment_id}"})
        except Exception as error:
            if getattr(error, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
            existing = _await(client, experiment_id, query, wait)
            if existing is not None:
                return existing
            continue  # its claimer never created the run: the next claim decides
        try:
            return create()
        finally:
            with suppress(Exception):  # to the trash: its name stays taken, and it is out of sight
                client.delete_experiment(claim_id)
    raise TimeoutError(
        f"no run tagged {tag}={value!r} appeared within {wait:g} s of each of {_CLAIM_GENERATIONS} claims "
        "(the writers that claimed it stopped before creating it)"
    )


def _await(client: Any, experiment_id: str, query: str, wait: float) -> str | None:
    deadline = time.monotonic() + wait
    pause = 0.02
    while True:
        existing = _found(client, experiment_id, query)
        if existing is not None or time.monotonic() >= deadline:
            return existing
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.5)


# ------------------------------------------------------------------------------ writers


def writer_key(context: ExecutionContext, function: str | None) -> str:
    """What tells this writer apart on a run it shares, the same for each retry: the node (with its
    map index) in a pod, the task or function locally, and the rank in distributed training."""
    if context.is_remote and context.group:
        key = context.group
        if context.execution_name and key.startswith(f"{context.execution_name}-"):
            key = key[len(context.execution_name) + 1 :]
    else:
        key = (context.task_name or function or "").rsplit(".", 1)[-1] or "block"
        if context.map_index is not None:
            key += f"-{context.map_index}"
    if context.is_distributed:
        key += f"-rank{context.rank}"
    return _UNSAFE.sub("_", key)[:_KEY_LIMIT]


def writer_value(status: str, writer: str, error: BaseException | None = None, attempt: int | None = None) -> str:
    """The value of a writer's tag: its status first, then who it is, its attempt in a pod (and what
    failed it)."""
    value = f"{status}: {writer}" if writer else status
    if attempt is not None:
        value += f", attempt {attempt}"
    if error is not None:
        value += f" ({type(error).__name__})"
    return value[:5000]


_ATTEMPT = re.compile(r", attempt (\d+)")


def supersedes(incoming: str, current: str | None) -> bool:
    """Whether a writer's tag value ``incoming`` (merged by ``sync``) replaces ``current``: a later
    attempt's always, the same attempt's unless it would take an ended writer back to running."""
    if current is None:
        return True
    attempts = [int(match.group(1)) if match else 0 for match in map(_ATTEMPT.search, (incoming, current))]
    if attempts[0] != attempts[1]:
        return attempts[0] > attempts[1]
    return not (incoming.startswith("RUNNING") and not current.startswith("RUNNING"))


def status_of(tags: Mapping[str, str]) -> str | None:
    """The status the writers' tags make together, or None without writers."""
    statuses = {value.split(":", 1)[0].strip() for key, value in tags.items() if key.startswith(WRITER_PREFIX)}
    for status in _ORDER:
        if status in statuses:
            return status
    return None


def _settle(store: Any, run_id: str) -> str | None:
    """Set the run's status to its writers' (:func:`status_of`), and check it again after writing:
    a writer closing at the same moment may have changed a tag in between. The last writer to check
    sees every tag, so the run ends with the status of all of them."""
    from mlflow.entities import RunStatus

    written: str | None = None
    for _ in range(_SETTLE_ROUNDS):
        status = status_of(store.get_run(run_id).data.tags)
        if status is None or status == written:
            return status
        end = None if status == "RUNNING" else int(time.time() * 1000)
        store.update_run_info(run_id, RunStatus.from_string(status), end, None)
        written = status
    return written


def join(store: Any, run_id: str, key: str, value: str, tags: Mapping[str, str] | None = None) -> None:
    """Record ``key`` as a writer of the run (``value``: :func:`writer_value`, running), with the
    writer's own ``tags``."""
    from mlflow.entities import RunTag

    entries = [RunTag(name, text) for name, text in (tags or {}).items()]
    entries.append(RunTag(WRITER_PREFIX + key, value))
    store.log_batch(run_id, metrics=[], params=[], tags=entries)
    _settle(store, run_id)


def leave(store: Any, run_id: str, key: str, value: str | None) -> None:
    """Record how the writer ``key`` ended (``value``), or withdraw it (None), and settle the status."""
    from mlflow.entities import RunTag

    if value is None:
        with suppress(Exception):  # never recorded: nothing to withdraw
            store.delete_tag(run_id, WRITER_PREFIX + key)
    else:
        store.set_tag(run_id, RunTag(WRITER_PREFIX + key, value))
    _settle(store, run_id)


def settle(store: Any, run_id: str) -> str | None:
    """:func:`_settle`, for the runs ``sync`` merged writers into."""
    return _settle(store, run_id)


def split_conflicting_params(
    existing: Mapping[str, str], params: Sequence[Any], label: str, mine: Mapping[str, str] | None = None
) -> tuple[list[Any], dict[str, tuple[str, str]]]:
    """``params`` to log into a shared run whose parameters are ``existing``: those another writer
    logged with another value are renamed ``<key>/<label>``. Returns the parameters to log, and the
    renamed ones (``{key: (theirs, ours)}``). Nothing is renamed when this writer changed a value it
    logged itself (``mine``): that is the caller's mistake, and MLflow's error.
    """
    from mlflow.entities import Param

    kept: list[Any] = []
    renamed: dict[str, tuple[str, str]] = {}
    for param in params:
        value = str(param.value)
        theirs = existing.get(param.key)
        own = f"{param.key}/{label}"
        if theirs is None or theirs == value:
            kept.append(param)
        elif (mine or {}).get(param.key, value) != value or existing.get(own, value) != value:
            return list(params), {}
        else:
            renamed[param.key] = (theirs, value)
            kept.append(Param(own, value))
    return kept, renamed
