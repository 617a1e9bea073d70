"""comet_session and comet_ml_login against the real comet_ml client, offline, read back from its archives."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import warnings
from pathlib import Path

import comet_ml
import pytest
from flytekit import Secret, task
from hypothesis import given, settings
from hypothesis import strategies as st

from flyte_ctx_tracking import (
    ExecutionContext,
    TrackingError,
    TrackingWarning,
    _comet_ml_login_class,
    comet_ml_login,
    comet_session,
    current_run,
)
from flyte_ctx_tracking._session import log_to_active_trackers
from flyte_ctx_tracking.sessions.comet import (
    _EXPERIMENT_CONFIG_KWARGS,
    flyte_experiment_key,
    is_valid_experiment_key,
    link_suffix,
)
from tests.comet_archive import CometArchive, archives
from tests.conftest import EXECUTION_NAME, PodRunner

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _plugin_key(hostname: str, project: str, workspace: str) -> str:
    """flytekitplugins-comet-ml's rule, restated: the hostname without dashes + SHAKE-256 suffix."""
    return hostname.replace("-", "") + hashlib.shake_256(f"{project}-{workspace}".encode()).hexdigest(5)


def _only_archive(root: Path) -> CometArchive:
    found = archives(root / "comet")
    assert len(found) == 1, [a.path for a in found]
    return found[0]


def test_block_records_key_project_tags_metrics_parameters(_isolated_tracking: Path) -> None:
    session = comet_session(project_name="fraud", workspace="ml-team", tags=["flyte"])
    with pytest.warns(TrackingWarning, match="runs offline") as caught, session as experiment:
        experiment.log_metric("loss", 0.12, step=1)
        comet_ml.get_running_experiment().log_parameter("lr", 3e-4)
        assert current_run("comet") is experiment
        assert log_to_active_trackers({"peak_mb": 12.5}) == ["comet"]
        key = experiment.get_key()
    archive = _only_archive(_isolated_tracking)
    assert archive.key == key and is_valid_experiment_key(key)
    assert (archive.project, archive.workspace, archive.tags) == ("fraud", "ml-team", ["flyte"])
    assert archive.metrics("loss") == [(1, 0.12)]
    assert archive.metrics("peak_mb")[-1][1] == 12.5
    assert archive.parameters == {"lr": 3e-4}
    assert archive.others["flyte/status"] == "succeeded"
    assert not archive.error_reported
    # the code logged is the file that opened the session, not this library's
    assert archive.code_files == [__file__]
    # the warning says where the archive is and how to upload it
    [message] = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert str(archive.path) in message and f"comet upload {archive.path}" in message
    assert current_run("comet") is None


def test_exception_marks_the_experiment_failed_and_propagates(_isolated_tracking: Path) -> None:
    boom = ValueError("bad batch 7")
    with pytest.raises(ValueError) as raised, comet_session(project_name="fraud", mode="offline") as experiment:
        experiment.log_metric("loss", 1.0)
        raise boom
    assert raised.value is boom
    archive = _only_archive(_isolated_tracking)
    assert archive.others["flyte/status"] == "failed"
    assert archive.others["flyte/error"] == "ValueError: bad batch 7"
    assert archive.error_reported and "bad batch 7" in (archive.error_message or "")
    assert archive.metrics("loss") == [(None, 1.0)]


def test_nested_same_session_reuses_and_a_different_one_does_not_end_it(_isolated_tracking: Path) -> None:
    outer = comet_session(project_name="fraud", mode="offline")
    with outer as experiment:
        with comet_session(project_name="fraud", mode="offline") as same_target, outer as same_object:
            assert same_target is experiment and same_object is experiment
        with pytest.warns(TrackingWarning, match="one experiment per process"):
            with comet_session(project_name="other", mode="offline") as inner:
                assert not inner  # untracked (a NullRun), and the outer experiment is still running
                inner.log_metric("ignored", 1)
        assert not experiment.ended and comet_ml.get_running_experiment() is experiment
        experiment.log_metric("after_inner", 1)
        with (
            pytest.raises(TrackingError, match="still running"),
            comet_session(project_name="other", mode="offline", on_error="raise"),
        ):
            pass
    archive = _only_archive(_isolated_tracking)
    assert archive.project == "fraud" and archive.metrics("after_inner") == [(None, 1)]


def test_local_run_without_key_gets_a_fresh_valid_key(_isolated_tracking: Path) -> None:
    keys = []
    for _ in range(2):
        with comet_session(mode="offline") as experiment:
            keys.append(experiment.get_key())
    assert all(is_valid_experiment_key(key) for key in keys) and keys[0] != keys[1]
    assert sorted(a.key for a in archives(_isolated_tracking / "comet")) == sorted(keys)


