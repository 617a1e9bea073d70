"""A torch-elastic-like job: one process per rank, Comet and Neptune sessions in every run mode and scope.

Usage: ``ranked_sessions.py OUT_DIR NODES RANKS_PER_NODE``, in a Flyte pod's environment
(``FLYTE_INTERNAL_EXECUTION_ID``...) set by the test. Like torch elastic's agent, this process starts
one worker per rank, all together, each with the elastic variables (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``) and its node's pod name as ``HOSTNAME``. The
workers are forked after the clients are imported, so that the import is paid once; each is a
process of its own (own pid, environment and clients' state) from there on.

Each worker opens one session after another, as a training script would, logs a metric named after
its rank, and writes what it saw (keys, run ids, warnings) to ``OUT_DIR/rank<N>.json``. Everything
runs offline with the real clients; the test reads back what they wrote.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import comet_ml  # noqa: F401  (imported once, before the workers are forked)
import neptune  # noqa: F401

from flyte_ctx_tracking import TrackingWarning, comet_session, neptune_session, tracking_defaults
from flyte_ctx_tracking._context import execution_context
from flyte_ctx_tracking._session import OpenPlan

COMET = [("shared", "global"), ("shared", "worker"), ("new", "worker"), ("new", "rank")]
NEPTUNE = [("new", "worker"), ("new", "rank"), ("shared", "global")]
FAILING_RANK = 3  # its part of the shared experiment fails


def worker(rank: int) -> dict[str, Any]:
    """One rank's sessions, one after another."""
    result: dict[str, Any] = {"comet": {}, "neptune": {}, "neptune_online": {}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The workspace and tags come from the workflow's defaults; the session's own project wins over theirs.
        with tracking_defaults(project="not-this-one", entity="ml-team", tags=["job"]):
            for run_mode, scope in COMET:
                project = f"{run_mode}-{scope}"
                session = comet_session(project, mode="offline", run_mode=run_mode, rank_scope=scope, tags=["mine"])
                try:
                    with session as experiment:
                        if experiment is not None:  # the ranks that open no run of their own get None
                            experiment.log_metric(f"rank{rank}", rank)
                        result["comet"][project] = experiment.get_key() if experiment is not None else None
                        if project == "shared-global" and rank == FAILING_RANK:
                            raise ValueError(f"rank {rank} diverged")
                except ValueError:
                    pass
        with tracking_defaults(tags=["job"]):
            for run_mode, scope in NEPTUNE:
                name = f"{run_mode}-{scope}"
                with neptune_session(
                    mode="offline", run_mode=run_mode, rank_scope=scope, name=name, tags="mine"
                ) as run:
                    if run is not None:
                        run[f"metrics/rank{rank}"].append(rank)
                    result["neptune"][name] = run._custom_run_id if run is not None else None
        # A workflow's default run mode Neptune does not have: a new run, and one warning.
        with tracking_defaults(run_mode="nested", rank_scope="rank"):
            with neptune_session(mode="offline", name="default-nested") as run:
                run["metrics/nested"].append(rank)
    result["warnings"] = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    # Online, a shared Neptune run is joined by its custom_run_id on Neptune's server, which cannot run
    # here: the id each rank would open with, as the session decides it when it opens online.
    context = execution_context()
    for scope in ("global", "worker"):
        session = neptune_session(project="ml-team/fraud", run_mode="shared", rank_scope=scope)
        sharing, run_id = session._decide_sharing(context, "online", None)
        plan = OpenPlan("online", context, Path("."), run_id, context.group, sharing=sharing)
        result["neptune_online"][scope] = {"opens": sharing.opens, "custom_run_id": session._custom_run_id(plan)}
    return result


def main() -> int:
    out, nodes, per_node = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    execution = os.environ["FLYTE_INTERNAL_EXECUTION_ID"]
    children = []
    for rank in range(nodes * per_node):
        pid = os.fork()
        if pid:
            children.append(pid)
            continue
        code = 1
        try:
            node = rank // per_node
            os.environ.update(
                {
                    "RANK": str(rank),
                    "LOCAL_RANK": str(rank % per_node),
                    "GROUP_RANK": str(node),
                    "WORLD_SIZE": str(nodes * per_node),
                    "LOCAL_WORLD_SIZE": str(per_node),
                    "HOSTNAME": f"{execution}-n0-0-worker-{node}",  # a training operator's replica pod
                }
            )
            (out / f"rank{rank}.json").write_text(json.dumps(worker(rank)), encoding="utf-8")
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # a forked worker never runs its parent's exit handlers
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
