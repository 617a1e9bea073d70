"""MLflow benchmarks: what a session costs on top of MLflow itself, and against flytekitplugins-mlflow.

Run: .venv/bin/python benchmarks/bench_mlflow.py [--no-server] [--sklearn]

1. `with mlflow_session(...)` enter+exit against bare `mlflow.start_run()` + `mlflow.end_run()`, each
   with the same three `mlflow.log_metric` calls, on the same store, same process, interleaved
   rounds (ratio: the median of the rounds' ratios; best of each too):
   a. a given SQLite store: both get the same `sqlite:///...` URI, the bare calls through
      `mlflow.set_tracking_uri` (and `mlflow.set_experiment`, once), the session through
      `tracking_uri=`, which makes it online (its open runs under the online deadline);
   b. the offline default store: `mode="offline"` against the bare calls pointed at the same file,
      `$FLYTE_CTX_TRACKING_DIR/mlflow/mlflow.db`;
   c. a real `mlflow server` on 127.0.0.1 (SQLite backend), over HTTP. It starts on a copy of an
      already migrated store, and still took 24-47 s to answer on a busy 2-core machine;
      `--no-server` skips it.
2. Our `mlflow_autolog` against flytekitplugins-mlflow's `mlflow_autolog` (framework
   `mlflow.sklearn`), each under a local `@task(enable_deck=True)` around the same body (three
   `mlflow.log_metric` calls), on the same SQLite store (`mlflow.set_tracking_uri`), interleaved.
   Decks are on for both, as a user gets them: the plugin renders a plotly figure of the metrics and
   a table of the parameters, ours the run card. Two figures per call: the decorated function alone
   (what each decorator adds, its deck included) and the whole local task (plus flytekit's own
   deck rendering, which lists the installed packages in subprocesses and costs the same for both).
   `--sklearn` adds the plugin's documented usage, a small `LogisticRegression().fit` in the task;
   autologging then logs the model, which takes seconds per call, mostly MLflow's inference of the
   model's pip requirements in a subprocess.

flytekitplugins-mlflow is a dev dependency (see pyproject.toml), so both decorators are timed in
the project's `.venv`, with the same flytekit and mlflow. MLflow's telemetry and its "View run at"
line are off on both sides.
Our session does more than the bare calls: it looks the experiment up by name, adds the Flyte tags,
holds the tracking URI and the active run for the block, and guards the run's store calls.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlflow
import mlflow.sklearn
from flytekit import task
from flytekitplugins.mlflow import mlflow_autolog as plugin_autolog
from mlflow import MlflowClient

from flyte_ctx_tracking import mlflow_autolog, mlflow_session

MLFLOW = Path(sys.executable).parent / "mlflow"  # the CLI of the venv running this script
SESSION_ROUNDS = 25
SERVER_ROUNDS = 10
TASK_ROUNDS = 8
SKLEARN_ROUNDS = 2
SERVER_START_DEADLINE = 150.0
METRICS = 3


def _log_metrics() -> None:
    for step in range(METRICS):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)


def _interleaved(
    first: Callable[[], float], second: Callable[[], float], rounds: int
) -> tuple[list[float], list[float]]:
    first(), second()  # warm up
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(first())
        b.append(second())
    return a, b


def _line(label: str, median: float, best: float, ratio: str = "") -> str:
    return f"{label:<52} median {median * 1000:8.1f} ms   best {best * 1000:8.1f} ms {ratio}"


def _report(ours_label: str, ours: list[float], ref_label: str, ref: list[float]) -> None:
    paired = statistics.median(o / r for o, r in zip(ours, ref, strict=True))
    difference = statistics.median(o - r for o, r in zip(ours, ref, strict=True))
    best = min(ours) / min(ref)
    print(_line(ours_label, statistics.median(ours), min(ours)))
    print(
        _line(
            ref_label,
            statistics.median(ref),
            min(ref),
            f"  ratio {paired:.3f}x (median of rounds), {best:.3f}x (best); "
            f"difference {difference * 1000:+.1f} ms (median of rounds)",
        )
    )


# ------------------------------------------------------------------ 1. session vs bare calls


def session_vs_bare(uri: str | None, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per (our session, bare start_run + end_run), each with three metrics, on one store.

    ``uri`` None: the session offline on its default store, the bare calls on that same file.
    """

    def ours() -> float:
        start = time.perf_counter()
        if uri is None:
            with mlflow_session("bench", mode="offline"):
                _log_metrics()
        else:
            with mlflow_session("bench", tracking_uri=uri):
                _log_metrics()
        return time.perf_counter() - start

    def bare() -> float:
        start = time.perf_counter()
        with mlflow.start_run():
            _log_metrics()
        return time.perf_counter() - start

    ours()  # creates the experiment (and, offline, the store) as a session would
    if uri is None:
        store = Path(os.environ["FLYTE_CTX_TRACKING_DIR"]) / "mlflow" / "mlflow.db"
        if not store.exists():
            raise SystemExit(f"the offline session did not write {store}")
        mlflow.set_tracking_uri(f"sqlite:///{store}")
    else:
        mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    try:
        return _interleaved(ours, bare, rounds)
    finally:
        mlflow.set_tracking_uri("")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(workdir: Path, template: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """A local ``mlflow server`` on a copy of an already migrated, empty SQLite store (creating
    MLflow's tables is most of a cold start); None when it is not up within the deadline."""
    store = workdir / "server.db"
    shutil.copyfile(template, store)
    port = _free_port()
    command = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{store}"]
    command += ["--default-artifact-root", str(workdir / "server-artifacts")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 (the server's for its lifetime)
    server = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_DEADLINE
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.25)
    stop_server(server)
    return None


def stop_server(server: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


# ------------------------------------------------------------------ 2. the decorators


# Module-level, as flytekit wants tasks: both decorators over the same body, which ``decorators`` sets,
# and a thin wrapper between ``@task`` and the decorator that times the decorated function in the task.
_BODY: list[Callable[[], object]] = []
_INNER: list[float] = []


def _timed(function: Callable[[], int]) -> Callable[[], int]:
    @functools.wraps(function)
    def wrapper() -> int:
        start = time.perf_counter()
        try:
            return function()
        finally:
            _INNER.append(time.perf_counter() - start)

    return wrapper


@task(enable_deck=True)
@_timed
@mlflow_autolog(framework=mlflow.sklearn, experiment_name="bench")
def ours_task() -> int:
    _BODY[0]()
    return 1


@task(enable_deck=True)
@_timed
@plugin_autolog(framework=mlflow.sklearn, experiment_name="bench")
def plugin_task() -> int:
    _BODY[0]()
    return 1


def decorators(body: Callable[[], object], rounds: int) -> dict[str, list[float]]:
    """Per call: the decorated function and the whole local task, for ours and the plugin's."""

    def call(task_function: Callable[[], int]) -> float:
        start = time.perf_counter()
        task_function()
        return time.perf_counter() - start

    _BODY[:] = [body]
    samples: dict[str, list[float]] = {"ours task": [], "plugin task": [], "ours": [], "plugin": []}
    call(ours_task), call(plugin_task)  # warm up: autologging's first patching, the store, flytekit
    for _ in range(rounds):
        _INNER.clear()
        samples["ours task"].append(call(ours_task))
        samples["ours"].append(_INNER.pop())
        samples["plugin task"].append(call(plugin_task))
        samples["plugin"].append(_INNER.pop())
    return samples


def _fit() -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4))
    LogisticRegression(max_iter=200).fit(features, (features[:, 0] > 0).astype(int))


def _report_decorators(samples: dict[str, list[float]], what: str) -> None:
    _report(
        f"our mlflow_autolog, decorated fn ({what}):",
        samples["ours"],
        f"flytekitplugins-mlflow, decorated fn ({what}):",
        samples["plugin"],
    )
    _report(
        f"@task + our mlflow_autolog ({what}):",
        samples["ours task"],
        f"@task + flytekitplugins-mlflow ({what}):",
        samples["plugin task"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--no-server", action="store_true", help="skip the local mlflow server comparison")
    parser.add_argument("--sklearn", action="store_true", help="also time the decorators around a sklearn fit")
    options = parser.parse_args()

    warnings.simplefilter("ignore")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no usage reports from either side
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # console output: the same on both sides
    root = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    os.environ["FLYTE_CTX_TRACKING_DIR"] = str(root / "ours")
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    server = None
    try:
        template = root / "empty.db"
        started = time.perf_counter()
        MlflowClient(f"sqlite:///{template}").search_experiments()  # MLflow creates its tables
        print(f"(creating an empty SQLite store took {time.perf_counter() - started:.1f} s; not timed below)")

        # The experiments of the SQLite stores get an artifact location in the temporary folder:
        # MLflow's default for a SQLite store is ./mlruns, in the working directory.
        shared = root / "shared.db"
        shutil.copyfile(template, shared)
        MlflowClient(f"sqlite:///{shared}").create_experiment("bench", artifact_location=(root / "a1").as_uri())
        ours, bare = session_vs_bare(f"sqlite:///{shared}", SESSION_ROUNDS)
        _report("mlflow_session enter+exit (same sqlite:/// URI):", ours, "bare start_run + end_run (same URI):", bare)
        ours, bare = session_vs_bare(None, SESSION_ROUNDS)
        _report('mlflow_session(mode="offline") enter+exit:', ours, "bare start_run + end_run (same store file):", bare)

        if options.no_server:
            print("(--no-server: skipping the local mlflow server comparison)")
        else:
            started = time.perf_counter()
            server_and_url = start_server(root, template)
            if server_and_url is None:
                print(f"(the mlflow server did not answer within {SERVER_START_DEADLINE:.0f} s: skipped)")
            else:
                server, url = server_and_url
                print(f"(the local mlflow server answered after {time.perf_counter() - started:.1f} s)")
                ours, bare = session_vs_bare(url, SERVER_ROUNDS)
                stop_server(server)
                server = None
                _report(
                    "mlflow_session enter+exit (local server, HTTP):",
                    ours,
                    "bare start_run + end_run (same server):",
                    bare,
                )

        task_store = root / "tasks.db"
        shutil.copyfile(template, task_store)
        MlflowClient(f"sqlite:///{task_store}").create_experiment("bench", artifact_location=(root / "a2").as_uri())
        mlflow.set_tracking_uri(f"sqlite:///{task_store}")
        _report_decorators(decorators(_log_metrics, TASK_ROUNDS), "3 metrics")
        if options.sklearn:
            _report_decorators(decorators(_fit, SKLEARN_ROUNDS), "sklearn fit")
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