def test_decorator_on_a_local_task(_isolated_tracking: Path) -> None:
    @task
    @comet_ml_login(project_name="fraud", workspace="ml-team", tags=["flyte"], mode="offline")
    def train(x: int) -> str:
        experiment = current_run("comet")
        experiment.log_metric("x", x)
        comet_ml.get_running_experiment().log_parameter("x_param", x)
        return str(experiment.get_key())

    key = train(x=3)
    archive = _only_archive(_isolated_tracking)
    assert archive.key == key
    assert (archive.project, archive.workspace, archive.tags) == ("fraud", "ml-team", ["flyte"])
    assert archive.metrics("x") == [(None, 3)] and archive.parameters == {"x_param": 3}
    assert archive.code_files == [__file__]  # the task's file


def test_seed_spelling_and_decorator_order() -> None:
    @_comet_ml_login_class(project_name="fraud", workspace="ml-team", mode="disabled")
    def plain() -> int:
        return 1

    assert plain() == 1
    with pytest.raises(TypeError, match="below @task"):
        _comet_ml_login_class(project_name="p", workspace="w")(task(lambda: None))  # type: ignore[arg-type]


def test_get_extra_config_matches_the_plugin() -> None:
    by_execution = comet_ml_login("fraud", "ml-team", None)(lambda: None)
    assert by_execution.get_extra_config() == {
        "project_name": "fraud",
        "workspace": "ml-team",
        "host": "https://www.comet.com",
        "link_suffix": hashlib.shake_256(b"fraud-ml-team").hexdigest(5),
        "link_type": "comet-ml-execution-id",
    }
    custom = comet_ml_login(project_name="fraud", workspace="ml-team", experiment_key="k" * 32, host="https://c.io")
    assert custom(lambda: None).get_extra_config() == {
        "project_name": "fraud",
        "workspace": "ml-team",
        "host": "https://c.io",
        "experiment_key": "k" * 32,
        "link_type": "comet-ml-custom-id",
    }


POD_TASK = """
import comet_ml
from flytekit import Secret, task
from flyte_ctx_tracking import comet_ml_login, current_run

SECRET = Secret(group="comet", key="api_key")

@task(secret_requests=[SECRET], enable_deck=True)
@comet_ml_login(project_name="fraud", workspace="ml-team", secret=SECRET, tags=["flyte"])
def train(x: int) -> str:
    experiment = current_run("comet")
    experiment.log_metric("loss", 0.5, step=x)
    comet_ml.get_running_experiment().log_parameter("lr", 0.001)
    return experiment.get_key()
"""


def test_pod_run_with_secret_offline(pod_run: PodRunner) -> None:
    secret_value = "".join(reversed("c1a3f9_kael_ton_od_CESF_yektmc"))  # no literal in the logged source
    run = pod_run(
        POD_TASK,
        "train",
        inputs={"x": 2},
        secrets={("comet", "api_key"): secret_value},
        env={"FLYTE_CTX_TRACKING_MODE": "offline"},
    )
    assert run.returncode == 0, run.output
    archive = _only_archive(run.workdir / "tracking")
    expected_key = _plugin_key(f"{EXECUTION_NAME}-n0-0", "fraud", "ml-team")
    assert run.outputs["o0"] == expected_key == archive.key
    assert (archive.project, archive.workspace) == ("fraud", "ml-team")
    assert sorted(archive.tags) == ["development", "flyte", "flytesnacks"]
    assert archive.metrics("loss") == [(2, 0.5)] and archive.parameters == {"lr": 0.001}
    others = archive.others
    assert others["flyte/execution_id"] == f"{EXECUTION_NAME}-n0-0"
    assert others["flyte/project"] == "flytesnacks" and others["flyte/domain"] == "development"
    assert others["flyte/execution_url"].endswith(EXECUTION_NAME)
    assert others["flyte/status"] == "succeeded"
    # the deck shows the archive and the upload command
    assert run.deck_html is not None and f"comet upload {archive.path}" in run.deck_html
    # the secret's value is in no output, no file, and not inside the archive
    assert secret_value not in run.output
    assert not archive.contains(secret_value)
    for path in run.files():
        assert secret_value.encode() not in path.read_bytes(), path
    assert not (run.workdir / "home" / ".comet.config").exists()


keys_settings = settings(max_examples=60, deadline=None)
execution_names = st.from_regex(r"[a-z][a-z0-9]{0,24}", fullmatch=True)
node_ids = st.one_of(
    st.from_regex(r"n[0-9]{1,3}", fullmatch=True),
    st.from_regex(r"n[0-9]{1,2}-[0-9]-d?n[0-9]{1,2}", fullmatch=True),
)
pods = st.tuples(execution_names, node_ids, st.integers(0, 30), st.none() | st.integers(0, 300))


def _pod_context(execution: str, node: str, attempt: int, index: int | None) -> ExecutionContext:
    rebuilt = ExecutionContext(is_remote=True, execution_name=execution, node_id=node, attempt=attempt, map_index=index)
    return dataclasses.replace(rebuilt, pod_name=rebuilt.execution_id)  # as HOSTNAME would be


