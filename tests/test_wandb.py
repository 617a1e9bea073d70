"""wandb_session and wandb_init, against the real wandb offline, read back from the run files W&B wrote.

Every assertion reads the ``run-*.wandb`` transaction log (see ``wandb_records.py``): run id,
project, entity, config, notes, tags, history and exit code are what W&B itself recorded, and
what ``wandb sync`` would upload.
"""

from __future__ import annotations

import http.server
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flytekit import Secret, task
from flytekit.types.directory import FlyteDirectory

from flyte_ctx_tracking import (
    TrackingError,
    TrackingWarning,
    current_run,
    tracking_root,
    wandb_init,
    wandb_session,
)
from flyte_ctx_tracking._session import log_to_active_trackers

from .conftest import EXECUTION_NAME, PodRunner
from .wandb_records import WandbRunFile, find_runs, read_run

POD = f"{EXECUTION_NAME}-n0-0"
URL = f"https://flyte.example.com/console/projects/flytesnacks/domains/development/executions/{EXECUTION_NAME}"
OFFLINE: dict[str, Any] = {"mode": "offline"}
FAKE_KEY = "wbkey_FSEC_0123456789abcdef0123456789abcdef"  # 40+ characters, like a real W&B key
AMBIENT_KEY = "wbkey_ambient_0123456789abcdef0123456789ab"


def runs() -> list[WandbRunFile]:
    """Every run W&B wrote under this test's tracking directory."""
    return find_runs(tracking_root())


def only_run() -> WandbRunFile:
    (run,) = runs()
    return run


def metrics(run: WandbRunFile) -> list[dict[str, Any]]:
    """The logged history rows without W&B's own ``_step``/``_runtime``/``_timestamp``."""
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in run.history]


