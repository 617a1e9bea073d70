"""A block that is running when the process receives SIGTERM (a pod being evicted).

Logs one value, says READY, then waits (bounded) for the signal the test sends.
"""

from __future__ import annotations

import sys
import time

backend = sys.argv[1]

from flyte_ctx_tracking import comet_session, mlflow_session, neptune_session, wandb_session, whylogs_profile  # noqa: E402

if backend == "wandb":
    session = wandb_session(project="evicted", mode="offline")
elif backend == "comet":
    session = comet_session(project_name="evicted", mode="offline")
elif backend == "neptune":
    session = neptune_session(project="ml/evicted", mode="offline")
elif backend == "mlflow":
    session = mlflow_session("evicted")
else:
    session = whylogs_profile("evicted")

with session as run:
    if backend == "wandb":
        run.log({"loss": 0.5})
    elif backend == "comet":
        run.log_metric("loss", 0.5)
    elif backend == "neptune":
        run["loss"].append(0.5)
    elif backend == "mlflow":
        import mlflow

        mlflow.log_metric("loss", 0.5)
    else:
        run.log({"loss": 0.5, "step": 1})
    print("READY", flush=True)
    for _ in range(600):  # at most a minute: the test sends SIGTERM long before
        time.sleep(0.1)
print("NOT TERMINATED", flush=True)
