"""Comet benchmarks: what a session costs on top of comet_ml itself, and against flytekitplugins-comet-ml.

Run: .venv/bin/python benchmarks/bench_comet.py

1. `with comet_session(mode="offline")` enter+exit against bare `comet_ml.start(online=False)` +
   `end()`, same process, interleaved rounds, median of each; and where the time of `end()` goes:
   bare with comet_ml's defaults against bare with the settings the session uses.
2. A local `@task` decorated with our `comet_ml_login` against the same task decorated with
   flytekitplugins-comet-ml's `comet_ml_login` (whose task body has to start and end the
   experiment itself: the plugin only logs in), both offline; and
3. the import cost of each decorator after `import flytekit`.
   2 and 3 need the plugin, which is installed only into `benchmarks/.venv-comet/`:
       python3 -m venv benchmarks/.venv-comet
       benchmarks/.venv-comet/bin/pip install flytekitplugins-comet-ml "flytekit==1.16.*" "comet_ml==3.58.*" -e .
   Without that venv they are skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _util import import_increment, run_in_venv  # noqa: E402 - after the sys.path lines above

PLUGIN_VENV_PYTHON = HERE / ".venv-comet" / "bin" / "python"
ROUNDS = 5
# comet_ml's offline writer polls its queue once a second, so an end() is occasionally much faster than
# usual; medians describe a typical experiment, a best-of would report the lucky one.

# Runs inside the plugin venv: the same local task under each decorator, interleaved.
TASK_BENCH = """
import json, logging, os, statistics, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
root = tempfile.mkdtemp()
os.environ["FLYTE_CTX_TRACKING_DIR"] = root
import comet_ml
logging.getLogger("comet_ml").setLevel(logging.ERROR)
from flytekit import task
from flytekitplugins.comet_ml import comet_ml_login as plugin_login
from flyte_ctx_tracking import comet_ml_login, current_run

@task
@comet_ml_login(project_name="bench", workspace="ws", mode="offline")
def ours(x: int) -> int:
    current_run("comet").log_metric("x", x)
    return x + 1

@task
@plugin_login(project_name="bench", workspace="ws", secret=lambda: "unused-locally")
def plugin(x: int) -> int:
    experiment = comet_ml.start(online=False, experiment_config=comet_ml.ExperimentConfig(offline_directory=root))
    experiment.log_metric("x", x)
    experiment.end()
    return x + 1

def timed(fn):
    start = time.perf_counter()
    fn(x=1)
    return time.perf_counter() - start

ours(x=1); plugin(x=1)  # warm up: comet_ml imported, flytekit's local machinery ready
samples = {"ours": [], "plugin": []}
for _ in range(int(sys.argv[1])):
    samples["ours"].append(timed(ours))
    samples["plugin"].append(timed(plugin))
print(json.dumps({k: statistics.median(v) for k, v in samples.items()}))
"""


def bench_session_vs_bare() -> dict[str, float]:
    """Median seconds of: our session enter+exit (and its exit alone), bare start+end with comet_ml's
    defaults (and its end alone), and bare start+end with the session's settings."""
    import comet_ml

    from flyte_ctx_tracking import comet_session

    root = Path(tempfile.mkdtemp(prefix="bench-comet-"))
    os.environ["FLYTE_CTX_TRACKING_DIR"] = str(root / "ours")
    session_settings = {
        "log_code": False,
        "parse_args": False,
        "log_env_cpu": False,
        "log_env_network": False,
        "log_env_disk": False,
    }

    def ours() -> tuple[float, float]:
        start = time.perf_counter()
        session = comet_session(project_name="bench", mode="offline")
        with session as experiment:
            experiment.log_metric("x", 1)
            exiting = time.perf_counter()
        end = time.perf_counter()
        return end - start, end - exiting

    def bare(**settings: bool) -> tuple[float, float]:
        start = time.perf_counter()
        config = comet_ml.ExperimentConfig(offline_directory=str(root / "bare"), **settings)  # type: ignore[arg-type]
        experiment = comet_ml.start(project_name="bench", online=False, experiment_config=config)
        experiment.log_metric("x", 1)
        ending = time.perf_counter()
        experiment.end()
        end = time.perf_counter()
        return end - start, end - ending

    ours(), bare()  # warm up
    samples: dict[str, list[tuple[float, float]]] = {"ours": [], "bare": [], "bare_same_settings": []}
    for _ in range(ROUNDS):
        samples["ours"].append(ours())
        samples["bare"].append(bare())
        samples["bare_same_settings"].append(bare(**session_settings))
    shutil.rmtree(root, ignore_errors=True)
    return {
        "ours": median(s[0] for s in samples["ours"]),
        "ours_exit": median(s[1] for s in samples["ours"]),
        "bare": median(s[0] for s in samples["bare"]),
        "bare_end": median(s[1] for s in samples["bare"]),
        "bare_same": median(s[0] for s in samples["bare_same_settings"]),
        "bare_same_end": median(s[1] for s in samples["bare_same_settings"]),
    }


def main() -> None:
    warnings.simplefilter("ignore")
    logging.getLogger("comet_ml").setLevel(logging.ERROR)
    r = bench_session_vs_bare()
    print(
        f"bare start+end, comet_ml defaults:          {r['bare'] * 1000:8.1f} ms   "
        f"(end() alone {r['bare_end'] * 1000:.1f} ms)"
    )
    print(
        f"bare start+end, the session's settings:     {r['bare_same'] * 1000:8.1f} ms   "
        f"(end() alone {r['bare_same_end'] * 1000:.1f} ms)"
    )
    print(
        f"comet_session enter+exit (offline):         {r['ours'] * 1000:8.1f} ms   "
        f"(exit alone {r['ours_exit'] * 1000:.1f} ms)"
    )
    print(f"  ratio to bare with the same settings:     {r['ours'] / r['bare_same']:.3f}x")
    print(f"  ratio to bare with comet_ml's defaults:   {r['ours'] / r['bare']:.3f}x")

    if not PLUGIN_VENV_PYTHON.exists():
        print(f"(no {PLUGIN_VENV_PYTHON.parent.parent}: skipping the flytekitplugins-comet-ml comparisons)")
        return
    python = str(PLUGIN_VENV_PYTHON)
    # The plugin's comet_ml.login reads (and may write) ~/: a throwaway HOME.
    tasks = run_in_venv(PLUGIN_VENV_PYTHON, TASK_BENCH, str(ROUNDS), own_home=True)
    print(f"local @task with our comet_ml_login:        {tasks['ours'] * 1000:8.1f} ms")
    print(
        f"local @task with the plugin's decorator:    {tasks['plugin'] * 1000:8.1f} ms   "
        f"ratio {tasks['ours'] / tasks['plugin']:.3f}x  (its body starts and ends the experiment)"
    )

    flytekit, plugin = import_increment("flytekit", "flytekitplugins.comet_ml", python=python, repeat=5)
    _, ours_import = import_increment("flytekit", "flyte_ctx_tracking.sessions.comet", python=python, repeat=5)
    print(f"import flytekit:                            {flytekit * 1000:8.1f} ms")
    print(f"then import flytekitplugins.comet_ml:       {plugin * 1000:8.1f} ms   (imports comet_ml)")
    print(f"then import our comet module:               {ours_import * 1000:8.1f} ms   (comet_ml loads on first run)")


if __name__ == "__main__":
    main()