@pytest.fixture
def pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a Flyte pod, outside any task: the execution context reads it."""
    for name, value in {
        "FLYTE_INTERNAL_EXECUTION_ID": EXECUTION_NAME,
        "FLYTE_INTERNAL_EXECUTION_PROJECT": "flytesnacks",
        "FLYTE_INTERNAL_EXECUTION_DOMAIN": "development",
        "FLYTE_INTERNAL_TASK_NAME": "workflows.train",
        "FLYTE_INTERNAL_TASK_VERSION": "v7",
        "HOSTNAME": POD,
        "FLYTE_ATTEMPT_NUMBER": "0",
        "FLYTE_EXECUTION_URL": URL,
    }.items():
        monkeypatch.setenv(name, value)


# ---------------------------------------------------------------------------------------- a block
def test_a_block_records_its_run_with_the_users_config_notes_tags_and_metrics() -> None:
    with wandb_session(
        project="fraud", entity="ml-team", config={"lr": 0.1}, notes="first try", tags=["baseline"], **OFFLINE
    ) as run:
        assert current_run("wandb") is run
        for epoch in range(3):
            run.log({"loss": 1.0 / (epoch + 1)})
    assert current_run("wandb") is None

    recorded = only_run()
    assert recorded.run_id == run.id
    assert (recorded.project, recorded.entity) == ("fraud", "ml-team")
    assert recorded.user_config == {"lr": 0.1}  # a local run: no Flyte execution to describe
    assert recorded.notes == "first try"
    assert recorded.tags == ["baseline"]
    assert metrics(recorded) == [{"loss": 1.0}, {"loss": 0.5}, {"loss": pytest.approx(1 / 3)}]
    assert recorded.exit_code == 0
    # The default data directory: one subfolder per backend under FLYTE_CTX_TRACKING_DIR.
    assert recorded.path.parent.parent == tracking_root() / "wandb"


def test_in_a_pod_the_run_is_named_after_the_pod_and_carries_the_flyte_metadata(pod_env: None) -> None:
    with wandb_session(project="fraud", config={"lr": 0.1}, notes="user notes", tags=["baseline"], **OFFLINE) as run:
        run.log({"auc": 0.9})
    recorded = only_run()
    assert recorded.run_id == POD  # what Flyte console link templates are built from
    assert recorded.group == EXECUTION_NAME  # an execution's runs are found together
    assert recorded.job_type == "train"  # the task (the pod's task name's last part)
    assert recorded.config["lr"] == 0.1
    flyte = recorded.config["flyte"]
    assert flyte["execution_id"] == POD
    assert (flyte["project"], flyte["domain"], flyte["name"]) == ("flytesnacks", "development", EXECUTION_NAME)
    assert flyte["task"] == {"name": "workflows.train", "version": "v7"}
    assert flyte["execution_url"] == URL
    assert recorded.notes == f"[Execution URL]({URL})\nuser notes"
    assert recorded.tags == ["baseline", "flytesnacks", "development"]


def test_a_config_wandb_reads_itself_gets_the_flyte_entry_too(pod_env: None) -> None:
    import argparse

    with wandb_session(project="fraud", config=argparse.Namespace(lr=0.2), **OFFLINE):
        pass
    recorded = only_run()
    assert recorded.config["lr"] == 0.2
    assert recorded.config["flyte"]["execution_id"] == POD


def test_a_users_flyte_config_entry_is_kept(pod_env: None) -> None:
    with wandb_session(project="fraud", config={"flyte": "mine"}, **OFFLINE):
        pass
    assert only_run().user_config == {"flyte": "mine"}


def test_a_users_id_and_group_win_over_the_pods(pod_env: None) -> None:
    with wandb_session(project="fraud", id="my-run", group="sweep-3", **OFFLINE):
        pass
    recorded = only_run()
    assert (recorded.run_id, recorded.group) == ("my-run", "sweep-3")


def test_a_retry_gets_its_own_run_in_the_same_group(pod_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with wandb_session(project="fraud", **OFFLINE):
        pass
    monkeypatch.setenv("HOSTNAME", f"{EXECUTION_NAME}-n0-1")
    monkeypatch.setenv("FLYTE_ATTEMPT_NUMBER", "1")
    with wandb_session(project="fraud", **OFFLINE):
        pass
    first, second = runs()
    assert (first.run_id, second.run_id) == (POD, f"{EXECUTION_NAME}-n0-1")
    assert first.group == second.group == EXECUTION_NAME


def test_no_run_is_left_open_after_a_block() -> None:
    import wandb

    with wandb_session(project="fraud", **OFFLINE) as run:
        assert wandb.run is run  # wandb.log and W&B's framework callbacks find it, as with the plugin
        wandb.log({"via_global": 1})
    assert wandb.run is None
    with pytest.raises(wandb.Error):
        run.log({"late": 1})  # the run is finished
    assert metrics(only_run()) == [{"via_global": 1}]


# ---------------------------------------------------------------------------------------- nesting
def test_the_same_session_nested_reuses_its_run() -> None:
    session = wandb_session(project="fraud", **OFFLINE)
    with session as outer:
        with session as inner:
            inner.log({"step": 1})
        with wandb_session(project="fraud", **OFFLINE) as same_target:  # same project, no id: same run
            same_target.log({"step": 2})
        outer.log({"step": 3})
    assert inner is outer is same_target
    recorded = only_run()
    assert metrics(recorded) == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert recorded.exit_code == 0


def test_a_different_session_nested_opens_a_second_independent_run() -> None:
    import wandb

    with wandb_session(project="fraud", id="outer-run", **OFFLINE) as outer:
        outer.log({"outer": 1})
        with wandb_session(project="fraud-eval", id="inner-run", **OFFLINE) as inner:
            assert inner is not outer
            assert current_run("wandb") is inner
            assert wandb.run is outer  # the process-wide run stays the first one
            inner.log({"inner": 1})
        assert current_run("wandb") is outer
        outer.log({"outer": 2})  # the inner exit did not finish the outer run
    inner_run, outer_run = runs()
    assert (outer_run.run_id, outer_run.project) == ("outer-run", "fraud")
    assert (inner_run.run_id, inner_run.project) == ("inner-run", "fraud-eval")
    assert metrics(outer_run) == [{"outer": 1}, {"outer": 2}]
    assert metrics(inner_run) == [{"inner": 1}]
    assert outer_run.exit_code == inner_run.exit_code == 0


def test_a_failing_inner_run_leaves_the_outer_run_successful() -> None:
    with wandb_session(project="fraud", id="outer-ok", **OFFLINE):
        with pytest.raises(ValueError), wandb_session(project="fraud", id="inner-fails", **OFFLINE):
            raise ValueError("inner")
    inner_run, outer_run = runs()
    assert inner_run.exit_code != 0
    assert outer_run.exit_code == 0


def test_profilers_report_into_the_active_run() -> None:
    with wandb_session(project="fraud", **OFFLINE):
        assert log_to_active_trackers({"memray/peak_bytes": 1024}) == ["wandb"]
    assert metrics(only_run()) == [{"memray/peak_bytes": 1024}]


# ---------------------------------------------------------------------------------------- modes
def test_no_key_in_auto_mode_runs_offline_with_one_warning_naming_the_folder_and_sync_command() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with wandb_session(project="fraud") as run:
            run.log({"x": 1})
    ours = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 1
    recorded = only_run()
    folder = recorded.path.parent
    message = str(ours[0].message)
    assert "no API key" in message and "offline" in message
    assert str(folder) in message
    assert f"wandb sync {folder}" in message
    assert recorded.exit_code == 0


def test_an_explicit_dir_wins_over_the_tracking_directory(tmp_path: Path) -> None:
    with wandb_session(project="fraud", dir=tmp_path / "mine", **OFFLINE):
        pass
    assert runs() == []
    (recorded,) = find_runs(tmp_path / "mine")
    assert recorded.path.parent.parent == tmp_path / "mine" / "wandb"  # W&B's own layout under `dir`


def test_wandb_settings_from_the_user_are_kept() -> None:
    import wandb

    with wandb_session(project="fraud", settings=wandb.Settings(run_name="named-by-settings"), **OFFLINE):
        pass
    assert only_run().display_name == "named-by-settings"


def test_ambient_credentials_are_the_env_var_or_a_saved_login(monkeypatch: pytest.MonkeyPatch) -> None:
    session = wandb_session(project="fraud")
    assert not session._ambient_credentials()
    monkeypatch.setenv("WANDB_API_KEY", AMBIENT_KEY)
    assert session._ambient_credentials()
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = Path.home() / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {AMBIENT_KEY}\n")
    netrc.chmod(0o600)
    assert session._ambient_credentials()
    assert not wandb_session(api_host="https://wandb.internal.example.com")._ambient_credentials()


# ---------------------------------------------------------------------------------------- distributed
def test_only_rank_zero_opens_a_run_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with wandb_session(project="fraud", **OFFLINE) as run:
        assert run is None
    assert runs() == []


def test_all_ranks_gives_each_rank_its_own_run_in_one_group(pod_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        with wandb_session(project="fraud", all_ranks=True, **OFFLINE):
            pass
        with wandb_session(project="fraud", id="custom", all_ranks=True, **OFFLINE):
            pass
    recorded = runs()
    assert [run.run_id for run in recorded] == [f"{POD}-rank0", f"{POD}-rank1", "custom-rank0", "custom-rank1"]
    assert {run.group for run in recorded} == {EXECUTION_NAME}


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"id": "team/run"}, ValueError, ["'team/run'", ":;,#?/'"]),
        ({"id": " padded"}, ValueError, ["' padded'"]),
        ({"id": 7}, TypeError, ["id=7"]),
        ({"project": "a/b"}, ValueError, ["'a/b'"]),
        ({"mode": "shared"}, ValueError, ["'shared'", "'offline'"]),
        ({"on_error": "ignore"}, ValueError, ["'ignore'", "'warn'"]),
        ({"secret": "plain-key"}, TypeError, ["secret=str"]),
        ({"dir": 3.5}, TypeError, ["dir=3.5"]),
        ({"tags": "one-tag"}, TypeError, ["tags='one-tag'"]),
    ],
)
def test_bad_input_fails_at_construction_naming_the_value(
    kwargs: dict[str, Any], error: type[Exception], names: list[str]
) -> None:
    with pytest.raises(error) as raised:
        wandb_session(**kwargs)
    for name in names:
        assert name in str(raised.value)
    with pytest.raises(error):
        wandb_init(**kwargs)  # the decorator fails at decoration time too


# ---------------------------------------------------------------------------------------- the decorator
def test_the_decorator_runs_a_task_inside_a_run() -> None:
    import wandb

    @task
    @wandb_init(project="fraud", entity="ml-team", mode="offline", config={"depth": 4})
    def evaluate(threshold: float) -> float:
        current_run("wandb").log({"auc": 0.93})
        wandb.log({"threshold": threshold})  # code written for flytekitplugins-wandb keeps working
        return 0.93

    assert evaluate(threshold=0.5) == 0.93
    recorded = only_run()
    assert (recorded.project, recorded.entity) == ("fraud", "ml-team")
    assert recorded.user_config["depth"] == 4
    assert metrics(recorded) == [{"auc": 0.93}, {"threshold": 0.5}]
    assert recorded.exit_code == 0


def test_the_decorator_without_arguments_and_on_plain_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "offline")

    @wandb_init
    def plain() -> str:
        return str(current_run("wandb").id)

    run_id = plain()
    assert only_run().run_id == run_id


def test_a_failing_decorated_task_records_a_failed_run() -> None:
    @wandb_init(project="fraud", mode="offline")
    def broken() -> None:
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        broken()
    assert only_run().exit_code != 0


def test_get_extra_config_matches_flytekitplugins_wandb() -> None:
    def f() -> None: ...

    default_id = wandb_init(project="fraud", entity="ml-team", secret=Secret(group="wandb", key="api_key"))(f)
    assert default_id.get_extra_config() == {
        "project": "fraud",
        "entity": "ml-team",
        "host": "https://wandb.ai",
        "link_type": "wandb-execution-id",
    }
    custom = wandb_init(project="fraud", entity="ml-team", id="run-7", host="https://wandb.example.com")(f)
    assert custom.get_extra_config() == {
        "project": "fraud",
        "entity": "ml-team",
        "host": "https://wandb.example.com",
        "id": "run-7",
        "link_type": "wandb-custom-id",
    }
    # The same parameters in the same order as the plugin: positional use keeps working.
    positional = wandb_init(f, "fraud", "ml-team", None, "run-8")
    assert positional.get_extra_config()["id"] == "run-8"


def test_dir_may_name_a_task_parameter_holding_a_flyte_directory(tmp_path: Path) -> None:
    target = tmp_path / "runs-here"
    target.mkdir()

    @task
    @wandb_init(project="fraud", mode="offline", dir="out")
    def train(out: FlyteDirectory) -> None:
        current_run("wandb").log({"x": 1})

    train(out=FlyteDirectory(str(target)))
    assert runs() == []
    (recorded,) = find_runs(target)
    assert metrics(recorded) == [{"x": 1}]


def test_dir_may_be_a_flyte_directory_or_a_path(tmp_path: Path) -> None:
    @wandb_init(project="fraud", mode="offline", dir=FlyteDirectory(str(tmp_path / "fd")))
    def one() -> None: ...

    @wandb_init(project="fraud", mode="offline", dir=str(tmp_path / "plain"))
    def two() -> None: ...

    one()
    two()
    assert len(find_runs(tmp_path / "fd")) == 1
    assert len(find_runs(tmp_path / "plain")) == 1


# ---------------------------------------------------------------------------------------- secrets
class _RejectingServer(http.server.BaseHTTPRequestHandler):
    """A W&B API that answers every request with 401: the online attempt fails fast, offline."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"errors": [{"message": "unauthorized"}]}')

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def rejecting_api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RejectingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _files_containing(text: str, *roots: Path) -> list[Path]:
    return [path for root in roots for path in root.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


def test_a_key_is_used_for_this_run_only_and_never_written(
    rejecting_api: str, capfd: pytest.CaptureFixture[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Online with a key against an API that rejects it: the run falls back offline, and afterwards
    no login is left in the process, no ~/.netrc exists, and the key is in no file and no output."""
    import wandb
    from wandb.sdk.lib.wbauth import authenticate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with wandb_session(project="fraud", secret=lambda: FAKE_KEY, api_host=rejecting_api) as run:
            run.log({"x": 1})
    messages = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(messages) == 1 and "going online failed" in messages[0] and "runs offline" in messages[0]
    # The block ran on, tracked offline; the failed online attempt's folder is gone.
    (offline_folder,) = (tracking_root() / "wandb").glob("offline-run-*")
    assert read_run(offline_folder).exit_code == 0
    assert authenticate._session_auth is None  # no process-wide login left behind
    assert wandb.setup().settings.api_key is None
    assert not (Path.home() / ".netrc").exists()
    out = capfd.readouterr()
    assert FAKE_KEY not in out.out + out.err
    assert FAKE_KEY not in "".join(messages)
    # wandb-core's own logs go under the HOME of the first test that started it: search every test's dirs.
    assert _files_containing(FAKE_KEY, tracking_root(), Path.home(), tmp_path_factory.getbasetemp()) == []


def test_a_fixed_run_id_still_falls_back_offline_and_syncs_under_that_id(rejecting_api: str) -> None:
    """In a pod the run id is the pod name: a failed online attempt keeps it reserved in wandb-core,
    so the offline run takes `<id>-offline` and its sync command uploads it under the intended id."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with wandb_session(project="fraud", id="pod-n0-0", secret=lambda: FAKE_KEY, api_host=rejecting_api) as run:
            assert run is not None
            run.log({"x": 1})
    assert run.id == "pod-n0-0-offline"
    (offline_folder,) = (tracking_root() / "wandb").glob("offline-run-*-pod-n0-0-offline")
    record = read_run(offline_folder)
    assert record.exit_code == 0
    messages = "".join(str(w.message) for w in caught if issubclass(w.category, TrackingWarning))
    assert f"wandb sync --id pod-n0-0 {offline_folder}" in messages


def test_on_error_raise_reports_the_failure_without_the_key(rejecting_api: str) -> None:
    session = wandb_session(project="fraud", secret=lambda: FAKE_KEY, api_host=rejecting_api, on_error="raise")
    with pytest.raises(TrackingError) as raised, session:
        pass
    assert FAKE_KEY not in str(raised.value)


# ---------------------------------------------------------------------------------------- in a pod
POD_TASKS = """
from flytekit import Secret, task
from flyte_ctx_tracking import current_run, wandb_init, wandb_session

WANDB = Secret(group="wandb", key="api_key")

@task(secret_requests=[WANDB], enable_deck=True)
def train(epochs: int) -> str:
    print("preparing, untracked")
    with wandb_session(project="fraud", entity="ml-team", secret=WANDB, config={"epochs": epochs}) as run:
        for epoch in range(epochs):
            run.log({"loss": 1.0 / (epoch + 1)})
        return run.id

@task(secret_requests=[WANDB], enable_deck=True)
@wandb_init(project="fraud", entity="ml-team", secret=WANDB)
def evaluate() -> str:
    current_run("wandb").log({"auc": 0.93})
    return current_run("wandb").id
"""


def test_a_pod_run_with_a_secret(pod_run: PodRunner) -> None:
    secret_value = FAKE_KEY
    common = {
        "secrets": {("wandb", "api_key"): secret_value},
        "env": {"FLYTE_CTX_TRACKING_MODE": "offline"},  # nothing reaches the network
    }
    first = pod_run(POD_TASKS, "train", inputs={"epochs": 2}, **common)
    assert first.returncode == 0, first.output
    assert first.outputs == {"o0": POD}
    (recorded,) = find_runs(first.workdir / "tracking")
    assert (recorded.run_id, recorded.project, recorded.entity) == (POD, "fraud", "ml-team")
    assert recorded.group == EXECUTION_NAME and recorded.job_type == "train"
    assert recorded.user_config["epochs"] == 2
    assert recorded.config["flyte"]["execution_id"] == POD
    assert recorded.config["flyte"]["task"]["name"].endswith(".train")
    assert recorded.notes.startswith("[Execution URL](https://flyte.example.com/console/")
    assert recorded.tags == ["flytesnacks", "development"]
    assert metrics(recorded) == [{"loss": 1.0}, {"loss": 0.5}]
    assert recorded.exit_code == 0
    deck = first.deck_html
    assert deck is not None and "Weights &amp; Biases" in deck
    assert POD in deck and "fraud" in deck and "ml-team" in deck
    assert f"wandb sync {recorded.path.parent}" in deck

    # A retry of the decorated task: its own run, in the same group.
    second = pod_run(POD_TASKS, "evaluate", attempt=1, **common)
    assert second.returncode == 0, second.output
    (retried,) = find_runs(second.workdir / "tracking")
    assert retried.run_id == f"{EXECUTION_NAME}-n0-1" == second.outputs["o0"]
    assert retried.group == recorded.group and retried.job_type == "evaluate"
    assert metrics(retried) == [{"auc": 0.93}]

    for pod in (first, second):
        assert secret_value not in pod.output
        assert [p for p in pod.files() if secret_value.encode() in p.read_bytes()] == []
        assert not (pod.workdir / "home" / ".netrc").exists()


def test_a_very_long_pod_name_gives_a_bounded_stable_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_INTERNAL_EXECUTION_ID", "e")
    monkeypatch.setenv("HOSTNAME", "e-" + "a" * 300 + "-0")
    ids = []
    for _ in range(2):
        with wandb_session(project="fraud", mode="offline") as run:
            ids.append(run.id)
    assert ids[0] == ids[1]  # deterministic: retries of the same pod find each other
    assert len(ids[0]) <= 64 and ids[0].startswith("e-aaaa")
