"""One tracker's block against a server given on the command line, as a user's script would run it.

Prints one JSON line: whether the block ran, the handle it got, the warnings (with the file they
point at), and the TrackingError raised, if any. Run by tests/test_online_failures.py in a
subprocess with a hard time limit.

With a fourth argument ``pause`` (MLflow only), the block logs once, prints ``READY``, waits for a
line on stdin (the test stops the server meanwhile), then logs more through MLflow's fluent API.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import warnings

backend, server, on_error = sys.argv[1:4]
pause = sys.argv[4:5] == ["pause"]
key = os.environ["SCENARIO_KEY"]
os.environ.setdefault("FLYTE_CTX_TRACKING_ONLINE_TIMEOUT", "3")

from flyte_ctx_tracking import TrackingError, comet_session, mlflow_session, neptune_session, wandb_session  # noqa: E402

if backend == "mlflow":
    session = mlflow_session("loopback", tracking_uri=server, secret=lambda: key, on_error=on_error)
elif backend == "wandb":
    session = wandb_session(project="loopback", secret=lambda: key, api_host=server, on_error=on_error)
elif backend == "comet":
    os.environ["COMET_URL_OVERRIDE"] = f"{server}/clientlib/"
    session = comet_session(project_name="loopback", workspace="ml", secret=lambda: key, on_error=on_error)
else:
    token = base64.b64encode(json.dumps({"api_address": server, "api_url": server, "api_key": key}).encode()).decode()
    session = neptune_session(project="ml/loopback", secret=lambda: token, on_error=on_error)

result: dict[str, object] = {"ran": False, "handle": None, "raised": None}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        with session as run:
            result["ran"] = True
            result["handle"] = type(run).__name__
            if backend == "mlflow":
                import mlflow

                result["run_id"] = run.info.run_id
                mlflow.log_metric("loss", 0.25, step=0)
                if pause:
                    mlflow.log_param("lr", 0.01)
                    print("READY", flush=True)
                    sys.stdin.readline()  # the test stopped the server
                    for step in (1, 2):
                        mlflow.log_metric("loss", 0.25 / (step + 1), step=step)
                    mlflow.log_param("batch", 32)
                    mlflow.set_tag("phase", "after")
                    result["active_run"] = mlflow.active_run().info.run_id
                    result["block_done"] = True
            elif backend == "wandb":
                run.log({"loss": 0.25})
            elif backend == "comet":
                run.log_metric("loss", 0.25)
            else:
                run["loss"].append(0.25)
    except TrackingError as error:
        chain = []
        current: BaseException | None = error
        while current is not None and len(chain) < 10:
            chain.append(f"{type(current).__name__}: {current}")
            current = current.__cause__ or current.__context__
        result["raised"] = "\n".join(chain)
result["warnings"] = [
    {"category": w.category.__name__, "message": str(w.message), "filename": w.filename} for w in caught
]
print("RESULT " + json.dumps(result), flush=True)
