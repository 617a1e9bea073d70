"""`make demo`: a small Flyte workflow run locally, offline, showing the sessions at work.

Nothing here needs an account or a network: every tracker runs offline and says where its data
went and how to upload it. Decks are written by flytekit; the demo prints their paths.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

# Run from anywhere: the parts live next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
# A demo never reaches out: every tracker offline, and no backend's own telemetry (whylogs usage
# stats, comet_ml's and wandb's error reports). Set before the parts import the backends.
os.environ.setdefault("FLYTE_CTX_TRACKING_MODE", "offline")
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")
os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")

from flytekit import workflow
from parts.comet import comet_part
from parts.context import context_part
from parts.memray import memray_part
from parts.mlflow import mlflow_part
from parts.neptune import neptune_part
from parts.wandb import wandb_part
from parts.whylogs import whylogs_part

from flyte_ctx_tracking import TrackingWarning, tracking_root


class _DeckPaths(logging.Handler):
    """Collects the deck files flytekit reports writing during local runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.paths: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "flyte deck html to file://" in message:
            task_name = message.split(" task creates", 1)[0].rsplit(".", 1)[-1]
            self.paths.append(f"{task_name}: {message.split('file://', 1)[1]}")


@workflow
def demo() -> tuple[str, str, str, str, str, str, str]:
    """The parts, one task each."""
    return (
        context_part(),
        wandb_part(),
        comet_part(),
        neptune_part(),
        mlflow_part(),
        memray_part(),
        whylogs_part(),
    )


def main() -> None:
    decks = _DeckPaths()
    flytekit_logger = logging.getLogger("flytekit")
    for handler in flytekit_logger.handlers:  # keep flytekit's console quiet, only collect deck paths
        handler.setLevel(logging.WARNING)
    flytekit_logger.addHandler(decks)
    flytekit_logger.setLevel(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrackingWarning)
        reports = demo()
    print("== what the tasks reported ==")
    for report in reports:
        print(report)
    for warning in caught:
        if issubclass(warning.category, TrackingWarning):
            print(f"[tracking] {warning.message}")
    print("\n== where things went ==")
    print(f"local tracking data: {tracking_root()}")
    for path in decks.paths:
        print(f"deck of {path}")


if __name__ == "__main__":
    main()
