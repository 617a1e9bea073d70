"""Local runs shaped like remote ones: a task sees only the sessions it opened (in a cluster its parent
runs in another pod), and a local map task's elements know their index."""

from __future__ import annotations

import os
from pathlib import Path

from flytekit import dynamic, map_task, task, workflow

from flyte_ctx_tracking import current_run, execution_context, memray_profile, wandb_session
from tests.wandb_records import find_runs


def _metrics(name: str) -> dict[str, list[object]]:
    runs = {run.display_name or run.run_id: run for run in find_runs(Path(os.environ["FLYTE_CTX_TRACKING_DIR"]))}
    by_project: dict[str, list[object]] = {}
    for run in runs.values():
        by_project.setdefault(run.project, []).extend(
            key for row in run.history for key in row if not key.startswith("_")
        )
    return by_project


@task
def child_task(x: int) -> bool:
    parent_visible = current_run("wandb") is not None or current_run() is not None
    with wandb_session(project="child", mode="offline") as run:
        with memray_profile("child_alloc", deck=False):
            data = [bytes(1000) for _ in range(100)]
        run.log({"x": x, "size": len(data)})
    return parent_visible


@dynamic
def parent_task(x: int) -> bool:
    with wandb_session(project="parent", mode="offline") as run:
        run.log({"parent_step": 1})
        return child_task(x=x)


@workflow
def boundary_workflow(x: int) -> bool:
    return parent_task(x=x)


def test_a_parent_tasks_session_is_invisible_in_its_child_and_the_childs_numbers_stay_in_the_childs_run() -> None:
    assert boundary_workflow(x=3) is False  # the child saw no session of its parent
    metrics = _metrics("child")
    assert "memray/child_alloc/peak_memory_bytes" in metrics["child"]
    assert not any(key.startswith("memray/") for key in metrics["parent"])  # nothing of the child's
    assert "parent_step" in metrics["parent"]


def test_a_session_opened_in_a_script_is_invisible_inside_the_tasks_it_calls() -> None:
    with wandb_session(project="script", mode="offline"):
        assert child_task(x=1) is False


@task
def element(x: int) -> str:
    index = execution_context().map_index
    with wandb_session(project="mapped", mode="offline") as run:
        run.log({"x": x})
        return f"{index}:{run.id}"


@workflow
def mapped(xs: list[int]) -> list[str]:
    return map_task(element)(x=xs)


def test_local_map_task_elements_know_their_index_and_get_runs_of_their_own() -> None:
    results = [item.split(":") for item in mapped(xs=[10, 20, 30, 40])]
    assert [index for index, _ in results] == ["0", "1", "2", "3"]
    assert len({run_id for _, run_id in results}) == 4


@task
def neptune_child() -> bool:
    return current_run() is not None


@task
def neptune_parent() -> bool:
    from flyte_ctx_tracking import neptune_session

    with neptune_session(project="ml/parent", mode="offline"):  # publishes its run in flytekit's context
        return neptune_child()


def test_a_parents_published_neptune_run_does_not_make_its_sessions_visible_in_a_child() -> None:
    assert neptune_parent() is False
