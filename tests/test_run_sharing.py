"""Run sharing at the core (issue 17): run modes by rank scopes, fallbacks and workflow defaults.

The real core drives tests/fake_backend.py's FakeSession, which records what the core decided
(``plan.run_id``, ``plan.sharing``) and the project, entity and tags it opened with. FakeSession can
share a run online only and nest runs online and offline, like the real trackers, so the fallback
paths run too. Tasks, workflows and decks are real local flytekit runs; the distributed job is
simulated per process with the variables torch elastic sets, and once for real (four processes).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from flytekit import task, workflow
from flytekit.core.context_manager import FlyteContextManager

from flyte_ctx_tracking import NullRun, TrackingError, TrackingWarning, _session, current_run, tracking_defaults
from flyte_ctx_tracking._session import OpenPlan
from flyte_ctx_tracking._sharing import _started

from .conftest import EXECUTION_NAME, REPO
from .fake_backend import FakeRun, FakeSession, fake_init

EXEC = EXECUTION_NAME
RANKS = range(4)  # two nodes (GROUP_RANK 0, 1) of two local ranks each
DEFAULT_VARIABLES = ("PROJECT", "ENTITY", "TAGS", "RUN_MODE", "RANK_SCOPE")


@pytest.fixture(autouse=True)
def _fresh_notices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees the once-per-process warnings afresh, and no workflow default of the shell."""
    for name in DEFAULT_VARIABLES:
        monkeypatch.delenv(f"FLYTE_CTX_TRACKING_{name}", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    _session._NOTICES.clear()
    yield
    _session._NOTICES.clear()


def pod_name(group: int, attempt: int = 0, node: str = "n0") -> str:
    """A PyTorch job's pod: one per node (worker), named after the execution, node and attempt."""
    return f"{EXEC}-{node}-{attempt}-worker-{group}"


def elastic_env(rank: int, *, attempt: int = 0, node: str = "n0") -> dict[str, str]:
    """What one rank's process of a two-node job sees in its pod (torch elastic's variables included)."""
    group, local = divmod(rank, 2)
    return {
        "FLYTE_INTERNAL_EXECUTION_ID": EXEC,
        "HOSTNAME": pod_name(group, attempt, node),
        "FLYTE_ATTEMPT_NUMBER": str(attempt),
        "RANK": str(rank),
        "WORLD_SIZE": "4",
        "LOCAL_RANK": str(local),
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": str(group),
    }


def open_as(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], session: FakeSession) -> FakeRun | None:
    """Open ``session`` once as the process ``env`` describes; its handle (None: this rank does not open)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with session as run:
        pass
    assert run is None or run.closed
    return run


# ---------------------------------------------------------------------------------- identities


# Per (run_mode, rank_scope): the ranks that open, the identity each derives, the shared identity it
# records, and the ranks that own their run's lifecycle. {pod} is the rank's node's pod, {g} its
# GROUP_RANK, {r} its RANK. "auto" is "new" for this backend.
@dataclass(frozen=True)
class Expected:
    opens: frozenset[int]
    run_id: str
    shared_id: str | None
    primaries: frozenset[int]
    runs: int
    """How many distinct runs the job ends with."""


ALL = frozenset(RANKS)
ZEROS = frozenset({0, 2})  # LOCAL_RANK 0 of each node
TABLE: dict[tuple[str, str], Expected] = {
    ("new", "global"): Expected(frozenset({0}), "{pod}", None, frozenset({0}), 1),
    ("new", "worker"): Expected(ZEROS, "{pod}-worker{g}", None, ZEROS, 2),
    ("new", "rank"): Expected(ALL, "{pod}-rank{r}", None, ALL, 4),
    ("shared", "global"): Expected(ALL, "{exec}", "{exec}", frozenset({0}), 1),
    ("shared", "worker"): Expected(ALL, "{exec}-worker{g}", "{exec}-worker{g}", ZEROS, 2),
    ("shared", "rank"): Expected(ALL, "{exec}-rank{r}", "{exec}-rank{r}", ALL, 4),
    ("nested", "global"): Expected(frozenset({0}), "{pod}", "{exec}", frozenset({0}), 1),
    ("nested", "worker"): Expected(ZEROS, "{pod}-worker{g}", "{exec}", ZEROS, 2),
    ("nested", "rank"): Expected(ALL, "{pod}-rank{r}", "{exec}", ALL, 4),
}
for _scope in ("global", "worker", "rank"):
    TABLE["auto", _scope] = TABLE["new", _scope]
SUFFIX = {"global": "", "worker": "-worker{g}", "rank": "-rank{r}"}


def fill(pattern: str | None, rank: int, *, attempt: int = 0, node: str = "n0") -> str | None:
    group = rank // 2
    values = {"pod": pod_name(group, attempt, node), "exec": EXEC, "g": group, "r": rank}
    return None if pattern is None else pattern.format(**values)


@pytest.mark.parametrize(("run_mode", "scope"), list(TABLE), ids=[f"{m}-{s}" for m, s in TABLE])
def test_who_opens_and_which_identity_each_rank_derives(
    monkeypatch: pytest.MonkeyPatch, run_mode: str, scope: str
) -> None:
    expected = TABLE[run_mode, scope]
    effective = "new" if run_mode == "auto" else run_mode
    runs = {
        rank: open_as(monkeypatch, elastic_env(rank), FakeSession(mode="online", run_mode=run_mode, rank_scope=scope))
        for rank in RANKS
    }

    assert {rank for rank, run in runs.items() if run is not None} == expected.opens
    for rank, run in runs.items():
        if run is None:
            continue
        assert run.sharing is not None
        assert (run.run_id, run.sharing.shared_id) == (fill(expected.run_id, rank), fill(expected.shared_id, rank))
        assert (run.sharing.run_mode, run.sharing.requested, run.sharing.rank_scope) == (effective, run_mode, scope)
        assert run.sharing.primary is (rank in expected.primaries)
        assert run.sharing.fallback is None
    # Different workers' and ranks' runs never collide; a shared run's writers all name the same one.
    assert len({run.run_id for run in runs.values() if run is not None}) == expected.runs

    # Another attempt of the task, and another task (node) of the execution: a shared identity is the
    # execution's (the same run for every task and retry); a new run's is the attempt's own.
    retry = open_as(
        monkeypatch, elastic_env(0, attempt=1), FakeSession(mode="online", run_mode=run_mode, rank_scope=scope)
    )
    other_task = open_as(
        monkeypatch, elastic_env(0, node="n1"), FakeSession(mode="online", run_mode=run_mode, rank_scope=scope)
    )
    first = runs[0]
    assert first is not None and retry is not None and other_task is not None
    if effective == "shared":
        assert retry.run_id == other_task.run_id == first.run_id
    else:
        assert len({first.run_id, retry.run_id, other_task.run_id}) == 3
        assert retry.run_id == fill(expected.run_id, 0, attempt=1)
    assert retry.sharing is not None and first.sharing is not None
    assert retry.sharing.shared_id == first.sharing.shared_id

    # A user-chosen identity (wandb's id=, Comet's experiment_key=) gets the scope's suffix.
    chosen = {
        rank: open_as(
            monkeypatch,
            elastic_env(rank),
            FakeSession(mode="online", run_mode=run_mode, rank_scope=scope, run_id="mine"),
        )
        for rank in RANKS
    }
    assert {rank: run.run_id for rank, run in chosen.items() if run is not None} == {
        rank: "mine" + SUFFIX[scope].format(g=rank // 2, r=rank) for rank in expected.opens
    }


def test_outside_distributed_training_every_scope_is_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = f"{EXEC}-n0-0"
    for scope in ("global", "worker", "rank"):
        env = {"FLYTE_INTERNAL_EXECUTION_ID": EXEC, "HOSTNAME": pod, "FLYTE_ATTEMPT_NUMBER": "0"}
        new = open_as(monkeypatch, env, FakeSession(mode="online", rank_scope=scope, run_id="mine"))
        shared = open_as(monkeypatch, env, FakeSession(mode="online", run_mode="shared", rank_scope=scope))
        assert new is not None and shared is not None
        assert (new.run_id, shared.run_id) == ("mine", EXEC)
    # Locally a new run has no identity of its own (the backend makes a fresh one); a shared one is the process's.
    for name in ("FLYTE_INTERNAL_EXECUTION_ID", "HOSTNAME", "FLYTE_ATTEMPT_NUMBER"):
        monkeypatch.delenv(name)
    with FakeSession(mode="online") as new, FakeSession("other", mode="online", run_mode="shared") as shared:
        assert new.run_id is None
        assert shared.run_id == f"local-{socket.gethostname()}-{os.getpid()}{_started(os.getpid())}"


# One real job: four processes (two "nodes" by GROUP_RANK, two local ranks each), each with torch elastic's
# variables, opening sessions of every run mode and scope as a pod's rank, as a local job with an elastic
# run id, and as plain `torchrun` (run id "none"); then a shared run offline twice (a fallback).
_RANK_PROCESS = r"""
import json, os, sys, warnings
from tests.fake_backend import FakeSession

