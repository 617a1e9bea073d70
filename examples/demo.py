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

from flytekit import workflow
from parts.context import context_part

from flyte_ctx_tracking import TrackingWarning, tracking_root


class _DeckPaths(logging.Handler):
    """Collects the deck files flytekit reports writing during local runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.paths: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "flyte deck html to file://" in message:
            self.paths.append(message.split("file://", 1)[1])


@workflow
def demo() -> str:
    """The parts, one task each."""
    return context_part()


def main() -> None:
    os.environ.setdefault("FLYTE_CTX_TRACKING_MODE", "offline")  # a demo never reaches out
    decks = _DeckPaths()
    flytekit_logger = logging.getLogger("flytekit")
    for handler in flytekit_logger.handlers:  # keep flytekit's console quiet, only collect deck paths
        handler.setLevel(logging.WARNING)
    flytekit_logger.addHandler(decks)
    flytekit_logger.setLevel(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrackingWarning)
        report = demo()
    print("== what the tasks reported ==")
    print(report)
    for warning in caught:
        if issubclass(warning.category, TrackingWarning):
            print(f"[tracking] {warning.message}")
    print("\n== where things went ==")
    print(f"local tracking data: {tracking_root()}")
    for path in decks.paths:
        print(f"deck: {path}")


if __name__ == "__main__":
    main()
