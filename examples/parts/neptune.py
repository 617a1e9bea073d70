"""Demo part: a Neptune run around a training loop, offline, visible through flytekit's context too."""

from __future__ import annotations

import flytekit
from flytekit import task

from flyte_ctx_tracking import current_run, neptune_session, tracking_root


@task(enable_deck=True)
def neptune_part() -> str:
    """Log parameters and a loss series into a Neptune run; report where the offline run went."""
    with neptune_session(project="ml-team/fraud", tags=["flyte", "demo"], name="demo") as run:
        run["params/lr"] = 3e-4
        for epoch in range(5):
            run["metrics/loss"].append(1.0 / (epoch + 1))
        # The same run, the way flytekitplugins-neptune users reach it:
        same = run is not None and flytekit.current_context().neptune_run is run is current_run("neptune")
    offline = tracking_root() / "neptune" / ".neptune" / "offline"
    lines = [
        f"neptune: logged params/lr and 5 values of metrics/loss (run visible in flytekit's context: {same})",
        f"  offline runs: {offline} ({len(list(offline.glob('run__*')))} so far)",
        f"  upload them with: neptune sync --path {offline.parent.parent} --project ml-team/fraud --offline-only",
    ]
    return "\n".join(lines)