@keys_settings
@given(st.lists(pods, min_size=2, max_size=8, unique=True), st.sampled_from([("fraud", "ml"), ("p", None)]))
def test_keys_are_valid_and_distinct_for_pods_the_plugin_keeps_apart(
    pod_list: list[tuple[str, str, int, int | None]], target: tuple[str, str | None]
) -> None:
    keys = []
    for pod in pod_list:
        context = _pod_context(*pod)
        keys.append(flyte_experiment_key(context.run_identity() or "", *target, pod_name=context.pod_name))
    assert all(is_valid_experiment_key(key) for key in keys), keys
    # flytekitplugins-comet-ml's key drops the dashes, so pods whose names differ only in where the
    # dashes are (`...-n1-10`, `...-n11-0`) share it, as with the plugin; all others are kept apart.
    by_name: dict[str, set[str]] = {}
    for pod, key in zip(pod_list, keys, strict=True):
        by_name.setdefault(key, set()).add(_pod_context(*pod).run_identity().replace("-", ""))  # type: ignore[union-attr]
    assert all(len(names) == 1 for names in by_name.values()), by_name


@keys_settings
@given(
    st.from_regex(r"[a-z][a-z0-9]{19}", fullmatch=True),
    st.from_regex(r"n[0-9]{1,3}", fullmatch=True),
    st.integers(0, 9),
)
def test_flyte_generated_pod_names_keep_the_plugin_key(execution: str, node: str, attempt: int) -> None:
    context = _pod_context(execution, node, attempt, None)
    pod = context.pod_name or ""
    assert flyte_experiment_key(pod, "fraud", "ml-team", pod_name=pod) == _plugin_key(pod, "fraud", "ml-team")
    replica = f"{pod}-worker-0"
    assert flyte_experiment_key(replica, "fraud", "ml-team", pod_name=replica) == _plugin_key(
        replica, "fraud", "ml-team"
    )


def test_keys_distinct_by_rank_with_all_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_ctx_tracking._session import OpenPlan

    keys = set()
    for rank in range(4):
        context = dataclasses.replace(_pod_context("f" * 20, "n0", 0, None), rank=rank, world_size=4)
        for session in (
            comet_session(project_name="p", all_ranks=True),
            comet_session(project_name="p", all_ranks=True, experiment_key="a" * 50),
        ):
            sharing, run_id = session._decide_sharing(context, "offline", None)  # as the session decides at open
            plan = OpenPlan("offline", context, Path("."), run_id, context.group, sharing=sharing)
            key = session.experiment_key_for(plan)
            assert is_valid_experiment_key(key)
            if rank == 0 and session.experiment_key is not None:
                assert key == session.experiment_key  # rank 0 keeps the key you give
            keys.add(key)
    assert len(keys) == 8


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"experiment_key": "has-dash" * 5}, ValueError, "alphanumeric"),
        ({"experiment_key": "short"}, ValueError, "32 to 50"),
        ({"experiment_key": "a" * 51}, ValueError, "experiment_key="),
        ({"mode": "sometimes"}, ValueError, "mode='sometimes'"),
        ({"on_error": "ignore"}, ValueError, "on_error='ignore'"),
        ({"host": "comet.example.com"}, ValueError, "host="),
        ({"project_name": ""}, ValueError, "project_name"),
        ({"api_key": "x"}, TypeError, "secret="),
        ({"online": True}, TypeError, "mode='online'"),
        ({"log_everything": True}, TypeError, "log_everything"),
        ({"tags": "one"}, TypeError, "tags=.one.*a list of str"),
        ({"secret": "plain-text-key"}, TypeError, "secret="),
    ],
)
def test_bad_input_fails_at_construction(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        comet_session(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        comet_ml_login(**kwargs)  # type: ignore[arg-type]


def test_config_keywords_match_the_installed_client() -> None:
    accepted = set(inspect.signature(comet_ml.ExperimentConfig).parameters) - {"offline_directory"}
    assert accepted == _EXPERIMENT_CONFIG_KWARGS


def test_secret_leaves_no_login_behind(_isolated_tracking: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Built at run time: the archive holds this file's source, so a literal would be found there.
    value = "".join(reversed("321_tpek_eb_ot_ton_yektmc"))
    monkeypatch.setenv("_FSEC_COMET_API_KEY", value)
    with comet_session(secret=Secret(group="comet", key="api_key"), mode="offline") as experiment:
        assert experiment is not None
    assert "COMET_API_KEY" not in os.environ
    assert comet_ml.config.get_config()["comet.api_key"] is None
    assert not (Path.home() / ".comet.config").exists()
    assert not _only_archive(_isolated_tracking).contains(value)


def test_system_metrics_stay_available_on_request(_isolated_tracking: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with comet_session(mode="offline", log_env_cpu=True):
            pass
    assert _only_archive(_isolated_tracking).metrics("sys.cpu.percent.avg")
    assert link_suffix("fraud", "ml-team") == hashlib.shake_256(b"fraud-ml-team").hexdigest(5)
