"""Comet's and Neptune's run modes and rank scopes (issue 17), with the real clients offline.

One torch-elastic-like job (tests/scenarios/ranked_sessions.py: 2 nodes x 2 local ranks, one process
per rank, a pod's environment) opens every supported run mode x rank scope in each rank; the test
reads back which experiments and runs exist, their keys and ids, and who wrote what, from Comet's
archives and Neptune's operation logs, as ``comet upload`` and ``neptune sync`` would upload them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flyte_ctx_tracking import comet_ml_login, comet_session, neptune_init_run, neptune_session, tracking_defaults
from flyte_ctx_tracking.sessions.comet import (
    CometSession,
    flyte_experiment_key,
    is_valid_experiment_key,
    shared_experiment_key,
    shared_link_suffix,
)

from .comet_archive import CometArchive, archives
from .conftest import EXECUTION_NAME, REPO
from .neptune_oplog import OfflineRun, offline_runs

SCENARIO = Path(__file__).parent / "scenarios" / "ranked_sessions.py"
NODES, PER_NODE = 2, 2
RANKS = range(NODES * PER_NODE)
PODS = [f"{EXECUTION_NAME}-n0-0-worker-{node}" for node in range(NODES)]  # a training operator's replicas
FAILING_RANK = 3


def _node(rank: int) -> int:
    return rank // PER_NODE


def _writer(rank: int) -> str:
    """How a shared run names a writer: its pod, then its rank."""
    return f"{PODS[_node(rank)]}-rank{rank}"


@dataclass
class Job:
    tracking: Path
    seen: dict[int, dict[str, Any]]
    """What each rank saw: keys and run ids it opened, its warnings."""


@pytest.fixture
def job(_isolated_tracking: Path, tmp_path: Path) -> Job:
    """Launch the job once, every rank at once, with a pod's environment (over the test's clean one)."""
    env = {name: value for name, value in os.environ.items() if name != "COMET_START_MODE"}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "FLYTE_INTERNAL_EXECUTION_ID": EXECUTION_NAME,
            "FLYTE_INTERNAL_EXECUTION_PROJECT": "flytesnacks",
            "FLYTE_INTERNAL_EXECUTION_DOMAIN": "development",
            "FLYTE_INTERNAL_TASK_NAME": "wf.train",
            "FLYTE_ATTEMPT_NUMBER": "0",
        }
    )
    (tmp_path / "seen").mkdir()
    done = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path / "seen"), str(NODES), str(PER_NODE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = {rank: json.loads((tmp_path / "seen" / f"rank{rank}.json").read_text()) for rank in RANKS}
    return Job(_isolated_tracking, seen)


def _by_project(tracking: Path) -> dict[str, list[CometArchive]]:
    found: dict[str, list[CometArchive]] = defaultdict(list)
    for archive in archives(tracking / "comet"):
        found[str(archive.project)].append(archive)
    return found


def _writer_of(archive: CometArchive) -> int:
    """The rank that wrote an archive: the one metric it logged is named after it."""
    names = {p["metric"]["metricName"] for p in archive.payloads("metric_msg")}
    ranks = [int(name[4:]) for name in names if name.startswith("rank")]
    assert len(ranks) == 1, names
    return ranks[0]


def _rank_of(run: OfflineRun) -> int:
    """The rank that wrote a Neptune run: the one series it logged is named after it."""
    names = {"/".join(op["path"]) for op in run.operations if op["type"] == "LogFloats"}
    ranks = [int(name.removeprefix("metrics/rank")) for name in names if name.startswith("metrics/rank")]
    assert len(ranks) == 1, names
    return ranks[0]


def test_a_ranked_job_writes_where_each_run_mode_and_rank_scope_says(job: Job) -> None:
    comet = _by_project(job.tracking)
    assert sorted(comet) == ["new-rank", "new-worker", "shared-global", "shared-worker"]
    for found in comet.values():
        for archive in found:  # the workflow's defaults: its entity, its tags after the session's own
            assert archive.workspace == "ml-team"
            assert {"mine", "job", "flytesnacks"} <= set(archive.tags)

    # shared x global: every rank wrote an archive of the one experiment, whose key a console link can
    # compute from the execution's name; uploading the archives appends them into that experiment.
    key = shared_experiment_key(EXECUTION_NAME, "shared-global", "ml-team")
    assert key == EXECUTION_NAME + shared_link_suffix("shared-global", "ml-team") and is_valid_experiment_key(key)
    shared = {_writer_of(archive): archive for archive in comet["shared-global"]}
    assert sorted(shared) == list(RANKS) and {archive.key for archive in shared.values()} == {key}
    assert all(archive.experiment["resume_strategy"] == "get_or_create" for archive in shared.values())
    assert all(job.seen[rank]["comet"]["shared-global"] == key for rank in RANKS)
    # each archive in its writer's folder: two ranks of one node never write one file
    assert len({archive.path.parent for archive in shared.values()}) == len(RANKS)
    for rank, archive in shared.items():
        others = archive.others
        # what every writer has alike at the top; what is each writer's own under its name
        assert others["flyte/name"] == EXECUTION_NAME and others["flyte/run_mode"] == "shared"
        assert others["flyte/shared_id"] == EXECUTION_NAME and others["flyte/rank_scope"] == "global"
        assert "flyte/execution_id" not in others and "flyte/task/name" not in others
        mine = f"flyte/writers/{_writer(rank)}/"
        assert others[mine + "execution_id"] == PODS[_node(rank)] and others[mine + "task/name"] == "wf.train"
        assert (others[mine + "rank"], others[mine + "group_rank"], others[mine + "attempt"]) == (rank, _node(rank), 0)
        failed = rank == FAILING_RANK
        assert others[mine + "status"] == ("failed" if failed else "succeeded")
        # the experiment's own status only ever says failed: a later writer's success cannot hide it
        assert others.get("flyte/status") == ("failed" if failed else None)
        assert archive.error_reported == failed

    # shared x worker: one experiment per node, written by that node's ranks
    for node in range(NODES):
        key = shared_experiment_key(f"{EXECUTION_NAME}-worker{node}", "shared-worker", "ml-team")
        writers = sorted(_writer_of(archive) for archive in comet["shared-worker"] if archive.key == key)
        assert writers == [rank for rank in RANKS if _node(rank) == node]
    assert len({archive.key for archive in comet["shared-worker"]}) == NODES

    # new x worker: each node's local rank 0 opens an experiment of its own; the others get None.
    # Rank 0 keeps the key its pod gets with rank_scope="global" (flytekitplugins-comet-ml's, the
    # console link's); node 1's is derived from its pod name and worker number.
    new_worker = {_writer_of(archive): archive.key for archive in comet["new-worker"]}
    assert new_worker == {
        0: flyte_experiment_key(PODS[0], "new-worker", "ml-team", pod_name=PODS[0]),
        2: flyte_experiment_key(f"{PODS[1]}-worker1", "new-worker", "ml-team", pod_name=PODS[1]),
    }
    assert [job.seen[rank]["comet"]["new-worker"] is None for rank in RANKS] == [False, True, False, True]

    # new x rank: an experiment per rank, each with a key of its own
    new_rank = {_writer_of(archive): archive for archive in comet["new-rank"]}
    assert sorted(new_rank) == list(RANKS) and len({archive.key for archive in new_rank.values()}) == len(RANKS)
    assert new_rank[0].key == flyte_experiment_key(PODS[0], "new-rank", "ml-team", pod_name=PODS[0])
    for rank, archive in new_rank.items():
        assert archive.others["flyte/rank"] == rank and archive.others["flyte/execution_id"] == PODS[_node(rank)]
        assert archive.others["flyte/run_mode"] == "new" and archive.others["flyte/rank_scope"] == "rank"

    # `flyte-ctx-tracking sync` finds every archive, and would upload each once
    from rich.console import Console

    from flyte_ctx_tracking._sync import WOULD_UPLOAD, sync_offline_runs

    results = sync_offline_runs(job.tracking, backends=["comet"], dry_run=True, console=Console(file=io.StringIO()))
    assert len(results) == sum(len(found) for found in comet.values()) == 14
    assert {result.status for result in results} == {WOULD_UPLOAD}
    assert len({result.run.label for result in results}) == 14  # a shared writer's folder tells its archive apart
    assert {run.path for run in CometSession._find_offline(job.tracking)} == {
        archive.path for found in comet.values() for archive in found
    }

    # Neptune: a run per worker and per rank; offline, shared falls back to a run per writer
    neptune: dict[str, list[OfflineRun]] = defaultdict(list)
    for run in offline_runs(job.tracking / "neptune"):
        neptune[run.value("sys/name")].append(run)
    assert sorted(neptune) == ["default-nested", "new-rank", "new-worker", "shared-global"]

    def ids(name: str) -> dict[int, str]:
        return {_rank_of(run): run.value("flyte/custom_run_id") for run in neptune[name]}

    base = f"{EXECUTION_NAME}-n0-0"  # execution, node, attempt: the replica suffix left out
    assert ids("new-worker") == {0: f"{base}-worker0", 2: f"{base}-worker1"}
    assert ids("new-rank") == {rank: f"{base}-rank{rank}" for rank in RANKS}
    assert ids("shared-global") == {rank: f"{base}-rank{rank}" for rank in RANKS}
    for run in neptune["shared-global"]:
        # found together by the shared identity, each a run of its own
        assert run.value("flyte/shared_id") == EXECUTION_NAME and run.value("flyte/run_mode") == "new"
    for run in neptune["new-rank"]:
        assert run.tags >= {"mine", "job"} and run.value("flyte/rank_scope") == "rank"
        assert run.value("flyte/execution_id") == PODS[_node(run.value("flyte/rank"))]
    assert len(neptune["default-nested"]) == len(RANKS)
    for rank in RANKS:
        warned = job.seen[rank]["warnings"]
        shared = [message for message in warned if "run_mode='shared'" in message]
        nested = [message for message in warned if "run_mode='nested'" in message]
        assert len(shared) == 1 and "(online it can)" in shared[0] and repr(EXECUTION_NAME) in shared[0]
        assert len(nested) == 1 and "(online it can)" not in nested[0]
        assert len(warned) == 2, warned  # Comet shares offline: nothing to warn about

    # Online, every rank of a scope opens the one run its custom_run_id names (the server joins them)
    for rank in RANKS:
        online = job.seen[rank]["neptune_online"]
        assert online["global"] == {"opens": True, "custom_run_id": EXECUTION_NAME}
        assert online["worker"] == {"opens": True, "custom_run_id": f"{EXECUTION_NAME}-worker{_node(rank)}"}


# ---------------------------------------------------------------------------- checked at construction


@pytest.mark.parametrize("make", [comet_session, neptune_session])
def test_nested_is_refused_naming_the_modes_the_backend_has(make: Any) -> None:
    with pytest.raises(ValueError, match=r"run_mode='nested' is not supported; use one of 'auto', 'new', 'shared'"):
        make(run_mode="nested")
    with pytest.raises(ValueError, match=r"all_ranks=True is rank_scope='rank'.*rank_scope='worker'"):
        make(all_ranks=True, rank_scope="worker")


def test_a_shared_comet_session_refuses_a_start_mode_that_would_not_share() -> None:
    with pytest.raises(ValueError, match=r"start_mode='create' contradicts run_mode='shared'"):
        comet_session(run_mode="shared", start_mode="create")
    comet_session(run_mode="shared", start_mode="get_or_create")  # what shared does anyway


# ---------------------------------------------------------------------------- console links


def test_console_links_of_shared_runs_point_at_what_exists() -> None:
    new = comet_ml_login(project_name="fraud", workspace="ml-team")
    assert new.get_extra_config()["link_type"] == "comet-ml-execution-id"  # unchanged
    shared = comet_ml_login(project_name="fraud", workspace="ml-team", run_mode="shared")
    config = shared.get_extra_config()
    assert config["link_type"] == "comet-ml-shared-id"
    # the link template's {{ .executionName }}{{ .taskConfig.link_suffix }} is the shared experiment's key
    assert EXECUTION_NAME + config["link_suffix"] == shared_experiment_key(EXECUTION_NAME, "fraud", "ml-team")
    per_worker = comet_ml_login(project_name="fraud", workspace="ml-team", run_mode="shared", rank_scope="worker")
    assert "link_type" not in per_worker.get_extra_config()  # no one link points at every worker's experiment
    own = comet_ml_login(project_name="fraud", workspace="ml-team", run_mode="shared", experiment_key="k" * 32)
    assert own.get_extra_config()["link_type"] == "comet-ml-custom-id"

    assert neptune_init_run("ml-team/fraud").get_extra_config()["link_type"] == "neptune-run-id"
    assert neptune_init_run("ml-team/fraud", run_mode="shared").get_extra_config()["link_type"] == "neptune-execution"


def test_workflow_defaults_reach_the_links_as_the_runs(recwarn: pytest.WarningsRecorder) -> None:
    with tracking_defaults(project="fraud", entity="ml-team", run_mode="shared"):
        comet = comet_ml_login().get_extra_config()
        assert (comet["project_name"], comet["workspace"], comet["link_type"]) == (
            "fraud",
            "ml-team",
            "comet-ml-shared-id",
        )
        # Neptune's project is "workspace/project": the entity names the workspace
        neptune = neptune_init_run().get_extra_config()
        assert (neptune["project"], neptune["link_type"]) == ("ml-team/fraud", "neptune-execution")
        assert neptune_init_run("ops/mine").get_extra_config()["project"] == "ops/mine"  # its own wins
    with tracking_defaults(project="fraud"):
        assert "project" not in neptune_init_run().get_extra_config()
    assert any("'fraud' is not a Neptune project" in str(warning.message) for warning in recwarn)
