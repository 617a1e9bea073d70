"""Never hang, never lose, never leak: each tracker goes online against loopback servers that refuse,
answer 500, answer 401 echoing the key, or accept and never answer.

Each scenario runs the user's block in a subprocess with a hard time limit, so a regression fails
instead of hanging the suite. The deadline is configured short (``FLYTE_CTX_TRACKING_ONLINE_TIMEOUT``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.comet_archive import archives
from tests.loopback import BEHAVIOURS, loopback_server
from tests.neptune_oplog import only_run
from tests.wandb_records import find_runs

SCENARIO = Path(__file__).parent / "scenarios" / "online_block.py"
KEY = "LoopbackKey" + "7" * 29  # 40 characters, the length W&B checks
HARD_LIMIT = 150  # seconds: the deadline is 3 s; anything near this limit is a hang


def _forms(key: str) -> list[str]:
    """The key as clients send it: raw, Basic-auth encoded, base64 alone."""
    return [key, base64.b64encode(f"api:{key}".encode()).decode(), base64.b64encode(key.encode()).decode()]


def _run(backend: str, behaviour: str, on_error: str, tmp_path: Path) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "SCENARIO_KEY": KEY, "FLYTE_CTX_TRACKING_ONLINE_TIMEOUT": "3", "WANDB_SILENT": "true"}
    with loopback_server(behaviour) as url:
        done = subprocess.run(
            [sys.executable, str(SCENARIO), backend, url, on_error],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=HARD_LIMIT,
            check=False,
        )
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, output[-3000:]
    return json.loads(lines[-1][len("RESULT ") :]), output


def _assert_no_key_anywhere(tmp_path: Path, *texts: str) -> None:
    forms = _forms(KEY)
    for text in texts:
        for form in forms:
            assert form not in text
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for form in forms:
                assert form.encode() not in data, f"{form} in {path}"


def _mlflow_loss(root: Path) -> list[Any]:
    """The loss of every run in the offline MLflow store."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    store = root / "mlflow" / "mlflow.db"
    if not store.exists():
        return []
    client = MlflowClient(f"sqlite:///{store}")
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiments, run_view_type=ViewType.ALL)
    return [m.value for run in runs for m in client.get_metric_history(run.info.run_id, "loss")]


def _logged_loss(backend: str, root: Path) -> list[Any]:
    if backend == "mlflow":
        return _mlflow_loss(root)
    if backend == "wandb":
        return [row["loss"] for run in find_runs(root) for row in run.history if "loss" in row]
    if backend == "comet":
        return [value for archive in archives(root / "comet") for _, value in archive.metrics("loss")]
    return list(only_run(root).series("loss"))


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
@pytest.mark.parametrize("backend", ["wandb", "comet", "neptune", "mlflow"])
def test_a_server_that_fails_never_holds_the_block_and_the_data_is_kept_offline(
    backend: str, behaviour: str, tmp_path: Path, _isolated_tracking: Path
) -> None:
    result, output = _run(backend, behaviour, "warn", tmp_path)
    assert result["ran"] and result["handle"] != "NullRun"
    ours = [w for w in result["warnings"] if w["category"] == "TrackingWarning"]
    assert len(ours) == 1, ours
    assert "runs offline" in ours[0]["message"] and ours[0]["filename"] == str(SCENARIO)
    assert _logged_loss(backend, _isolated_tracking) == [0.25]
    if backend == "wandb":  # the failed online attempt leaves no run folder claiming exit code 0
        assert not list(_isolated_tracking.rglob("run-*/"))
    _assert_no_key_anywhere(tmp_path, output, json.dumps(result))


@pytest.mark.parametrize("backend", ["wandb", "comet", "neptune", "mlflow"])
def test_on_error_raise_reports_a_failed_online_start_without_the_key(
    backend: str, tmp_path: Path, _isolated_tracking: Path
) -> None:
    result, output = _run(backend, "unauthorized", "raise", tmp_path)
    assert not result["ran"] and result["raised"] and result["raised"].startswith("TrackingError")
    _assert_no_key_anywhere(tmp_path, output, json.dumps(result))