base = dict(os.environ)
scenarios = {
    "pod": {"FLYTE_INTERNAL_EXECUTION_ID": sys.argv[1], "HOSTNAME": sys.argv[2], "FLYTE_ATTEMPT_NUMBER": "0"},
    "elastic": {"TORCHELASTIC_RUN_ID": "job7"},
    "torchrun": {"TORCHELASTIC_RUN_ID": "none"},
}

def record(scenario, run_mode, scope, run):
    sharing = run.sharing if run is not None else None
    return {
        "scenario": scenario, "run_mode": run_mode, "scope": scope, "opened": run is not None,
        "run_id": run.run_id if run is not None else None,
        "shared_id": sharing.shared_id if sharing else None, "primary": sharing.primary if sharing else None,
        "effective": sharing.run_mode if sharing else None,
    }

records = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for scenario, extra in scenarios.items():
        os.environ.clear()
        os.environ.update(base)
        os.environ.update(extra)
        for run_mode in ("new", "shared", "nested"):
            for scope in ("global", "worker", "rank"):
                with FakeSession(mode="online", run_mode=run_mode, rank_scope=scope) as run:
                    records.append(record(scenario, run_mode, scope, run))
        for _ in range(2):
            with FakeSession(mode="offline", run_mode="shared") as run:
                records.append(record(scenario, "shared-offline", "global", run))
