"""neptune_session and neptune_init_run, with the real neptune 1.x client offline.

Every test reads back Neptune's offline operation log (what `neptune sync` would upload) through
tests/neptune_oplog.py and asserts what a user would look for in the Neptune app.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import flytekit
import pytest
from flytekit import Secret, task

from flyte_ctx_tracking import (
    TrackingError,
    TrackingWarning,
    _neptune_init_run_class,
    current_run,
    neptune_init_run,
    neptune_session,
)
from flyte_ctx_tracking._session import log_to_active_trackers

from .conftest import EXECUTION_NAME, PodRunner
from .neptune_oplog import offline_runs, only_run

PROJECT = "ml-team/fraud"
POD_SECRET = "npt-SECRET-7f3c9a1e-do-not-leak"


@pytest.fixture
def tracking_dir(_isolated_tracking: Path) -> Path:
    """This test's ``FLYTE_CTX_TRACKING_DIR``."""
    return _isolated_tracking


def _flyte_run() -> Any:
    """``flytekit.current_context().neptune_run``, or None when it is not there."""
    params = flytekit.current_context()
    return params.neptune_run if params.has_attr("NEPTUNE_RUN") else None


def _remote_env(monkeypatch: pytest.MonkeyPatch, *, hostname: str | None = None, attempt: int = 0) -> None:
    """The environment of a Flyte pod, for sessions opened outside a task (as in a script a task runs)."""
    monkeypatch.setenv("FLYTE_INTERNAL_EXECUTION_ID", EXECUTION_NAME)
    monkeypatch.setenv("FLYTE_INTERNAL_EXECUTION_PROJECT", "flytesnacks")
    monkeypatch.setenv("FLYTE_INTERNAL_EXECUTION_DOMAIN", "development")
    monkeypatch.setenv("FLYTE_INTERNAL_TASK_NAME", "wf.train")
    monkeypatch.setenv("FLYTE_ATTEMPT_NUMBER", str(attempt))
    monkeypatch.setenv("HOSTNAME", hostname or f"{EXECUTION_NAME}-n0-{attempt}")


# ---------------------------------------------------------------------------- import cost


# ---------------------------------------------------------------------------- code blocks


def test_a_local_block_without_a_token_runs_offline_and_records_everything(tracking_dir: Path) -> None:
    session = neptune_session(project=PROJECT, tags=["flyte", "local"], name="baseline")
    with pytest.warns(TrackingWarning, match="runs offline") as caught:
        with session as run:
            assert type(run).__module__.startswith("neptune.")
            assert current_run("neptune") is run
            assert _flyte_run() is run
            run["params/lr"] = 3e-4
            for loss in (0.5, 0.25, 0.125):
                run["metrics/loss"].append(loss)
    assert current_run("neptune") is None and _flyte_run() is None

    recorded = only_run(tracking_dir / "neptune" / ".neptune" / "offline")
    (message,) = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert str(recorded.path) in message
    assert f"neptune sync --path {tracking_dir / 'neptune'} --project {PROJECT}" in message
    assert f"--object offline/{recorded.run_id}" in message

    assert recorded.value("params/lr") == pytest.approx(3e-4)
    assert recorded.series("metrics/loss") == [0.5, 0.25, 0.125]
    assert recorded.tags == {"flyte", "local"}
    assert recorded.value("sys/name") == "baseline"
    assert recorded.failed is False
    # A local run says so, and claims no remote identity.
    flyte = recorded.namespace("flyte")
    assert flyte["flyte/execution_mode"] == "local"
    assert "flyte/execution_id" not in flyte and "flyte/custom_run_id" not in flyte


def test_neptune_data_directory_is_restored_after_the_run_opens(
    tracking_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "users-own-neptune-dir"
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(elsewhere))
    with neptune_session(project=PROJECT, mode="offline") as run:
        assert os.environ["NEPTUNE_DATA_DIRECTORY"] == str(elsewhere)
        run["x"] = 1
    assert os.environ["NEPTUNE_DATA_DIRECTORY"] == str(elsewhere)
    assert not elsewhere.exists()
    assert only_run(tracking_dir).value("x") == 1


def test_an_explicit_directory_wins(tmp_path: Path, tracking_dir: Path) -> None:
    with neptune_session(mode="offline", directory=tmp_path / "mine") as run:
        run["x"] = 2
    assert only_run(tmp_path / "mine" / ".neptune").value("x") == 2
    assert offline_runs(tracking_dir) == []


