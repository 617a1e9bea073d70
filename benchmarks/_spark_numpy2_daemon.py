"""Spark's Python daemon, after the numpy-2 step: only so that whylogs' own Spark call, the
reference in ``bench_whylogs_spark.py``, can run in the executors at all on numpy 2.

Spark forks every Python worker from this daemon (``spark.python.daemon.module``), so the alias the
step restores is there in each worker before whylogs is imported. The session does not need it: the
function it sends to the executors runs the step itself.
"""

from pyspark import daemon

from flyte_ctx_tracking.sessions.whylogs._compat import ensure_numpy2_compat

ensure_numpy2_compat()

if __name__ == "__main__":
    daemon.manager()