print(json.dumps({"records": records, "warned": [str(w.message) for w in caught]}))
"""


def test_a_real_four_process_job_derives_the_same_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    processes = {}
    for rank in RANKS:
        env = {**os.environ, **elastic_env(rank)}
        del env["FLYTE_INTERNAL_EXECUTION_ID"], env["HOSTNAME"], env["FLYTE_ATTEMPT_NUMBER"]  # per scenario
        command = [sys.executable, "-c", _RANK_PROCESS, EXEC, pod_name(rank // 2)]
        processes[rank] = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    for rank, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results[rank] = json.loads(out)

    def seen(scenario: str, run_mode: str, scope: str = "global") -> dict[int, dict[str, Any]]:
        return {
            rank: next(
                r
                for r in result["records"]
                if (r["scenario"], r["run_mode"], r["scope"]) == (scenario, run_mode, scope)
            )
            for rank, result in results.items()
        }

    for (run_mode, scope), expected in TABLE.items():
        if run_mode == "auto":
            continue
        got = seen("pod", run_mode, scope)
        assert {rank for rank, r in got.items() if r["opened"]} == expected.opens, (run_mode, scope)
        for rank in expected.opens:
            assert got[rank]["run_id"] == fill(expected.run_id, rank), (run_mode, scope, rank)
            assert got[rank]["shared_id"] == fill(expected.shared_id, rank), (run_mode, scope, rank)
            assert got[rank]["primary"] is (rank in expected.primaries), (run_mode, scope, rank)
        assert len({got[rank]["run_id"] for rank in expected.opens}) == expected.runs

    # A local job: torch elastic's run id joins its ranks; plain torchrun has none ("none"), and its
    # ranks, children of one launcher (here: this test's process), are joined by the launcher's pid.
    for scenario, base in (
        ("elastic", "local-job7"),
        ("torchrun", f"local-{socket.gethostname()}-{os.getpid()}{_started(os.getpid())}"),
    ):
        assert {r["run_id"] for r in seen(scenario, "shared").values()} == {base}
        assert {rank: r["run_id"] for rank, r in seen(scenario, "shared", "worker").items()} == {
            rank: f"{base}-worker{rank // 2}" for rank in RANKS
        }
        assert {r["shared_id"] for r in seen(scenario, "nested").values() if r["opened"]} == {base}

    # Shared offline is not possible for this backend: every writer keeps a run of its own, found
    # together by the execution; each process says so once, however many sessions it opens.
    for rank, result in results.items():
        fallbacks = [r for r in result["records"] if r["run_mode"] == "shared-offline"]
        assert len(fallbacks) == 6 and all(r["opened"] and r["effective"] == "new" and r["primary"] for r in fallbacks)
        assert {r["shared_id"] for r in fallbacks if r["scenario"] == "pod"} == {EXEC}
        assert {r["run_id"] for r in fallbacks if r["scenario"] == "pod"} == {f"{pod_name(rank // 2)}-rank{rank}"}
        (warning,) = result["warned"]
        assert "cannot do run_mode='shared' offline" in warning and "(online it can)" in warning


# ---------------------------------------------------------------------------------- fallbacks


class NoNesting(FakeSession):
    """A backend that shares runs online and has no parent runs to nest under (Comet, Neptune)."""

    run_modes = {"online": ("new", "shared"), "offline": ("new",)}


@contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages.extend(str(w.message) for w in caught if issubclass(w.category, TrackingWarning))


def test_a_run_mode_the_backend_cannot_do_offline_warns_once_per_process_then_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="flyte_ctx_tracking")
    base = f"local-{socket.gethostname()}-{os.getpid()}{_started(os.getpid())}"
    with recorded_warnings() as first, FakeSession(mode="offline", run_mode="shared") as run:
        pass
    (message,) = first
    assert "FakeSession: Fake tracker cannot do run_mode='shared' offline" in message
    assert f"found together by {base!r}" in message and "(online it can)" in message
    assert run.sharing is not None
    assert (run.sharing.run_mode, run.sharing.requested, run.sharing.shared_id) == ("new", "shared", base)
    assert run.sharing.fallback is not None

    with recorded_warnings() as second, FakeSession(mode="offline", run_mode="shared") as again:
        pass
    assert second == [] and again.sharing is not None and again.sharing.run_mode == "new"
    assert [r.levelno for r in caplog.records if "cannot do run_mode='shared' offline" in r.getMessage()] == [
        logging.INFO
    ]

    with recorded_warnings() as online, FakeSession(mode="online", run_mode="shared") as shared:
        pass
    assert online == [] and shared.sharing is not None and shared.sharing.run_mode == "shared"


def test_shared_falling_back_keeps_every_writer_with_an_id_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.warns(TrackingWarning, match="cannot do run_mode='shared' offline"):
        runs = {
            rank: open_as(monkeypatch, elastic_env(rank), FakeSession(mode="offline", run_mode="shared"))
            for rank in RANKS
        }
    chosen = {
        rank: open_as(monkeypatch, elastic_env(rank), FakeSession(mode="offline", run_mode="shared", run_id="mine"))
        for rank in RANKS
    }
    assert {rank: run.run_id for rank, run in runs.items() if run} == {
        rank: f"{pod_name(rank // 2)}-rank{rank}" for rank in RANKS
    }
    assert {rank: run.run_id for rank, run in chosen.items() if run} == {rank: f"mine-rank{rank}" for rank in RANKS}
    for run in [*runs.values(), *chosen.values()]:
        assert run is not None and run.sharing is not None
        assert (run.sharing.run_mode, run.sharing.shared_id) == ("new", EXEC)
        assert run.sharing.primary  # each owns (and finishes) its run


def test_nested_from_a_workflow_default_on_a_backend_without_nested_warns_once_and_opens_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with recorded_warnings() as warned, tracking_defaults(run_mode="nested"):
        with NoNesting(mode="offline") as first, NoNesting("b", mode="online") as second:
            pass
    assert [first.sharing.run_mode, second.sharing.run_mode] == ["new", "new"]  # type: ignore[union-attr]
    # A mode the backend never has is the same news online and offline: said once per process.
    assert len(warned) == 1
    for message in warned:
        assert "has no run_mode='nested' (the workflow's default" in message and "online it can" not in message

    monkeypatch.setenv("FLYTE_CTX_TRACKING_RUN_MODE", "nested")  # the same default from a launch plan
    _session._NOTICES.clear()
    with recorded_warnings() as warned, NoNesting(mode="offline") as run, NoNesting("b", mode="offline"):
        pass
    assert len(warned) == 1 and run.sharing is not None and run.sharing.run_mode == "new"


def test_auto_choosing_a_mode_the_backend_cannot_do_here_opens_new_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NestsByDefault(FakeSession):
        auto_run_mode = "nested"
        run_modes = {"online": ("new", "nested"), "offline": ("new",)}

    caplog.set_level(logging.INFO, logger="flyte_ctx_tracking")
    with recorded_warnings() as warned, NestsByDefault(mode="offline") as run:
        pass
    assert warned == [] and run.sharing is not None and run.sharing.run_mode == "new"
    assert any("cannot do run_mode='nested' offline" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "error", "words"),
    [
        (
            lambda: FakeSession(run_mode="sideways"),
            ValueError,
            ["run_mode='sideways'", "'auto', 'new', 'shared', 'nested'"],
        ),
        (lambda: FakeSession(rank_scope="node"), ValueError, ["rank_scope='node'", "'global', 'worker', 'rank'"]),
        (lambda: NoNesting(run_mode="nested"), ValueError, ["run_mode='nested'", "use one of 'auto', 'new', 'shared'"]),
        (
            lambda: FakeSession(all_ranks=True, rank_scope="worker"),
            ValueError,
            ["all_ranks=True", "rank_scope='worker'"],
        ),
        (
            lambda: FakeSession(all_ranks=True, rank_scope="global"),
            ValueError,
            ["all_ranks=True", "rank_scope='global'"],
        ),
        (lambda: fake_init(run_mode="together"), ValueError, ["run_mode='together'", "'shared'"]),
        (lambda: fake_init(rank_scope=3), ValueError, ["rank_scope=3", "'worker'"]),
    ],
    ids=[
        "run_mode",
        "rank_scope",
        "nested-unsupported",
        "all_ranks-worker",
        "all_ranks-global",
        "decorator",
        "decorator-scope",
    ],
)
def test_bad_run_modes_and_scopes_are_refused_naming_what_is_accepted(
    build: Callable[[], object], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as raised:
        build()
    for word in words:
        assert word in str(raised.value)


def test_all_ranks_is_rank_scope_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FakeSession(all_ranks=True).rank_scope == "rank" == FakeSession(all_ranks=True, rank_scope="rank").rank_scope
    for run_mode in ("new", "shared"):
        by_flag = [
            open_as(monkeypatch, elastic_env(r), FakeSession(mode="online", all_ranks=True, run_mode=run_mode))
            for r in RANKS
        ]
        by_scope = [
            open_as(monkeypatch, elastic_env(r), FakeSession(mode="online", rank_scope="rank", run_mode=run_mode))
            for r in RANKS
        ]
        assert [run.run_id if run else None for run in by_flag] == [run.run_id if run else None for run in by_scope]
        assert all(run is not None for run in by_flag)


# ---------------------------------------------------------------------------------- workflow defaults


@pytest.mark.parametrize(
    ("own", "block", "env", "expected"),
    [
        (None, None, None, None),
        (None, None, "env-project", "env-project"),
        (None, "block-project", "env-project", "block-project"),
        ("own-project", "block-project", "env-project", "own-project"),
        ("own-project", None, "env-project", "own-project"),
    ],
)
def test_project_precedence_own_then_block_then_environment(
    monkeypatch: pytest.MonkeyPatch, own: str | None, block: str | None, env: str | None, expected: str | None
) -> None:
    if env is not None:
        monkeypatch.setenv("FLYTE_CTX_TRACKING_PROJECT", env)
    with tracking_defaults(project=block), FakeSession(project=own, mode="offline") as run:
        assert run.project == expected


def test_run_mode_rank_scope_and_mode_follow_the_same_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_RUN_MODE", "nested")
    monkeypatch.setenv("FLYTE_CTX_TRACKING_RANK_SCOPE", "worker")
    with FakeSession(mode="online") as from_env:
        pass
    with tracking_defaults(run_mode="shared", rank_scope="rank"):
        with (
            FakeSession(mode="online") as from_block,
            FakeSession("own", mode="online", run_mode="new", rank_scope="global") as own,
        ):
            pass
    with tracking_defaults(mode="online"), FakeSession("mode") as by_default_mode:  # auto without a key: offline
        pass
    with (
        tracking_defaults(mode="disabled"),
        FakeSession("disabled") as disabled,
        FakeSession("kept", mode="offline") as kept,
    ):
        pass
    assert from_env.sharing is not None and (from_env.sharing.run_mode, from_env.sharing.rank_scope) == (
        "nested",
        "worker",
    )
    assert from_block.sharing is not None and (from_block.sharing.run_mode, from_block.sharing.rank_scope) == (
        "shared",
        "rank",
    )
    assert own.sharing is not None and (own.sharing.run_mode, own.sharing.rank_scope) == ("new", "global")
    assert by_default_mode.mode == "online"
    assert isinstance(disabled, NullRun) and kept.mode == "offline"
    # FLYTE_CTX_TRACKING_MODE stays the process-wide override, above a default mode.
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "online")
    with tracking_defaults(mode="offline"), FakeSession() as overridden:
        assert overridden.mode == "online"


def test_blocks_nest_inner_wins_and_tags_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_TAGS", "env-a, ,env-b,outer")
    with tracking_defaults(project="outer", entity="team", tags=["outer"]):
        with tracking_defaults(project="inner", tags=["inner", "own"], run_mode="nested") as inner:
            assert inner.project == "inner"
            with FakeSession(tags=["own"], mode="offline") as run:
                pass
        with FakeSession(mode="offline") as after:
            pass
    assert (run.project, run.entity, run.tags) == ("inner", "team", ["own", "inner", "outer", "env-a", "env-b"])
    assert run.sharing is not None and run.sharing.run_mode == "nested"
    assert (after.project, after.tags) == ("outer", ["outer", "env-a", "env-b"])
    assert after.sharing is not None and after.sharing.run_mode == "new"
    with FakeSession(mode="offline") as outside:
        assert (outside.project, outside.entity, outside.tags) == (None, None, ["env-a", "env-b", "outer"])


def test_bad_environment_defaults_warn_once_naming_the_variable_and_never_fail_the_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_RUN_MODE", "Sideways")
    monkeypatch.setenv("FLYTE_CTX_TRACKING_RANK_SCOPE", "node")
    monkeypatch.setenv("FLYTE_CTX_TRACKING_PROJECT", "fraud")

    @task
    def training() -> str:
        with FakeSession(mode="offline", on_error="raise") as run, FakeSession("again", mode="offline") as again:
            assert run.sharing is not None and again.sharing is not None
            return f"{run.project} {run.sharing.run_mode} {run.sharing.rank_scope} {again.sharing.run_mode}"

    with recorded_warnings() as warned:
        assert training() == "fraud new global new"  # the good variable still applies
    assert len(warned) == 2, warned
    by_variable = {message.split(": ")[1]: message for message in warned}
    assert "FLYTE_CTX_TRACKING_RUN_MODE" in by_variable and "FLYTE_CTX_TRACKING_RANK_SCOPE" in by_variable
    assert "run_mode='sideways'" in by_variable["FLYTE_CTX_TRACKING_RUN_MODE"]
    assert "'auto', 'new', 'shared', 'nested'" in by_variable["FLYTE_CTX_TRACKING_RUN_MODE"]
    assert "rank_scope='node'" in by_variable["FLYTE_CTX_TRACKING_RANK_SCOPE"]
    assert all("it is ignored" in message for message in warned)


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"run_mode": "sideways"}, ValueError, ["run_mode='sideways'", "'auto', 'new', 'shared', 'nested'"]),
        ({"rank_scope": "node"}, ValueError, ["rank_scope='node'", "'global', 'worker', 'rank'"]),
        ({"mode": "sometimes"}, ValueError, ["mode='sometimes'", "'online', 'offline'"]),
        ({"tags": "nightly"}, TypeError, ["tags='nightly'", "list of str"]),
        ({"tags": 3}, TypeError, ["tags=3", "list of str"]),
        ({"tags": ["ok", 3]}, TypeError, ["3", "non-empty str"]),
        ({"tags": ["ok", " "]}, ValueError, ["' '", "non-empty str"]),
        ({"project": ""}, ValueError, ["project=''", "non-empty str"]),
        ({"entity": 7}, TypeError, ["entity=7", "non-empty str"]),
    ],
    ids=lambda value: "-".join(map(str, value)) if isinstance(value, dict) else None,
)
def test_bad_tracking_defaults_are_refused_naming_the_value(
    arguments: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as raised, tracking_defaults(**arguments):
        pass
    for word in [*words, "tracking_defaults"]:
        assert word in str(raised.value)


@pytest.mark.parametrize("on_error", ["warn", "raise"])
def test_a_backend_failing_to_map_the_defaults_follows_on_error(on_error: str) -> None:
    class BrokenMapping(FakeSession):
        def _backend_defaults(self, defaults: Any) -> dict[str, Any]:
            raise KeyError("project")

    with tracking_defaults(project="fraud", run_mode="nested"):
        if on_error == "raise":
            with pytest.raises(TrackingError, match="could not apply the workflow's project, entity or tags"):
                with BrokenMapping(mode="offline", on_error="raise"):
                    raise AssertionError("not reached: on_error='raise' stops at the open")
            return
        with pytest.warns(TrackingWarning, match="could not apply the workflow's project") as warned:
            with BrokenMapping(mode="offline", project="own") as run:
                pass
    assert len(warned) == 1 and run.closed and run.project == "own"
    assert run.sharing is not None and run.sharing.run_mode == "nested"  # the core's own defaults still apply


# Decorated at import, before any defaults block: the defaults are read when the session opens.
@fake_init(mode="offline", tags=["own"])
def decorated_at_import() -> FakeRun:
    return current_run("fake")  # type: ignore[no-any-return]


def test_defaults_apply_to_a_decorator_built_before_the_block() -> None:
    with tracking_defaults(project="fraud", tags=["nightly"], run_mode="nested"):
        run = decorated_at_import()
    outside = decorated_at_import()
    assert run.closed and (run.project, run.tags) == ("fraud", ["own", "nightly"])
    assert run.sharing is not None and run.sharing.run_mode == "nested"
    assert outside.closed and (outside.project, outside.tags) == (None, ["own"])
    assert decorated_at_import.session.project is None  # the decorator's own session is never changed


@fake_init(mode="offline", tags=["own"])
def _prepare() -> int:
    return int(current_run("fake").number)


@fake_init(mode="offline")
def _train(prepared: int) -> int:
    return int(current_run("fake").number)


prepare = task(_prepare)
train = task(_train)


@workflow
def pipeline() -> int:
    return train(prepared=prepare())


def test_a_local_workflow_run_inside_a_defaults_block_gives_every_task_the_defaults() -> None:
    with tracking_defaults(project="fraud", tags=["nightly"], run_mode="nested"):
        number = pipeline()
    (prepared,) = _prepare.session.opened[-1:]
    (trained,) = _train.session.opened[-1:]
    assert trained.number == number
    for run, tags in ((prepared, ["own", "nightly"]), (trained, ["nightly"])):
        assert run.closed and run.failed is False
        assert (run.project, run.tags) == ("fraud", tags)
        assert run.sharing is not None and run.sharing.run_mode == "nested"
    # One execution, one place to look: both tasks' runs name the same parent.
    assert prepared.sharing.shared_id == trained.sharing.shared_id  # type: ignore[union-attr]
    assert "task _prepare" in prepared.sharing.writer and "task _train" in trained.sharing.writer  # type: ignore[union-attr]


class Published(FakeSession):
    """Records, on the run, which session (by its project) published, unpublished and closed it."""

    def _handle_scope(self, handle: FakeRun, plan: OpenPlan) -> AbstractContextManager[Any]:
        @contextmanager
        def scope() -> Iterator[None]:
            handle.log.append(("publish", self.project))
            yield
            handle.log.append(("unpublish", self.project))

        return scope()

    def _close(self, handle: FakeRun, plan: OpenPlan, error: BaseException | None) -> None:
        handle.log.append(("close", self.project))
        super()._close(handle, plan, error)


async def test_the_defaulted_copy_publishes_and_closes_the_run_with_and_async_with() -> None:
    lifecycle = [("publish", "fraud"), ("unpublish", "fraud"), ("close", "fraud")]
    session = Published(mode="offline")
    with tracking_defaults(project="fraud"):
        with session as run:
            assert current_run("fake") is run
        async with session as async_run:
            assert current_run("fake") is async_run
    assert run.log == lifecycle and async_run.log == lifecycle
    assert session.project is None


async def test_a_cancelled_async_open_is_closed_by_the_defaulted_copy() -> None:
    class SlowOpen(Published):
        def _open(self, plan: OpenPlan) -> FakeRun:
            self.started.set()
            self.release.wait(60)
            return super()._open(plan)

        def _close(self, handle: FakeRun, plan: OpenPlan, error: BaseException | None) -> None:
            super()._close(handle, plan, error)
            self.done.set()

    session = SlowOpen(mode="offline")
    session.started, session.release, session.done = threading.Event(), threading.Event(), threading.Event()  # type: ignore[attr-defined]

    async def block() -> None:
        async with session:
            raise AssertionError("the block of a cancelled open never runs")

    with tracking_defaults(project="fraud"):
        entering = asyncio.create_task(block())
        assert await asyncio.to_thread(session.started.wait, 60)  # type: ignore[attr-defined]
        entering.cancel()
        session.release.set()  # type: ignore[attr-defined]
        with pytest.raises(asyncio.CancelledError):
            await entering
        assert await asyncio.to_thread(session.done.wait, 60)  # type: ignore[attr-defined]
    (run,) = session.opened
    assert run.log == [("close", "fraud")] and run.failed is True
    assert isinstance(run.error, asyncio.CancelledError)


# ---------------------------------------------------------------------------------- the deck


def test_the_run_card_of_a_shared_run_says_it_is_shared_and_by_whom(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in elastic_env(2).items():  # rank 2: local rank 0 of worker 1
        if not name.startswith(("FLYTE_", "HOSTNAME")):
            monkeypatch.setenv(name, value)
    base = f"local-{socket.gethostname()}-{os.getppid()}{_started(os.getppid())}"

    @fake_init(mode="online", rank_scope="worker")
    def log_a_step() -> None:
        pass

    @task(enable_deck=True)
    def train_shared() -> str:
        with tracking_defaults(run_mode="shared", project="fraud"):
            log_a_step()
        decks = FlyteContextManager.current_context().user_space_params.decks
        (html,) = [deck.html for deck in decks if deck.name.startswith("Fake tracker")]
        return str(html)

    html = train_shared()
    assert "A shared run (run_mode=&#x27;shared&#x27;)" in html
    assert f"every task&#x27;s ranks on worker 1 of local run {base}" in html
    # Locally flytekit names no task: the decorated function names the writer (in a pod: the task).
    assert "This part was written by task log_a_step, rank 2 (worker 1, local rank 0)." in html
    assert "fraud" in html  # the card was written by the session the defaults were applied to


# ---------------------------------------------------------------------------------- threads and asyncio


async def test_defaults_reach_asyncio_tasks_and_copied_contexts_but_not_unrelated_threads() -> None:
    def open_here() -> str | None:
        with FakeSession(mode="offline") as run:
            return run.project

    async def open_in_task() -> str | None:
        async with FakeSession(mode="offline") as run:
            return run.project

    with tracking_defaults(project="fraud"):
        in_task = await asyncio.create_task(open_in_task())
        gathered = await asyncio.gather(open_in_task(), asyncio.to_thread(open_here))
        results: dict[str, str | None] = {}
        copied = contextvars.copy_context()
        threads = [
            threading.Thread(target=lambda: results.__setitem__("unrelated", open_here())),
            threading.Thread(target=copied.run, args=(lambda: results.__setitem__("copied", open_here()),)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert (in_task, gathered) == ("fraud", ["fraud", "fraud"])
    assert results == {"copied": "fraud", "unrelated": None}


def test_blocks_in_two_threads_at_once_never_see_each_others_defaults() -> None:
    both_inside = threading.Barrier(2)
    seen: dict[str, str | None] = {}

    def worker(project: str) -> None:
        with tracking_defaults(project=project):
            both_inside.wait(30)
            with FakeSession(project, mode="offline") as run:
                seen[project] = run.project
            both_inside.wait(30)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"a": "a", "b": "b"}
