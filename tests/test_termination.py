"""SIGTERM (Kubernetes' abort, eviction, preemption) while a block runs: every open run is closed as
failed/terminated with what was logged before the signal, then the process dies of the signal as it
would have without the library. Ctrl-C stays KeyboardInterrupt, and a script's handlers are as they were."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.comet_archive import archives
from tests.neptune_oplog import only_run
from tests.wandb_records import find_runs

SCENARIO = Path(__file__).parent / "scenarios" / "terminated_block.py"
LIMIT = 120  # seconds for the whole scenario: a hang fails the test instead of the suite


def _terminate_inside_a_block(backend: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, str(SCENARIO), backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # bounded: the scenario prints READY, or ends within its own limit
            if line.startswith("READY"):
                break
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=LIMIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("backend", ["wandb", "comet", "neptune", "mlflow", "whylogs"])
def test_sigterm_inside_a_block_closes_the_run_as_terminated_and_keeps_the_data(
    backend: str, tmp_path: Path, _isolated_tracking: Path
) -> None:
    done = _terminate_inside_a_block(backend, tmp_path)
    assert done.returncode == -signal.SIGTERM, done.stderr[-3000:]  # died of the signal, as without us
    assert "NOT TERMINATED" not in done.stdout
    if backend == "wandb":
        (run,) = find_runs(_isolated_tracking)
        assert run.exit_code == 128 + signal.SIGTERM
        assert [row["loss"] for row in run.history if "loss" in row] == [0.5]
    elif backend == "comet":
        (archive,) = archives(_isolated_tracking / "comet")
        assert archive.metrics("loss") == [(None, 0.5)]
        assert archive.others["flyte/status"] == "terminated"
    elif backend == "neptune":
        run = only_run(_isolated_tracking)
        assert run.failed and run.series("loss") == [0.5]
        assert "Terminated" in run.value("flyte/error/type")
    elif backend == "mlflow":
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{_isolated_tracking / 'mlflow' / 'mlflow.db'}")
        (experiment,) = [e for e in client.search_experiments() if e.name == "evicted"]
        (recorded,) = client.search_runs([experiment.experiment_id])
        assert recorded.info.status == "KILLED"
        assert recorded.data.metrics == {"loss": 0.5}
        assert "Terminated" in recorded.data.tags["flyte.error.type"]
    else:
        from flyte_ctx_tracking.sessions.whylogs._compat import import_whylogs

        why = import_whylogs()
        (saved,) = (_isolated_tracking / "whylogs").glob("evicted*.bin")
        view = why.read(str(saved)).view()
        assert view.get_column("loss").get_metric("counts").n.value == 1


def test_a_script_keeps_its_signal_handlers_and_ctrl_c_stays_keyboard_interrupt(tmp_path: Path) -> None:
    code = """
import os, signal
from flyte_ctx_tracking import whylogs_profile, wandb_session
before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
with whylogs_profile("script") as profile:
    profile.log({"x": 1})
with wandb_session(project="script", mode="offline") as run:
    run.log({"x": 1})
assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before, before
try:
    os.kill(os.getpid(), signal.SIGINT)
    signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None
    for _ in range(100):
        pass
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "WANDB_SILENT": "true"},
        timeout=LIMIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "KeyboardInterrupt"
