"""Neptune benchmarks: what a session costs on top of neptune itself, and against flytekitplugins-neptune.

Run: .venv/bin/python benchmarks/bench_neptune.py

1. `with neptune_session(mode="offline")` enter+exit against bare `neptune.init_run(mode="offline")`
   + `stop()`, same process, interleaved rounds, best of each. Goal: <= 1.05x.
2. A local `@task` decorated with our `neptune_init_run` against the same task decorated with
   flytekitplugins-neptune's `neptune_init_run` (both offline), and
3. the import cost of each decorator after `import flytekit`.
   2 and 3 need the plugin, which is installed only into `benchmarks/.venv-neptune/`:
       python3 -m venv benchmarks/.venv-neptune
       benchmarks/.venv-neptune/bin/pip install flytekitplugins-neptune "flytekit==1.16.*" "neptune==1.14.*" -e .
   Without that venv they are skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _util import import_increment, run_in_venv

HERE = Path(__file__).resolve().parent

PLUGIN_VENV_PYTHON = HERE / ".venv-neptune" / "bin" / "python"
ROUNDS = 25

# Runs inside the plugin venv: the same local task under each decorator, interleaved.
TASK_BENCH = """
import json, os, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
os.environ["FLYTE_CTX_TRACKING_DIR"] = tempfile.mkdtemp()
os.environ["NEPTUNE_DATA_DIRECTORY"] = os.path.join(tempfile.mkdtemp(), ".neptune")
from flytekit import task
from flytekitplugins.neptune import neptune_init_run as plugin_init_run
from flyte_ctx_tracking import neptune_init_run

@task
@neptune_init_run(project="ws/bench", mode="offline")
def ours(x: int) -> int:
    return x + 1

@task
@plugin_init_run(project="ws/bench", secret=lambda: "unused-locally", mode="offline")
def plugin(x: int) -> int:
    return x + 1

def timed(fn):
    start = time.perf_counter()
    fn(x=1)
    return time.perf_counter() - start

ours(x=1); plugin(x=1)  # warm up: neptune imported, flytekit's local machinery ready
samples = {"ours": [], "plugin": []}
for _ in range(int(sys.argv[1])):
    samples["ours"].append(timed(ours))
    samples["plugin"].append(timed(plugin))
print(json.dumps({k: min(v) for k, v in samples.items()}))
"""


def bench_session_vs_bare() -> tuple[float, float]:
    """Best seconds of (our session enter+exit, bare init_run+stop), interleaved."""
    import neptune

    from flyte_ctx_tracking import neptune_session

    root = Path(tempfile.mkdtemp(prefix="bench-neptune-"))
    os.environ["FLYTE_CTX_TRACKING_DIR"] = str(root / "ours")
    bare_dir = root / "bare" / ".neptune"

    def ours() -> float:
        start = time.perf_counter()
        with neptune_session(project="ws/bench", mode="offline") as run:
            run["x"] = 1
        return time.perf_counter() - start

    def bare() -> float:
        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(bare_dir)
        start = time.perf_counter()
        run = neptune.init_run(mode="offline")
        run["x"] = 1
        run.stop()
        elapsed = time.perf_counter() - start
        del os.environ["NEPTUNE_DATA_DIRECTORY"]
        return elapsed

    ours(), bare()  # warm up
    samples: dict[str, list[float]] = {"ours": [], "bare": []}
    for _ in range(ROUNDS):
        samples["ours"].append(ours())
        samples["bare"].append(bare())
    shutil.rmtree(root, ignore_errors=True)
    return min(samples["ours"]), min(samples["bare"])


def main() -> None:
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("neptune").setLevel(logging.WARNING)
    ours, bare = bench_session_vs_bare()
    print(f"session enter+exit (offline):             {ours * 1000:8.1f} ms")
    print(f"bare neptune.init_run + stop (offline):   {bare * 1000:8.1f} ms   ratio {ours / bare:.3f}x")

    if not PLUGIN_VENV_PYTHON.exists():
        print(f"(no {PLUGIN_VENV_PYTHON.parent.parent}: skipping the flytekitplugins-neptune comparisons)")
        return
    python = str(PLUGIN_VENV_PYTHON)
    tasks = run_in_venv(PLUGIN_VENV_PYTHON, TASK_BENCH, str(ROUNDS))
    print(f"local @task with our neptune_init_run:    {tasks['ours'] * 1000:8.1f} ms")
    print(
        f"local @task with the plugin's decorator:  {tasks['plugin'] * 1000:8.1f} ms   "
        f"ratio {tasks['ours'] / tasks['plugin']:.3f}x"
    )

    flytekit, plugin = import_increment("flytekit", "flytekitplugins.neptune", python=python, repeat=5)
    _, ours_import = import_increment("flytekit", "flyte_ctx_tracking.sessions.neptune", python=python, repeat=5)
    print(f"import flytekit:                          {flytekit * 1000:8.1f} ms")
    print(f"then import flytekitplugins.neptune:      {plugin * 1000:8.1f} ms")
    print(f"then import our neptune module:           {ours_import * 1000:8.1f} ms   (neptune loads on first run)")


if __name__ == "__main__":
    main()