def test_nested_blocks_reuse_the_same_target_and_open_a_second_run_for_another(tracking_dir: Path) -> None:
    outer_session = neptune_session(project=PROJECT, mode="offline", tags=["outer"])
    with outer_session as outer:
        outer["stage"] = "outer"
        with neptune_session(project=PROJECT, mode="offline") as same:
            assert same is outer  # same target (project, no id): the run is reused
            with neptune_session(project="ml-team/other", mode="offline", tags=["inner"]) as inner:
                assert inner is not outer
                assert current_run("neptune") is inner and _flyte_run() is inner
                inner["stage"] = "inner"
            assert current_run("neptune") is outer and _flyte_run() is outer
            outer["metrics/after_inner"].append(1.0)
        assert _flyte_run() is outer
    assert _flyte_run() is None and current_run("neptune") is None

    runs = {tuple(sorted(r.tags)): r for r in offline_runs(tracking_dir)}
    assert set(runs) == {("outer",), ("inner",)}
    assert runs[("outer",)].value("stage") == "outer"
    assert runs[("outer",)].series("metrics/after_inner") == [1.0]
    assert runs[("inner",)].value("stage") == "inner"
    assert not any(r.failed for r in runs.values())


def test_an_exception_marks_the_run_failed_records_it_stops_it_and_propagates(tracking_dir: Path) -> None:
    class Diverged(RuntimeError):
        pass

    error = Diverged("loss is nan at epoch 3")
    with pytest.raises(Diverged) as raised:
        with neptune_session(project=PROJECT, mode="offline") as run:
            run["metrics/loss"].append(0.5)
            raise error
    assert raised.value is error
    assert _flyte_run() is None

    recorded = only_run(tracking_dir)
    assert recorded.failed is True
    assert recorded.value("flyte/error/type").endswith("Diverged")
    assert recorded.value("flyte/error/message") == "loss is nan at epoch 3"
    assert "raise error" in recorded.value("flyte/error/traceback")
    assert recorded.series("metrics/loss") == [0.5]
    with pytest.raises(Exception, match="(?i)inactive|stopped"):
        run["late"] = 1  # the run was stopped


def test_fail_on_exception_false_records_the_error_without_failing_the_run(tracking_dir: Path) -> None:
    with pytest.raises(KeyError):
        with neptune_session(mode="offline", fail_on_exception=False):
            raise KeyError("missing")
    recorded = only_run(tracking_dir)
    assert recorded.failed is False
    assert recorded.value("flyte/error/type") == "builtins.KeyError"


def test_disabled_mode_yields_a_null_run_writing_nothing(tracking_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "disabled")
    with neptune_session(project=PROJECT) as run:
        assert not run and current_run("neptune") is run and _flyte_run() is None
        run["metrics/loss"].append(0.1)  # accepted, recorded nowhere
    assert offline_runs(tracking_dir) == []


def test_profilers_can_log_into_the_run(tracking_dir: Path) -> None:
    with neptune_session(mode="offline"):
        assert log_to_active_trackers({"memray/peak_mb": 12.5}) == ["neptune"]
        log_to_active_trackers({"memray/peak_mb": 13})
    assert only_run(tracking_dir).series("memray/peak_mb") == [12.5, 13.0]


