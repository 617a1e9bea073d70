"""Demo part: a W&B run around a training loop, offline, with a second run nested inside it."""

from __future__ import annotations

from flytekit import task

from flyte_ctx_tracking import current_run, wandb_session


@task(enable_deck=True)
def wandb_part() -> str:
    """Log a loss curve into one W&B run and an evaluation into another; report where they went."""
    quiet = {"silent": True}  # the demo prints its own summary; W&B's console banner is left out
    with wandb_session(project="fraud", config={"lr": 3e-4}, tags=["demo"], settings=quiet) as train:
        for epoch in range(5):
            train.log({"loss": 1.0 / (epoch + 1)})
        with wandb_session(project="fraud-eval", settings=quiet) as evaluation:  # a second, independent run
            evaluation.log({"auc": 0.93})
            innermost = current_run("wandb") is evaluation
    lines = [f"wandb: run {train.id} (5 losses) and run {evaluation.id} (auc), nested: innermost={innermost}"]
    for run in (train, evaluation):
        lines.append(f"  offline run: {run.sync_dir}")
        lines.append(f"  upload it with: wandb sync {run.sync_dir}")
    return "\n".join(lines)
