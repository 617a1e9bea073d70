"""`make demo` keeps working: the example workflow runs offline and says where everything went."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO


def test_the_demo_runs_offline_and_reports_every_integration(tmp_path: Path) -> None:
    env = {**os.environ, "FLYTE_CTX_TRACKING_DIR": str(tmp_path / "demo")}
    env.pop("FLYTE_CTX_TRACKING_MODE", None)  # the demo sets offline itself
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "running in a local run" in out
    assert "wandb sync" in out
    assert "comet upload" in out
    assert "neptune sync" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert "profiled section 'join'" in out
    assert "whylogs: profile 'transactions'" in out
    for part in (
        "context_part",
        "wandb_part",
        "comet_part",
        "neptune_part",
        "mlflow_part",
        "memray_part",
        "whylogs_part",
    ):
        assert f"deck of {part}: " in out
    written = {path.name for path in (tmp_path / "demo").iterdir()}
    assert {"wandb", "comet", "neptune", "mlflow", "memray", "whylogs"} <= written
    assert not (tmp_path / "wandb").exists()  # nothing in the current directory
