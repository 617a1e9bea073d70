"""Demo part: an MLflow run with a nested run per fold, offline in a local SQLite store."""

from __future__ import annotations

import mlflow
from flytekit import task

from flyte_ctx_tracking import mlflow_session, tracking_root


@task(enable_deck=True)
def mlflow_part() -> str:
    """Log parameters and a loss curve with MLflow's own API; each fold is a child run."""
    with mlflow_session("fraud", run_name="demo", tags={"team": "risk"}) as run:
        mlflow.log_params({"lr": 3e-4, "folds": 2})
        for epoch in range(5):
            mlflow.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
        for fold in range(2):
            with mlflow_session("fraud", run_name=f"fold-{fold}"):  # nested under "demo"
                mlflow.log_metric("auc", 0.9 + fold / 100)
    store = tracking_root() / "mlflow" / "mlflow.db"
    lines = [
        f"mlflow: run {run.info.run_id[:8]} logged lr, folds and 5 values of loss, with 2 child runs (one per fold)",
        f"  offline store: {store}",
        f"  browse it with: mlflow ui --backend-store-uri sqlite:///{store}",
    ]
    return "\n".join(lines)
