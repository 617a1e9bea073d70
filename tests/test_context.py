"""The execution context, read back from local runs, pod runs and the environment."""

from __future__ import annotations

import json

import pytest
from flytekit import task, workflow
from hypothesis import given
from hypothesis import strategies as st

from flyte_ctx_tracking import ExecutionContext, execution_context

from .conftest import EXECUTION_NAME, PodRunner

POD_TASK = """
import json
from flytekit import task
from flyte_ctx_tracking import execution_context

@task
def where() -> str:
    ctx = execution_context()
    return json.dumps({**ctx.as_dict(), "metadata": ctx.flyte_metadata(), "identity": ctx.run_identity()})
"""


def test_outside_a_task_is_local_with_nothing_known() -> None:
    ctx = execution_context()
    assert not ctx.is_remote
    assert ctx.execution_name is None
    assert ctx.run_identity() is None
    assert ctx.flyte_metadata() == {}
    assert (ctx.rank, ctx.world_size, ctx.attempt) == (0, 1, 0)


def test_local_task_and_workflow_runs_are_local() -> None:
    @task
    def where() -> str:
        return json.dumps(execution_context().as_dict())

    @workflow
    def wf() -> str:
        return where()

    for result in (where(), wf()):
        ctx = json.loads(result)
        assert ctx["is_remote"] is False
        # flytekit says "local" for every identifier of a local run: unknown, not a name.
        assert ctx["execution_name"] is None
        assert ctx["working_directory"]


def test_pod_run_reads_the_whole_context(pod_run: PodRunner) -> None:
    result = pod_run(
        POD_TASK,
        "where",
        attempt=2,
        node_id="n3",
        env={"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0"},
    )
    assert result.returncode == 0, result.output
    ctx = json.loads(result.outputs["o0"])
    pod = f"{EXECUTION_NAME}-n3-2"
    assert ctx["is_remote"] is True
    assert ctx["execution_project"] == "flytesnacks"
    assert ctx["execution_domain"] == "development"
    assert ctx["execution_name"] == EXECUTION_NAME
    assert ctx["task_name"].endswith(".where")
    assert ctx["task_version"] == "v1"
    assert ctx["node_id"] == "n3"
    assert ctx["attempt"] == 2
    assert ctx["pod_name"] == pod
    assert ctx["identity"] == pod
    assert (ctx["rank"], ctx["world_size"], ctx["local_rank"], ctx["local_world_size"]) == (1, 4, 1, 2)
    metadata = ctx["metadata"]
    assert metadata["flyte/execution_id"] == pod
    assert metadata["flyte/project"] == "flytesnacks"
    assert metadata["flyte/domain"] == "development"
    assert metadata["flyte/name"] == EXECUTION_NAME
    assert metadata["flyte/task/name"].endswith(".where")
    assert metadata["flyte/task/project"] == "flytesnacks"
    assert metadata["flyte/task/domain"] == "development"
    assert metadata["flyte/task/version"] == "v1"
    assert metadata["flyte/execution_url"].endswith(EXECUTION_NAME)
    assert metadata["flyte/raw_output_prefix"]
    assert metadata["flyte/output_metadata_prefix"]
    assert metadata["flyte/working_directory"]


def test_pod_run_without_hostname_rebuilds_a_node_specific_identity(pod_run: PodRunner) -> None:
    result = pod_run(POD_TASK, "where", attempt=1, node_id="n7", hostname="", env={"HOSTNAME": ""})
    assert result.returncode == 0, result.output
    ctx = json.loads(result.outputs["o0"])
    assert ctx["identity"] == f"{EXECUTION_NAME}-where-1"
    assert ctx["identity"] != EXECUTION_NAME  # never the bare execution name


def pod_env(**extra: str) -> dict[str, str]:
    env = {"FLYTE_INTERNAL_EXECUTION_ID": EXECUTION_NAME, "FLYTE_INTERNAL_EXECUTION_PROJECT": "p"}
    env.update(extra)
    return env


def test_replica_suffix_and_map_index_are_understood() -> None:
    ctx = execution_context(
        pod_env(
            HOSTNAME=f"{EXECUTION_NAME}-n2-0-worker-3",
            BATCH_JOB_ARRAY_INDEX_VAR_NAME="JOB_COMPLETION_INDEX",
            JOB_COMPLETION_INDEX="4",
            BATCH_JOB_ARRAY_INDEX_OFFSET="10",
        )
    )
    assert ctx.node_id == "n2"
    assert ctx.attempt == 0
    assert ctx.map_index == 14
    assert ctx.run_identity() == f"{EXECUTION_NAME}-n2-0-worker-3"


@pytest.mark.parametrize(
    "env",
    [
        {"FLYTE_ATTEMPT_NUMBER": "two"},
        {"FLYTE_ATTEMPT_NUMBER": "-1"},
        {"HOSTNAME": "My_Laptop.local!"},
        {"HOSTNAME": "-"},
        {"RANK": "x", "WORLD_SIZE": "zero"},
        {"RANK": "9", "WORLD_SIZE": "2"},
        {"BATCH_JOB_ARRAY_INDEX_VAR_NAME": "IDX", "IDX": "nope", "BATCH_JOB_ARRAY_INDEX_OFFSET": "?"},
    ],
)
def test_garbage_in_the_environment_falls_back_to_defaults(env: dict[str, str]) -> None:
    ctx = execution_context(pod_env(**env))
    assert ctx.is_remote
    assert ctx.attempt >= 0
    assert 0 <= ctx.rank < ctx.world_size
    assert ctx.run_identity()  # always some identity in a pod
    assert ctx.run_identity() != EXECUTION_NAME or ctx.pod_name == EXECUTION_NAME


node_ids = st.from_regex(r"n[0-9]{1,3}", fullmatch=True)


@given(
    a=st.tuples(node_ids, st.integers(0, 20), st.none() | st.integers(0, 500), st.integers(0, 7)),
    b=st.tuples(node_ids, st.integers(0, 20), st.none() | st.integers(0, 500), st.integers(0, 7)),
)
def test_identities_are_distinct_across_nodes_attempts_map_indices_and_ranks(
    a: tuple[str, int, int | None, int], b: tuple[str, int, int | None, int]
) -> None:
    def identity(node: str, attempt: int, index: int | None, rank: int) -> str | None:
        ctx = ExecutionContext(
            is_remote=True,
            execution_name=EXECUTION_NAME,
            node_id=node,
            attempt=attempt,
            map_index=index,
            rank=rank,
            world_size=8,
        )
        return ctx.run_identity(per_rank=True)

    if a != b:
        assert identity(*a) != identity(*b)


@given(node=node_ids, attempt=st.integers(0, 20), index=st.none() | st.integers(0, 500))
def test_pod_names_parse_back(node: str, attempt: int, index: int | None) -> None:
    env = pod_env(HOSTNAME=f"{EXECUTION_NAME}-{node}-{attempt}")
    if index is not None:
        env.update(BATCH_JOB_ARRAY_INDEX_VAR_NAME="I", I=str(index))
    ctx = execution_context(env)
    assert (ctx.node_id, ctx.attempt, ctx.map_index) == (node, attempt, index)
    assert ctx.group == "-".join([EXECUTION_NAME, node, *([str(index)] if index is not None else [])])
