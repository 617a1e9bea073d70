"""Demo part: a Comet experiment around a block of a task, offline, and what its archive holds."""

from __future__ import annotations

import comet_ml
from flytekit import task

from flyte_ctx_tracking import comet_session, current_run
from flyte_ctx_tracking.sessions.comet import CometSession


@task(enable_deck=True)
def comet_part() -> str:
    """Log a few steps to a Comet experiment, offline; the deck names its archive and upload command."""
    with comet_session(project_name="flyte-ctx-demo", tags=["demo"], mode="offline") as experiment:
        for step, loss in enumerate([0.9, 0.5, 0.3], start=1):
            experiment.log_metric("loss", loss, step=step)
        comet_ml.get_running_experiment().log_parameter("lr", 3e-4)  # Comet's own accessor works too
        assert current_run("comet") is experiment
        key = experiment.get_key()
    archive = CometSession.archive_path(experiment)
    return "\n".join(
        [
            f"comet: experiment {key} (project flyte-ctx-demo) logged 3 losses and lr, then ended",
            f"  offline archive: {archive}",
            f"  upload it with: comet upload {archive}",
        ]
    )
