"""The backends' own settings are honoured, in a documented order: an argument in code wins, then
FLYTE_CTX_TRACKING_MODE / FLYTE_CTX_TRACKING_DIR, then the backend's own variable, then the default."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from flyte_ctx_tracking import NullRun, TrackingWarning, neptune_session, wandb_session
from tests.neptune_oplog import offline_runs
from tests.wandb_records import find_runs


def test_wandb_mode_disabled_disables_a_session_left_at_auto(
    _isolated_tracking: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with wandb_session(project="quiet") as run:
        assert isinstance(run, NullRun)
    assert not find_runs(_isolated_tracking)


def test_wandb_mode_offline_keeps_a_run_with_a_key_offline(
    _isolated_tracking: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # would go online: W&B's own switch says offline
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)  # nothing fell back: offline was asked for
        with wandb_session(project="asked") as run:
            run.log({"loss": 1.0})
    (recorded,) = find_runs(_isolated_tracking)
    assert recorded.project == "asked"


def test_the_code_and_the_librarys_variable_win_over_wandb_mode(
    _isolated_tracking: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with wandb_session(project="code", mode="offline") as run:
        assert run
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "offline")
    with wandb_session(project="library") as run:
        assert run
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "online")
    with wandb_session(project="stays-disabled", mode="disabled") as run:
        assert isinstance(run, NullRun)  # a session disabled in code stays disabled
    assert sorted(run.project for run in find_runs(_isolated_tracking)) == ["code", "library"]


def test_wandb_dir_and_project_place_and_name_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_tracking: Path
) -> None:
    monkeypatch.delenv("FLYTE_CTX_TRACKING_DIR")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with wandb_session(mode="offline") as run:
            run.log({"x": 1})
    (recorded,) = find_runs(tmp_path / "wandb-home")
    assert recorded.project == "from-env"
    assert (tmp_path / "wandb-home" / "wandb").is_dir() and not (tmp_path / ".flyte-ctx-tracking").exists()


def test_flyte_ctx_tracking_dir_wins_over_wandb_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_tracking: Path
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    with wandb_session(mode="offline") as run:
        run.log({"x": 1})
    assert find_runs(_isolated_tracking) and not (tmp_path / "wandb-home").exists()


def test_neptune_mode_debug_disables_and_offline_keeps_a_token_offline(
    _isolated_tracking: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEPTUNE_MODE", "debug")
    with neptune_session(project="ml/quiet") as run:
        assert isinstance(run, NullRun)
    assert not offline_runs(_isolated_tracking)
    monkeypatch.setenv("NEPTUNE_MODE", "offline")
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "not-a-real-token")
    with neptune_session(project="ml/asked") as run:
        run["x"] = 1
    assert len(offline_runs(_isolated_tracking)) == 1


def test_the_offline_notice_names_what_is_missing_and_is_said_once_per_process() -> None:
    with pytest.warns(TrackingWarning) as caught:
        for _ in range(4):  # a map task of four elements
            with neptune_session(project="ml/mapped") as run:
                run["x"] = 1
    [message] = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert "no API token was found" in message and "NEPTUNE_API_TOKEN is not set" in message
