"""Comet's own settings and flytekitplugins-comet-ml's experiment keys, against the real comet_ml client.

Every run here is offline (or fails to go online before reaching any network, for want of a key)
and is read back from the archive comet_ml wrote: where it went, with which project, workspace
and key, and in which mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import comet_ml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flyte_ctx_tracking import ExecutionContext, NullRun, TrackingWarning, comet_ml_login, comet_session
from flyte_ctx_tracking._session import OpenPlan
from flyte_ctx_tracking.sessions.comet import flyte_experiment_key, is_valid_experiment_key
from tests.comet_archive import CometArchive, archives

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EXECUTION = "ab3kq9x2m4n5p6r7s8t1"  # Flyte's generated execution names are 20 characters
COMET_VARIABLES = (
    "COMET_PROJECT_NAME",
    "COMET_WORKSPACE",
    "COMET_OFFLINE_DIRECTORY",
    "COMET_START_ONLINE",
    "COMET_AUTO_LOG_DISABLE",
)


def plugin_key(pod_name: str, project: str | None, workspace: str | None) -> str:
    """flytekitplugins-comet-ml's key, restated here on its own: the pod name without dashes, then
    the first 5 bytes of SHAKE-256 over "{project}-{workspace}" as hex."""
    return pod_name.replace("-", "") + hashlib.shake_256(f"{project}-{workspace}".encode()).hexdigest(5)


def comet_accepts(key: str) -> bool:
    """Comet's rule for experiment keys, restated: alphanumeric, 32 to 50 characters."""
    return re.fullmatch(r"[A-Za-z0-9]{32,50}", key) is not None


@pytest.fixture(autouse=True)
def _no_comet_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No Comet setting of the machine leaks in; the working directory is the test's own."""
    for name in COMET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def _in_pod(monkeypatch: pytest.MonkeyPatch, pod_name: str) -> None:
    """The environment of a Flyte pod, outside any flytekit task: the session reads it as remote."""
    monkeypatch.setenv("FLYTE_INTERNAL_EXECUTION_ID", EXECUTION)
    monkeypatch.setenv("HOSTNAME", pod_name)


def _tracking_root() -> Path:
    """Where the session puts archives by default in this suite: ``$FLYTE_CTX_TRACKING_DIR/comet``."""
    return Path(os.environ["FLYTE_CTX_TRACKING_DIR"]) / "comet"


def _only_archive(directory: Path) -> CometArchive:
    found = archives(directory)
    assert len(found) == 1, [a.path for a in found]
    return found[0]


def _tracking_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]


# ---------------------------------------------------------------------------------- Comet's settings


def test_comet_offline_directory_holds_the_archive_when_the_library_has_no_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own = tmp_path / "comet-own"
    monkeypatch.delenv("FLYTE_CTX_TRACKING_DIR")
    monkeypatch.setenv("COMET_OFFLINE_DIRECTORY", str(own))
    with comet_session(project_name="fraud", mode="offline") as experiment:
        experiment.log_metric("loss", 0.5)
    archive = _only_archive(own)
    assert archive.path.parent == own and archive.metrics("loss") == [(None, 0.5)]
    assert not (tmp_path / ".flyte-ctx-tracking").exists()


def test_the_librarys_directory_and_the_code_win_over_comet_offline_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own = tmp_path / "comet-own"
    monkeypatch.setenv("COMET_OFFLINE_DIRECTORY", str(own))
    with comet_session(mode="offline"):
        pass
    assert _only_archive(_tracking_root()).path.parent == _tracking_root()
    chosen = tmp_path / "chosen"
    with comet_session(mode="offline", offline_directory=chosen):
        pass
    assert _only_archive(chosen).path.parent == chosen
    # an ExperimentConfig built while the variable is set carries it, but it is not a choice in code
    with comet_session(mode="offline", experiment_config=comet_ml.ExperimentConfig(tags=["x"])):
        pass
    assert len(archives(_tracking_root())) == 2 and not own.exists()


