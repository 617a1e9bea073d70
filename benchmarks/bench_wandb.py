"""W&B benchmarks: what a session costs on top of wandb itself, and against flytekitplugins-wandb.

Run: .venv/bin/python benchmarks/bench_wandb.py

1. `with wandb_session(mode="offline")` enter+exit against bare `wandb.init(mode="offline")` +
   `run.finish()`, same process, interleaved rounds (ratio: the median of the rounds' ratios).
   Goal: <= 1.05x.
2. A local `@task` decorated with our `wandb_init` against the same task decorated with
   flytekitplugins-wandb's `wandb_init`, both offline (the plugin logs in only in remote runs, so
   locally it just calls `wandb.init`). Goal: never slower. It needs the plugin, which is installed
   only into `benchmarks/.venv-wandb/` (both decorators are timed there, with the same versions):
       python3 -m venv benchmarks/.venv-wandb
       benchmarks/.venv-wandb/bin/pip install flytekitplugins-wandb "flytekit==1.16.*" "wandb==0.31.*" -e .
   Without that venv it is skipped.

Our side does a little more than the bare calls: it resolves the execution context, adds the Flyte
metadata, and waits on close until wandb-core has written the run's transaction log out (bare
`finish()` returns before that, so a `wandb sync` right after it can find an empty file).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _util import run_in_venv

HERE = Path(__file__).resolve().parent
PLUGIN_VENV_PYTHON = HERE / ".venv-wandb" / "bin" / "python"
ROUNDS = 25

# Runs inside the plugin venv: the same local task under each decorator, interleaved.
TASK_BENCH = """
import json, os, statistics, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
os.environ["WANDB_SILENT"] = "true"
os.environ["WANDB_MODE"] = "offline"  # for the plugin, which takes no mode of its own
os.environ["FLYTE_CTX_TRACKING_DIR"] = tempfile.mkdtemp()
plugin_dir = tempfile.mkdtemp()
from flytekit import task
from flytekitplugins.wandb import wandb_init as plugin_wandb_init
from flyte_ctx_tracking import wandb_init

@task
@wandb_init(project="bench", entity="bench", mode="offline")
def ours(x: int) -> int:
    return x + 1

@task
@plugin_wandb_init(project="bench", entity="bench", secret=lambda: "unused-locally", dir=plugin_dir)
def plugin(x: int) -> int:
    return x + 1

def timed(fn):
    start = time.perf_counter()
    fn(x=1)
    return time.perf_counter() - start

ours(x=1); plugin(x=1)  # warm up: wandb imported, its service started, flytekit ready
samples = {"ours": [], "plugin": []}
for _ in range(int(sys.argv[1])):
    samples["ours"].append(timed(ours))
    samples["plugin"].append(timed(plugin))
result = {k: [statistics.median(v), min(v)] for k, v in samples.items()}
result["paired"] = statistics.median(o / p for o, p in zip(samples["ours"], samples["plugin"]))
print(json.dumps(result))
"""


def bench_session_vs_bare() -> dict[str, list[float]]:
    """Seconds per enter+exit of our session and of the bare calls, interleaved rounds.

    Also ``inner``: the part of each session spent inside ``wandb.init`` and ``run.finish`` (timed by
    wrapping them), so that ``ours - inner`` is what our own code costs, free of wandb's noise.
    """
    import wandb
    from wandb.sdk.wandb_run import Run

    from flyte_ctx_tracking import wandb_session

    root = Path(tempfile.mkdtemp(prefix="bench-wandb-"))
    os.environ["FLYTE_CTX_TRACKING_DIR"] = str(root / "ours")
    bare_dir = root / "bare"
    bare_dir.mkdir()
    inner: list[float] = []
    real_init, real_finish = wandb.init, Run.finish

    def timed_init(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_init(*args, **kwargs)
        finally:
            inner[-1] += time.perf_counter() - start

    def timed_finish(self: Any, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        try:
            real_finish(self, *args, **kwargs)
        finally:
            inner[-1] += time.perf_counter() - start

    def ours() -> float:
        inner.append(0.0)
        wandb.init, Run.finish = timed_init, timed_finish  # type: ignore[method-assign]
        try:
            start = time.perf_counter()
            with wandb_session(project="bench", mode="offline") as run:
                run.log({"x": 1})
            return time.perf_counter() - start
        finally:
            wandb.init, Run.finish = real_init, real_finish  # type: ignore[method-assign]

    def bare() -> float:
        start = time.perf_counter()
        run = wandb.init(project="bench", mode="offline", dir=bare_dir)
        run.log({"x": 1})
        run.finish()
        return time.perf_counter() - start

    ours(), bare()  # warm up: wandb's service started
    samples: dict[str, list[float]] = {"ours": [], "bare": []}
    inner.clear()
    for _ in range(ROUNDS):
        samples["ours"].append(ours())
        samples["bare"].append(bare())
    samples["own"] = [total - spent for total, spent in zip(samples["ours"], inner, strict=True)]
    shutil.rmtree(root, ignore_errors=True)
    return samples


def _line(label: str, median: float, best: float, ratio: str = "") -> str:
    return f"{label:<44} median {median * 1000:7.1f} ms   best {best * 1000:7.1f} ms {ratio}"


def main() -> None:
    warnings.simplefilter("ignore")
    os.environ["WANDB_SILENT"] = "true"  # console output costs the same on both sides: leave it out
    samples = bench_session_vs_bare()
    ours_median, bare_median = statistics.median(samples["ours"]), statistics.median(samples["bare"])
    best_ratio = min(samples["ours"]) / min(samples["bare"])
    paired = statistics.median(o / b for o, b in zip(samples["ours"], samples["bare"], strict=True))
    print(_line("wandb_session enter+exit (offline):", ours_median, min(samples["ours"])))
    print(
        _line(
            "bare wandb.init + finish (offline):",
            bare_median,
            min(samples["bare"]),
            f"  ratio {paired:.3f}x (median of rounds), {best_ratio:.3f}x (best)",
        )
    )
    own = statistics.median(samples["own"])
    print(
        f"{'our own code per session:':<44} median {own * 1000:7.2f} ms   "
        f"({own / bare_median:.1%} of the bare calls; the rest is wandb.init + finish)"
    )

    if not PLUGIN_VENV_PYTHON.exists():
        print(f"(no {PLUGIN_VENV_PYTHON.parent.parent}: skipping the flytekitplugins-wandb comparison)")
        return
    result = run_in_venv(PLUGIN_VENV_PYTHON, TASK_BENCH, str(ROUNDS))
    (ours_task, ours_best), (plugin_task, plugin_best) = result["ours"], result["plugin"]
    print(_line("@task + our wandb_init (offline):", ours_task, ours_best))
    print(
        _line(
            "@task + flytekitplugins-wandb (offline):",
            plugin_task,
            plugin_best,
            f"  ratio {result['paired']:.3f}x (median of rounds), {ours_best / plugin_best:.3f}x (best)",
        )
    )


if __name__ == "__main__":
    main()
