"""MLflow: ``mlflow_session`` (a block, a function or a task), ``mlflow_run`` and ``mlflow_autolog`` (task decorators).

``_session`` holds the session and its decorators, ``_fluent`` what makes MLflow's fluent API
(``mlflow.log_metric``, ``mlflow.active_run()``) the block's own, ``_store`` the guard on the
runs our sessions own (per-run credentials, bounded requests, going offline mid-block), ``_shared``
the runs several writers share (a shared run, the execution's parent: found or created by one
writer, their status all of theirs) and ``_sync`` the upload of offline runs. ``mlflow`` itself is
imported only when a run opens.
"""

from ._session import MlflowSession, mlflow_autolog, mlflow_run, mlflow_session

__all__ = ["MlflowSession", "mlflow_autolog", "mlflow_run", "mlflow_session"]