def test_comet_project_and_workspace_fill_what_the_code_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = f"{EXECUTION}-n0-0"
    _in_pod(monkeypatch, pod)
    monkeypatch.setenv("COMET_PROJECT_NAME", "fraud")
    monkeypatch.setenv("COMET_WORKSPACE", "ml-team")
    with comet_session(mode="offline") as experiment:
        key = experiment.get_key()
    with comet_session(project_name="churn", mode="offline") as experiment:  # the code wins
        other_key = experiment.get_key()
    first, second = sorted(archives(_tracking_root()), key=lambda archive: archive.key != key)
    assert (first.key, first.project, first.workspace) == (key, "fraud", "ml-team")
    assert key == plugin_key(pod, "fraud", "ml-team")
    assert (second.key, second.project, second.workspace) == (other_key, "churn", "ml-team")
    assert other_key == plugin_key(pod, "churn", "ml-team")
    # the console link is built from the same values
    config = comet_ml_login()(lambda: None).get_extra_config()
    assert config == {
        "project_name": "fraud",
        "workspace": "ml-team",
        "host": "https://www.comet.com",
        "link_suffix": plugin_key("", "fraud", "ml-team"),
        "link_type": "comet-ml-execution-id",
    }
    assert comet_ml_login(workspace="ops")(lambda: None).get_extra_config()["link_suffix"] == plugin_key(
        "", "fraud", "ops"
    )