def test_a_failing_online_start_falls_back_offline_and_never_shows_the_token(
    tracking_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    token = "npt-fake-token-SECRET-4242"
    with pytest.warns(TrackingWarning) as caught:
        with neptune_session(project=PROJECT, secret=lambda: token, mode="online") as run:
            run["x"] = 1
    messages = " ".join(str(w.message) for w in caught if issubclass(w.category, TrackingWarning))
    assert "going online failed" in messages and "runs offline" in messages
    assert token not in messages
    out, err = capfd.readouterr()
    assert token not in out + err
    recorded = only_run(tracking_dir)
    assert recorded.value("x") == 1
    assert all(token.encode() not in p.read_bytes() for p in tracking_dir.rglob("*") if p.is_file())

    with pytest.raises(TrackingError) as raised:
        with neptune_session(project=PROJECT, secret=lambda: token, mode="online", on_error="raise"):
            pass
    assert token not in str(raised.value)


# ---------------------------------------------------------------------------- isolation


def test_threads_each_get_their_own_run(tracking_dir: Path) -> None:
    seen: dict[str, tuple[Any, Any, Any]] = {}
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        with neptune_session(project=f"ml-team/{name}", mode="offline", tags=[name]) as run:
            barrier.wait()
            run["owner"] = name
            seen[name] = (run, current_run("neptune"), _flyte_run())
            barrier.wait()

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for run, current, flyte in seen.values():
        assert run is current is flyte
    assert seen["a"][0] is not seen["b"][0]
    assert {tuple(r.tags): r.value("owner") for r in offline_runs(tracking_dir)} == {("a",): "a", ("b",): "b"}


async def test_concurrent_asyncio_tasks_never_see_each_others_run(tracking_dir: Path) -> None:
    async def work(name: str) -> tuple[Any, Any, Any]:
        async with neptune_session(project=f"ml-team/{name}", mode="offline") as run:
            await asyncio.sleep(0.01)  # let the other task open and publish its run meanwhile
            seen = (run, current_run("neptune"), _flyte_run())
            await asyncio.sleep(0.01)
        return seen

    first, second = await asyncio.gather(work("a"), work("b"))
    assert first[0] is first[1] is first[2]
    assert second[0] is second[1] is second[2]
    assert first[0] is not second[0]
    assert _flyte_run() is None
    assert len(offline_runs(tracking_dir)) == 2


# ---------------------------------------------------------------------------- identity


def test_remote_runs_get_a_custom_run_id_per_attempt_and_retries_share_a_group(
    tracking_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for attempt in (0, 1):
        _remote_env(monkeypatch, attempt=attempt)
        with neptune_session(project=PROJECT, mode="offline") as run:
            assert run._custom_run_id == f"{EXECUTION_NAME}-n0-{attempt}"
    first, retry = offline_runs(tracking_dir)
    assert first.value("flyte/custom_run_id") == f"{EXECUTION_NAME}-n0-0"
    assert retry.value("flyte/custom_run_id") == f"{EXECUTION_NAME}-n0-1"
    assert first.value("flyte/group") == retry.value("flyte/group") == f"{EXECUTION_NAME}-n0"
    assert (first.value("flyte/attempt"), retry.value("flyte/attempt")) == (0, 1)
    assert retry.value("flyte/execution_id") == f"{EXECUTION_NAME}-n0-1"


def test_long_identities_are_hashed_to_neptunes_limit_deterministically(
    tracking_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_name = "f" + "x" * 40
    ids = []
    for attempt in (0, 0, 1):
        _remote_env(monkeypatch, attempt=attempt)
        monkeypatch.setenv("FLYTE_INTERNAL_EXECUTION_ID", long_name)
        monkeypatch.setenv("HOSTNAME", f"{long_name}-n3-{attempt}")
        with neptune_session(mode="offline") as run:
            ids.append(run._custom_run_id)
    assert all(0 < len(value) <= 36 for value in ids)
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].startswith(long_name[:12])


def test_all_ranks_gives_every_rank_a_run_of_its_own_which_it_describes(
    tracking_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # all_ranks=True is rank_scope="rank": a run per rank (before issue 17 the ranks shared one run;
    # that is run_mode="shared" now).
    monkeypatch.setenv("WORLD_SIZE", "2")
    runs = {}
    for rank in (0, 1):
        _remote_env(monkeypatch, hostname=f"{EXECUTION_NAME}-n0-0-worker-{rank}")
        monkeypatch.setenv("RANK", str(rank))
        with neptune_session(project=PROJECT, mode="offline", all_ranks=True, name=f"mine-{rank}") as run:
            runs[rank] = run._custom_run_id
        with neptune_session(project=PROJECT, mode="offline", name=f"default-{rank}") as default_run:
            assert (default_run is None) == (rank == 1)  # by default only rank 0 tracks
    assert runs == {0: f"{EXECUTION_NAME}-n0-0-rank0", 1: f"{EXECUTION_NAME}-n0-0-rank1"}
    recorded = {run.value("sys/name"): run for run in offline_runs(tracking_dir)}
    assert sorted(recorded) == ["default-0", "mine-0", "mine-1"]
    for rank in (0, 1):
        mine = recorded[f"mine-{rank}"]
        assert mine.value("flyte/custom_run_id") == runs[rank]
        assert mine.value("flyte/execution_id") == f"{EXECUTION_NAME}-n0-0-worker-{rank}"
        assert (mine.value("flyte/rank"), mine.value("flyte/world_size")) == (rank, 2)
        assert (mine.value("flyte/rank_scope"), mine.value("flyte/run_mode")) == ("rank", "new")
    assert recorded["default-0"].value("flyte/custom_run_id") == f"{EXECUTION_NAME}-n0-0"
    assert recorded["default-0"].value("flyte/rank_scope") == "global"


# ---------------------------------------------------------------------------- decorator


def test_the_decorator_publishes_the_run_in_flytekits_context(tracking_dir: Path) -> None:
    @task
    @neptune_init_run(project=PROJECT, mode="offline", tags=["decorated"])
    def evaluate(auc: float) -> str:
        run = flytekit.current_context().neptune_run
        assert run is current_run("neptune")
        run["metrics/auc"].append(auc)
        return "done"

    assert evaluate(auc=0.93) == "done"
    recorded = only_run(tracking_dir)
    assert recorded.series("metrics/auc") == [0.93]
    assert recorded.tags == {"decorated"}
    assert recorded.failed is False
    assert recorded.value("flyte/execution_mode") == "local"
    assert recorded.value("flyte/task/name").endswith("evaluate")
    assert _flyte_run() is None


def test_the_seeds_spelling_works_and_console_link_config_matches_the_plugin(tracking_dir: Path) -> None:
    secret = Secret(group="neptune", key="api_token")

    @task(secret_requests=[secret])
    @_neptune_init_run_class(project=PROJECT, secret=secret, mode="offline")
    def seeded() -> int:
        flytekit.current_context().neptune_run["n"] = 7
        return 7

    assert seeded() == 7
    assert only_run(tracking_dir).value("n") == 7

    expected = {"host": "https://app.neptune.ai", "project": PROJECT, "link_type": "neptune-run-id"}
    assert seeded.task_function.get_extra_config() == expected
    custom = neptune_init_run(PROJECT, secret, "https://neptune.example.com")
    assert custom.get_extra_config() == {**expected, "host": "https://neptune.example.com"}

    # What flytekit puts in the registered task template, where console links read it.
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    settings = SerializationSettings(image_config=ImageConfig.auto_default_image())
    spec = get_serializable(OrderedDict(), settings, seeded)
    assert spec.template.config == expected


def test_a_bare_decorator_and_async_functions_work(tracking_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "offline")

    @neptune_init_run
    def plain() -> Any:
        return current_run("neptune")

    @neptune_init_run(project=PROJECT)
    async def later() -> Any:
        await asyncio.sleep(0)
        return _flyte_run()

    assert plain() is not None
    assert asyncio.run(later()) is not None
    assert len(offline_runs(tracking_dir)) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"project": "fraud"}, ValueError, "'fraud' is not a Neptune project name"),
        ({"project": 3}, TypeError, "project=3"),
        ({"host": "app.neptune.ai"}, ValueError, "host='app.neptune.ai' is not a URL"),
        ({"api_token": "abc"}, TypeError, "pass secret="),
        ({"secret": "abc"}, TypeError, "secret=str is not accepted"),
        ({"mode": "sometimes"}, ValueError, "mode='sometimes'"),
        ({"on_error": "ignore"}, ValueError, "on_error='ignore'"),
        ({"capture_everything": True}, TypeError, "capture_everything"),
        ({"custom_run_id": "x" * 37}, ValueError, "has 37 characters"),
        ({"with_id": "FRAUD-1", "custom_run_id": "a"}, ValueError, "exclude each other"),
        ({"tags": 5}, TypeError, "tags=5"),
    ],
)
def test_bad_input_fails_at_construction_and_decoration(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        neptune_session(**kwargs)
    with pytest.raises(error, match=match):
        neptune_init_run(**kwargs)


# ---------------------------------------------------------------------------- pod runs

POD_TASKS = """
from flytekit import Secret, current_context, task
from flyte_ctx_tracking import current_run, neptune_init_run, neptune_session

SECRET = Secret(group="neptune", key="api_token")


@task(secret_requests=[SECRET], enable_deck=True)
@neptune_init_run(project="ml-team/fraud", secret=SECRET, tags=["flyte", "pod"])
def train(lr: float) -> str:
    run = current_context().neptune_run
    assert run is current_run("neptune")
    run["params/lr"] = lr
    for loss in (0.5, 0.25):
        run["metrics/loss"].append(loss)
    with neptune_session(project="ml-team/fraud", secret=SECRET) as same:
        assert same is run  # the block inside the decorated task reuses its run
        same["metrics/loss"].append(0.125)
    return "trained"


@task(secret_requests=[SECRET], enable_deck=True)
def fails() -> str:
    prepare = 1  # untracked work before the block
    with neptune_session(project="ml-team/fraud", secret=SECRET) as run:
        run["params/prepare"] = prepare
        raise RuntimeError("diverged at epoch 3")
"""


def _secret_in_files(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_pod_run_records_all_flyte_metadata_offline_and_never_the_secret(pod_run: PodRunner) -> None:
    result = pod_run(
        POD_TASKS,
        "train",
        inputs={"lr": 0.01},
        secrets={("neptune", "api_token"): POD_SECRET},
        env={"FLYTE_CTX_TRACKING_MODE": "offline"},
    )
    assert result.returncode == 0, result.output
    assert result.outputs == {"o0": "trained"}

    recorded = only_run(result.workdir / "tracking" / "neptune" / ".neptune")
    module = f"pod_tasks_{result.workdir.name}"
    flyte = recorded.namespace("flyte")
    assert flyte["flyte/execution_id"] == f"{EXECUTION_NAME}-n0-0"
    assert flyte["flyte/project"] == "flytesnacks"
    assert flyte["flyte/domain"] == "development"
    assert flyte["flyte/name"] == EXECUTION_NAME
    assert flyte["flyte/raw_output_prefix"].startswith(str(result.workdir / "raw"))
    assert flyte["flyte/output_metadata_prefix"] == str(result.output_prefix)
    assert flyte["flyte/working_directory"]
    assert flyte["flyte/task/name"] == f"{module}.train"
    assert flyte["flyte/task/project"] == "flytesnacks"
    assert flyte["flyte/task/domain"] == "development"
    assert flyte["flyte/task/version"] == "v1"
    assert flyte["flyte/execution_url"].endswith(f"/executions/{EXECUTION_NAME}")
    assert flyte["flyte/execution_mode"] == "remote"
    assert flyte["flyte/custom_run_id"] == f"{EXECUTION_NAME}-n0-0"
    assert flyte["flyte/group"] == f"{EXECUTION_NAME}-n0"
    assert flyte["flyte/attempt"] == 0

    assert recorded.value("params/lr") == 0.01
    assert recorded.series("metrics/loss") == [0.5, 0.25, 0.125]
    assert recorded.tags == {"flyte", "pod"}
    assert recorded.failed is False

    deck = result.deck_html
    assert deck is not None and "Neptune run (finished)" in deck
    assert "neptune sync --path" in deck and f"offline/{recorded.run_id}" in deck

    assert POD_SECRET not in result.output
    assert _secret_in_files(result.workdir, POD_SECRET) == []


def test_pod_run_failure_marks_the_run_failed_and_the_task_fails_with_the_users_error(
    pod_run: PodRunner,
) -> None:
    result = pod_run(
        POD_TASKS,
        "fails",
        attempt=2,
        secrets={("neptune", "api_token"): POD_SECRET},
        env={"FLYTE_CTX_TRACKING_MODE": "offline"},
    )
    # pyflyte-execute reports a user error in error.pb (what Flyte shows), not in its exit code.
    assert result.error is not None and "diverged at epoch 3" in result.error, result.output
    assert result.outputs == {}

    recorded = only_run(result.workdir / "tracking")
    assert recorded.failed is True
    assert recorded.value("flyte/error/type") == "builtins.RuntimeError"
    assert recorded.value("flyte/error/message") == "diverged at epoch 3"
    assert recorded.value("params/prepare") == 1
    assert recorded.value("flyte/custom_run_id") == f"{EXECUTION_NAME}-n0-2"
    assert recorded.value("flyte/group") == f"{EXECUTION_NAME}-n0"

    assert POD_SECRET not in result.output
    assert _secret_in_files(result.workdir, POD_SECRET) == []


# ---------------------------------------------------------------------------- the core hook neptune uses


class _ScopeFails:
    def __enter__(self) -> None:
        raise OSError("cannot publish")

    def __exit__(self, *exc: object) -> None: ...


def test_a_scope_that_cannot_be_entered_follows_on_error() -> None:
    from .fake_backend import FakeRun, FakeSession

    class Unpublishable(FakeSession):
        def _handle_scope(self, handle: FakeRun, plan: Any) -> Any:
            return _ScopeFails()

    warned = Unpublishable(mode="offline")
    with pytest.warns(TrackingWarning, match="could not publish"):
        with warned as run:
            assert run is not None and not run.closed  # the run itself still works
    assert run.closed

    raising = Unpublishable(mode="offline", on_error="raise")
    with pytest.raises(TrackingError, match="could not publish"):
        with raising:
            pass
    assert [r.closed for r in raising.opened] == [True]  # nothing left open behind the error
