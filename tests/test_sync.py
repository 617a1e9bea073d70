"""``flyte-ctx-tracking sync``: every offline run found, each uploaded once, nothing local deleted.

W&B, Comet and Neptune run up to the upload call, with their online clients replaced by recorders
(``tests/scenarios/sync_recorded.py``: the only part that cannot run here). The command runs in a
subprocess, as users run it, with the keys in the environment as the sessions read them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flyte_ctx_tracking import comet_session, neptune_session, wandb_session
from flyte_ctx_tracking._sync import RECORD_FILE

SCENARIO = Path(__file__).parent / "scenarios" / "sync_recorded.py"
WANDB_KEY = "SyncKey" + "3" * 33
COMET_KEY = "CometSyncKey" + "5" * 20
NEPTUNE_TOKEN = base64.b64encode(
    json.dumps(
        {"api_address": "https://neptune.example", "api_url": "https://neptune.example", "api_key": "k" * 30}
    ).encode()
).decode()
HARD_LIMIT = 180


def _offline_runs(root: Path) -> None:
    """Two runs of each tracker, offline, as tasks leave them."""
    for number in range(2):
        with wandb_session(project="fraud", mode="offline", directory=root / "wandb") as run:
            run.log({"loss": number})
        with comet_session(project_name="fraud", mode="offline", directory=root / "comet") as experiment:
            experiment.log_metric("loss", number)
        with neptune_session(project="ml-team/fraud", mode="offline", directory=root / "neptune") as run:
            run["loss"].append(number)


@pytest.fixture
def offline_root(tmp_path: Path) -> Path:
    root = tmp_path / "tracking"
    _offline_runs(root)
    return root


def _sync(
    root: Path, recording: Path, *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "WANDB_API_KEY": WANDB_KEY,
        "COMET_API_KEY": COMET_KEY,
        "NEPTUNE_API_TOKEN": NEPTUNE_TOKEN,
        "NEPTUNE_PROJECT": "ml-team/fraud",
        "COLUMNS": "200",
        **(env or {}),
    }
    environment.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, str(SCENARIO), str(recording), "--", "sync", str(root), *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=HARD_LIMIT, check=False)


def _recorded(recording: Path) -> list[dict[str, object]]:
    if not recording.exists():
        return []
    return [json.loads(line) for line in recording.read_text(encoding="utf-8").splitlines()]


def test_every_offline_run_is_uploaded_once_in_order_with_its_key_and_options(
    offline_root: Path, tmp_path: Path
) -> None:
    recording = tmp_path / "calls.jsonl"
    backends = ("--backend", "wandb", "--backend", "comet", "--backend", "neptune")
    done = _sync(offline_root, recording, *backends, "--option", "wandb.entity=ml-team")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = _recorded(recording)
    wandb_folders = sorted(str(p) for p in offline_root.rglob("offline-run-*"))
    comet_archives = sorted(str(p) for p in offline_root.rglob("*.zip"))
    neptune_runs = sorted(p.name.split("__")[1] for p in offline_root.rglob("run__*"))
    # Backends in the order asked for, each backend's runs in path order.
    assert [c["backend"] for c in calls] == ["wandb", "wandb", "comet", "comet", "neptune", "neptune"]
    assert [c["path"] for c in calls if c["backend"] == "comet"] == comet_archives
    assert all(c["api_key"] == COMET_KEY and c["force_upload"] is False for c in calls if c["backend"] == "comet")
    neptune = [c for c in calls if c["backend"] == "neptune"]
    assert sorted(c["objects"][0] for c in neptune) == [f"offline/{uuid}" for uuid in neptune_runs]  # type: ignore[index]
    assert all(c["project"] == "ml-team/fraud" and c["token"] == NEPTUNE_TOKEN for c in neptune)
    wandb = [c for c in calls if c["backend"] == "wandb"]
    assert [c["paths"] for c in wandb] == [[folder] for folder in wandb_folders]
    # The project each run recorded, the entity asked for.
    assert all(c["api_key"] == WANDB_KEY for c in wandb)
    assert all(c["options"]["project"] == "" and c["options"]["entity"] == "ml-team" for c in wandb)  # type: ignore[index]
    assert all(c["options"]["skip_online"] is True for c in wandb)  # type: ignore[index]
    # Nothing local was deleted: Neptune got a copy (its sync deletes what it uploads).
    assert len(list(offline_root.rglob("run__*"))) == 2
    assert "uploaded" in done.stdout and "https://wandb.example/ml/fraud/runs/" in done.stdout
    # The record of uploads: a second sync uploads nothing and says so.
    record = json.loads((offline_root / RECORD_FILE).read_text(encoding="utf-8"))
    assert len(record) == 6
    again = _sync(offline_root, recording, *backends)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(_recorded(recording)) == 6
    assert again.stdout.count("uploaded before") == 6
    # No key in anything printed.
    for text in (done.stdout, done.stderr, again.stdout):
        assert WANDB_KEY not in text and COMET_KEY not in text and NEPTUNE_TOKEN not in text


def test_a_dry_run_lists_exactly_the_runs_that_exist_and_uploads_nothing(offline_root: Path, tmp_path: Path) -> None:
    recording = tmp_path / "calls.jsonl"
    done = _sync(offline_root, recording, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _recorded(recording) == []
    assert done.stdout.count("to upload") == 6
    for folder in offline_root.rglob("offline-run-*"):
        assert folder.name in done.stdout
    assert not (offline_root / RECORD_FILE).exists()


NO_KEYS = """
import socket, sys
attempts = []
def audit(event, args):
    if event == "socket.connect":
        attempts.append(args)
sys.addaudithook(audit)
from flyte_ctx_tracking._sync import main
status = main(["sync", sys.argv[1]])
print("CONNECT ATTEMPTS", len(attempts))
raise SystemExit(status)
"""


def test_without_a_key_each_backend_says_so_once_and_nothing_reaches_the_network(
    offline_root: Path, tmp_path: Path
) -> None:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WANDB_API_KEY", "COMET_API_KEY", "NEPTUNE_API_TOKEN", "MLFLOW_TRACKING_URI")
    }
    environment.update({"HOME": str(tmp_path / "home"), "COLUMNS": "200"})
    (tmp_path / "home").mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_KEYS), str(offline_root)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=HARD_LIMIT,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "CONNECT ATTEMPTS 0" in output
    for backend, variable in (
        ("Weights & Biases", "WANDB_API_KEY"),
        ("Comet", "COMET_API_KEY"),
        ("Neptune", "NEPTUNE_API_TOKEN"),
    ):
        assert output.count(f"{backend}: no ") == 1, output
        assert variable in output
    assert output.count("no key") == 6