def test_comets_config_file_is_read_like_its_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pod = f"{EXECUTION}-fasj4321-0"
    _in_pod(monkeypatch, pod)
    monkeypatch.delenv("FLYTE_CTX_TRACKING_DIR")
    own = tmp_path / "from-file"
    (Path.home() / ".comet.config").write_text(
        "[comet]\nproject_name = fraud\nworkspace = ml-team\n"
        f"offline_directory = {own}\n\n[comet_start]\nonline = false\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with comet_session() as experiment:  # mode="auto", no key, yet no "runs offline" warning
            assert isinstance(experiment, comet_ml.OfflineExperiment)
    assert _tracking_warnings(caught) == []
    archive = _only_archive(own)
    assert (archive.key, archive.project, archive.workspace) == (
        plugin_key(pod, "fraud", "ml-team"),
        "fraud",
        "ml-team",
    )


def test_comet_start_online_false_keeps_a_session_with_a_key_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_API_KEY", "".join(reversed("0987654321_tpek_ekaf")))  # never sent anywhere
    monkeypatch.setenv("COMET_START_ONLINE", "false")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with comet_session(project_name="fraud") as experiment:
            assert isinstance(experiment, comet_ml.OfflineExperiment)
            experiment.log_metric("loss", 1.0)
    assert _tracking_warnings(caught) == []  # Comet was told offline: no fallback to warn about
    assert _only_archive(_tracking_root()).metrics("loss") == [(None, 1.0)]


def test_comet_start_online_true_goes_online_and_the_code_and_library_variable_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMET_START_ONLINE", "1")
    # no key anywhere: going online fails before any network call, and the session says so
    with pytest.warns(TrackingWarning, match=r"going online failed \(ValueError: Comet.ml requires an API key"):
        with comet_session(project_name="fraud") as experiment:
            assert isinstance(experiment, comet_ml.OfflineExperiment)
    assert len(archives(_tracking_root())) == 1
    for code_mode, library_mode in (("offline", None), ("auto", "offline")):
        if library_mode is not None:
            monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", library_mode)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with comet_session(project_name="fraud", mode=code_mode) as experiment:  # type: ignore[arg-type]
                assert isinstance(experiment, comet_ml.OfflineExperiment)
        assert _tracking_warnings(caught) == []  # no online attempt was made
    assert len(archives(_tracking_root())) == 3


def test_comet_auto_log_disable_disables_an_auto_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_AUTO_LOG_DISABLE", "true")
    monkeypatch.setenv("COMET_START_ONLINE", "true")  # disabling wins over Comet's online switch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with comet_session(project_name="fraud") as experiment:
            assert isinstance(experiment, NullRun)
            experiment.log_metric("ignored", 1)
    assert _tracking_warnings(caught) == [] and archives(_tracking_root()) == []
    # mode="offline" in code is taken, but comet_ml disables every experiment while its switch is on:
    # the session says so instead of pointing at an archive that will never be written
    with pytest.warns(TrackingWarning, match="COMET_AUTO_LOG_DISABLE.*disabled this offline experiment"):
        with comet_session(project_name="fraud", mode="offline") as experiment:
            assert experiment.disabled
    assert archives(_tracking_root()) == []


def test_an_unreadable_comet_switch_warns_and_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMET_START_ONLINE", "sometimes")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with comet_session(project_name="fraud") as experiment:  # auto, no key: offline as usual
            opened = isinstance(experiment, comet_ml.OfflineExperiment)
    messages = _tracking_warnings(caught)
    assert opened, messages  # why it did not open, if it did not (seen once in CI, not reproduced)
    assert any("COMET_START_ONLINE" in m and "ignored" in m for m in messages), messages
    assert len(archives(_tracking_root())) == 1


# ---------------------------------------------------------------------------------- experiment keys

# Pod names as Flyte names them: {execution}-{node id}-{attempt}, a training operator's replica
# suffix, a map task's index. For each, flytekitplugins-comet-ml's key is one Comet accepts.
PLUGIN_VALID_PODS = [
    f"{EXECUTION}-n0-0",  # a top-level node
    f"{EXECUTION}-n12-3",
    f"{EXECUTION}-n1-10",  # attempts of 10 and more
    f"{EXECUTION}-n11-0",  # same key as the one above, as with the plugin
    f"{EXECUTION}-n0-27",
    f"{EXECUTION}-fasj4321-0",  # a hashed node id (nested, dynamic or long node ids)
    f"{EXECUTION}-fh1eqbiq-12",
    f"{EXECUTION}-train-0",  # a named node
    f"{EXECUTION}-evaluate-model-1",
    f"{EXECUTION}-n0-0-worker-0",  # a training operator's replicas
    f"{EXECUTION}-n3-1-master-0",
    f"{EXECUTION}-n0-0-worker-12",
    f"{EXECUTION}-n0-0-7",  # a map task's element index
    f"{EXECUTION}-n1-0-n5-0",  # an array node's subtask
    f"{EXECUTION}-n2-0-dn0-0",  # a dynamic task's node
    "f3b8a1c9e2d7406b9a5e-n0-0",
    "abc-n0-0-0123456789abcdef",  # a short execution name, long enough with the rest
]
# Pod names whose plugin key Comet rejects.
PLUGIN_INVALID_PODS = [
    "myrun-n0-0",  # too short: 8 + 10 characters
    "a-b-c",
    f"{EXECUTION}-fasj4321-12-worker-1023-attempt9",  # too long: over 50 characters
    f"{EXECUTION}-{EXECUTION}-n0-0",
    f"{EXECUTION}-n0.sub-0",  # Kubernetes allows dots; Comet keys do not
]


@pytest.mark.parametrize("pod", PLUGIN_VALID_PODS)
@pytest.mark.parametrize(("project", "workspace"), [("fraud", "ml-team"), ("p", None)])
def test_the_key_is_the_plugins_whenever_comet_accepts_it(pod: str, project: str, workspace: str | None) -> None:
    expected = plugin_key(pod, project, workspace)
    assert comet_accepts(expected)
    assert flyte_experiment_key(pod, project, workspace, pod_name=pod) == expected


@pytest.mark.parametrize("pod", PLUGIN_INVALID_PODS)
def test_a_key_comet_would_reject_is_replaced_by_a_valid_stable_one(pod: str) -> None:
    assert not comet_accepts(plugin_key(pod, "fraud", "ml-team"))
    key = flyte_experiment_key(pod, "fraud", "ml-team", pod_name=pod)
    assert comet_accepts(key) and is_valid_experiment_key(key)
    assert key == flyte_experiment_key(pod, "fraud", "ml-team", pod_name=pod)
    assert key != flyte_experiment_key(pod, "fraud", "other", pod_name=pod)  # per target, like the plugin's


def test_replaced_keys_are_distinct_from_each_other_and_from_the_plugins() -> None:
    replaced = {flyte_experiment_key(pod, "fraud", "ml-team", pod_name=pod) for pod in PLUGIN_INVALID_PODS}
    plugins = {plugin_key(pod, "fraud", "ml-team") for pod in PLUGIN_VALID_PODS}
    assert len(replaced) == len(PLUGIN_INVALID_PODS) and not replaced & plugins


def test_a_pods_experiment_carries_the_plugins_key(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = f"{EXECUTION}-fh1eqbiq-12-worker-3"  # a hashed node id, attempt 12, a replica: a derived key before
    _in_pod(monkeypatch, pod)
    with comet_session(project_name="fraud", workspace="ml-team", mode="offline") as experiment:
        key = experiment.get_key()
    archive = _only_archive(_tracking_root())
    assert key == archive.key == plugin_key(pod, "fraud", "ml-team")
    assert archive.others["flyte/execution_id"] == pod


def _ranked(pod: str, rank: int) -> ExecutionContext:
    context = ExecutionContext(is_remote=True, execution_name=EXECUTION, pod_name=pod)
    return dataclasses.replace(context, rank=rank, world_size=4)


@pytest.mark.parametrize("pod", [f"{EXECUTION}-fasj4321-0-worker-0", "myrun-n0-0"])
def test_every_rank_gets_its_own_key_and_rank_zero_keeps_the_pods(pod: str) -> None:
    session = comet_session(project_name="fraud", workspace="ml-team", all_ranks=True)
    keys = []
    for rank in range(4):
        context = _ranked(pod, rank)
        sharing, run_id = session._decide_sharing(context, "offline", None)  # as the session decides at open
        plan = OpenPlan("offline", context, Path("."), run_id, context.group, sharing=sharing)
        keys.append(session.experiment_key_for(plan))
    assert all(key is not None and comet_accepts(key) for key in keys), keys
    assert len(set(keys)) == 4
    # rank 0's key is the one the pod gets without all_ranks (the console link's, when Comet accepts it)
    assert keys[0] == flyte_experiment_key(pod, "fraud", "ml-team", pod_name=pod)
    if comet_accepts(plugin_key(pod, "fraud", "ml-team")):
        assert keys[0] == plugin_key(pod, "fraud", "ml-team")


pod_names = st.from_regex(r"[a-z0-9]{1,30}(-[a-z0-9]{1,12}){0,5}", fullmatch=True)
targets = st.sampled_from([("fraud", "ml-team"), ("p", None), (None, None)])


@settings(max_examples=120, deadline=None)
@given(pod_names, targets)
def test_any_pod_name_gets_the_plugins_key_or_a_valid_one(pod: str, target: tuple[str | None, str | None]) -> None:
    key = flyte_experiment_key(pod, *target, pod_name=pod)
    expected = plugin_key(pod, *target)
    assert comet_accepts(key)
    assert (key == expected) is comet_accepts(expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(pod_names, min_size=2, max_size=6, unique_by=lambda pod: pod.replace("-", "")))
def test_pods_the_plugin_keeps_apart_stay_apart(pods: list[str]) -> None:
    keys = [flyte_experiment_key(pod, "fraud", "ml-team", pod_name=pod) for pod in pods]
    assert len(set(keys)) == len(keys)
