"""W&B's run modes and rank scopes: real jobs, real pods, read back from the run files W&B wrote.

A torch elastic job is launched the way its operator runs it: two pods ("nodes"), each running two
rank processes through ``pyflyte-execute`` at once, with the elastic variables set per process. A
workflow's tasks run pod by pod with one execution id. W&B's shared mode needs its server (it
cannot share a run offline), so the one online test records what ``wandb.init`` is asked for and
then runs the same run offline.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from flyte_ctx_tracking import TrackingWarning, tracking_defaults, wandb_init, wandb_session
from flyte_ctx_tracking.sessions import wandb as wandb_module

from .conftest import EXECUTION_NAME, run_pod_job
from .wandb_records import WandbRunFile, find_runs

NODE0, NODE1 = (f"{EXECUTION_NAME}-n0-0-worker-{node}" for node in (0, 1))

JOB = """
from flytekit import task
from flyte_ctx_tracking import execution_context, wandb_session

@task
def train() -> int:
    rank = execution_context().rank
    # (The global and rank scopes' runs are the contract suite's and test_wandb's: one open each.)
    combinations = ({"rank_scope": "worker"}, {"run_mode": "shared"}, {"run_mode": "nested", "rank_scope": "worker"})
    for combination in combinations:
        tag = "-".join(combination.values())
        with wandb_session(project="job", mode="offline", tags=[tag], **combination) as run:
            if run is not None:
                run.log({"rank": rank})
    return rank
"""


@pytest.fixture(scope="module")
def job_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Any], list[WandbRunFile]]]:
    """One elastic job (2 nodes x 2 ranks), shared by the tests of what it wrote."""
    ranks = run_pod_job(tmp_path_factory.mktemp("wandb-job"), JOB, "train")
    for rank in ranks:
        assert rank.returncode == 0, rank.output
    roots = {rank.workdir for rank in ranks}
    yield ranks, [run for root in sorted(roots) for run in find_runs(root / "tracking")]


def _with_tag(runs: list[WandbRunFile], tag: str) -> dict[str, list[float]]:
    """Run id -> the ranks that logged into it, for the runs of one combination."""
    return {run.run_id: [row["rank"] for row in run.history if "rank" in row] for run in runs if tag in run.tags}


def test_worker_scope_gives_each_node_one_run_written_by_its_local_rank_zero(job_runs: Any) -> None:
    _, runs = job_runs
    assert _with_tag(runs, "worker") == {f"{NODE0}-worker0": [0], f"{NODE1}-worker1": [2]}


def test_nested_runs_of_the_worker_scope_are_one_per_node_in_the_executions_group(job_runs: Any) -> None:
    _, runs = job_runs
    assert _with_tag(runs, "nested-worker") == {f"{NODE0}-worker0": [0], f"{NODE1}-worker1": [2]}
    assert {run.group for run in runs if "nested-worker" in run.tags} == {EXECUTION_NAME}


def test_shared_offline_keeps_every_writer_in_a_run_of_its_own_grouped_by_the_execution(job_runs: Any) -> None:
    ranks, runs = job_runs
    shared = [run for run in runs if "shared" in run.tags]
    written = _with_tag(runs, "shared")
    assert sorted(rank for ranks_of_run in written.values() for rank in ranks_of_run) == [0, 1, 2, 3]
    assert all(len(ranks_of_run) == 1 for ranks_of_run in written.values())  # nobody overwrote anybody
    assert {run.group for run in shared} == {EXECUTION_NAME}
    for rank in ranks:  # one warning per process says why, and what happened instead
        assert rank.output.count("cannot do run_mode='shared' offline") == 1, rank.output


# ------------------------------------------------------------------ online shared mode
@pytest.fixture
def elastic_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "FLYTE_INTERNAL_EXECUTION_ID": EXECUTION_NAME,
        "FLYTE_INTERNAL_TASK_NAME": "workflows.train",
        "HOSTNAME": NODE1,
        "WORLD_SIZE": "4",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
    }.items():
        monkeypatch.setenv(name, value)


def test_shared_online_asks_wandb_for_its_shared_mode_with_rank_zero_as_the_primary(
    elastic_pod: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B's server cannot run here: what ``wandb.init`` is asked is recorded, then the same run is
    opened offline (shared mode itself needs the server)."""
    asked: list[dict[str, Any]] = []
    real_init = wandb_module._init

    def record_then_run_offline(arguments: dict[str, Any]) -> Any:
        asked.append({**arguments, "settings": arguments["settings"].model_copy()})
        settings = arguments["settings"]
        settings.mode = "offline"
        return real_init({**arguments, "mode": "offline", "settings": settings})

    monkeypatch.setattr(wandb_module, "_init", record_then_run_offline)
    monkeypatch.setenv("WANDB_API_KEY", "wbkey_" + "0" * 40)
    for rank, local_rank in ((2, 0), (3, 1)):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        with wandb_session(project="job", run_mode="shared", rank_scope="worker") as run:
            run.log({"rank": rank})
    first, second = asked
    assert first["id"] == second["id"] == f"{EXECUTION_NAME}-worker1"  # the worker's one run
    assert first["mode"] == second["mode"] == "shared"
    assert first["resume"] == second["resume"] == "allow"
    assert (first["settings"].x_primary, second["settings"].x_primary) == (True, False)
    assert (first["settings"].x_update_finish_state, second["settings"].x_update_finish_state) == (True, False)
    assert first["settings"].x_label != second["settings"].x_label
    assert "rank-3" in second["settings"].x_label


# ------------------------------------------------------------------ links and defaults
@pytest.mark.parametrize(
    ("options", "link_type"),
    [
        ({}, "wandb-execution-id"),
        ({"id": "mine"}, "wandb-custom-id"),
        ({"run_mode": "shared"}, "wandb-shared-id"),
        ({"run_mode": "nested"}, "wandb-group"),
        ({"rank_scope": "worker"}, "wandb-group"),
        ({"all_ranks": True}, "wandb-group"),
    ],
)
def test_the_console_link_points_where_the_run_is(options: dict[str, Any], link_type: str) -> None:
    decorator = wandb_init(project="p", entity="e", **options)
    assert decorator.get_extra_config()["link_type"] == link_type


def test_the_console_link_config_takes_the_workflows_defaults_at_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    decorator = wandb_init()  # built at import, before any default is set
    monkeypatch.setenv("FLYTE_CTX_TRACKING_PROJECT", "fraud")
    with tracking_defaults(entity="ml-team", run_mode="shared"):
        config = decorator.get_extra_config()
    assert (config["project"], config["entity"], config["link_type"]) == ("fraud", "ml-team", "wandb-shared-id")


def test_a_sessions_own_arguments_win_over_the_workflows_defaults() -> None:
    with tracking_defaults(project="workflow-project", tags=["nightly"]), warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackingWarning)
        with wandb_session(project="mine", tags=["own"], mode="offline") as run:
            project, tags = run.project, list(run.tags)
    assert project == "mine"
    assert tags[:2] == ["own", "nightly"]
