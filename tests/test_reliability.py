"""What production brings, one failure at a time: a server that never answers (per session deadline),
garbage in the pod's identity, keys in the backends' own variables, exceptions that cannot be printed,
a full disk, many threads starting Comet at once, and input that can only fail later."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

from flyte_ctx_tracking import NullRun, TrackingWarning, comet_session, neptune_session, wandb_session
from tests.comet_archive import archives
from tests.fake_backend import FakeSession
from tests.neptune_oplog import only_run
from tests.wandb_records import find_runs


def test_an_online_open_that_never_returns_is_abandoned_at_the_sessions_deadline() -> None:
    release = threading.Event()
    session = FakeSession(mode="online", online_timeout=0.5, hang_online=release)
    with pytest.warns(TrackingWarning) as caught, session as run:
        assert run.mode == "offline"  # the block started, offline
    [message] = [str(w.message) for w in caught]
    assert "going online did not finish within 0.5 s" in message and "runs offline" in message
    release.set()  # the abandoned attempt returns at last: the run it opened is closed, not leaked
    for _ in range(100):
        if len(session.opened) == 2 and all(run.closed for run in session.opened):
            break
        threading.Event().wait(0.05)
    assert [run.mode for run in session.opened] == ["offline", "online"]
    assert all(run.closed for run in session.opened)


@pytest.mark.parametrize("value", [0, -1, float("inf"), "30", True])
def test_a_bad_online_timeout_is_refused_at_construction(value: Any) -> None:
    with pytest.raises(ValueError, match=f"online_timeout={value!r} is not accepted"):
        FakeSession(online_timeout=value)


def test_a_typo_in_the_process_deadline_warns_and_uses_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_ONLINE_TIMEOUT", "soon")
    with pytest.warns(TrackingWarning, match="FLYTE_CTX_TRACKING_ONLINE_TIMEOUT='soon' is not a positive number"):
        with FakeSession(mode="online") as run:
            assert run.mode == "online"


def test_garbage_in_the_execution_id_still_gives_a_wandb_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_INTERNAL_EXECUTION_ID", ":;,#?/'")
    monkeypatch.setenv("FLYTE_INTERNAL_TASK_NAME", "train")
    with wandb_session(project="garbage", mode="offline") as run:
        assert run and not isinstance(run, NullRun)
        run.log({"loss": 1.0})
    (recorded,) = find_runs(Path(os.environ["FLYTE_CTX_TRACKING_DIR"]))
    assert recorded.run_id and not set(recorded.run_id) & set(":;,#?/'")


@pytest.mark.parametrize(
    ("build", "error", "named"),
    [
        (lambda: wandb_session(id="é" * 300), ValueError, "bytes long"),
        (lambda: wandb_session(id="a\x00b"), ValueError, "'a\\x00b'"),
        (lambda: wandb_session(all_ranks="no"), TypeError, "all_ranks='no'"),
        (lambda: neptune_session(directory=5), TypeError, "directory=5"),
    ],
)
def test_input_that_could_only_fail_later_is_refused_at_construction(build: Any, error: type, named: str) -> None:
    with pytest.raises(error, match=named.replace("\\", "\\\\").replace("(", r"\(")):
        build()


def test_memray_refuses_a_sampling_interval_it_cannot_take() -> None:
    from flyte_ctx_tracking import memray_profile

    with pytest.raises(ValueError, match=r"memory_interval_ms=1000000000000 is not accepted"):
        memray_profile("x", memory_interval_ms=10**12)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def test_an_exception_that_cannot_be_printed_still_marks_the_run_failed(_isolated_tracking: Path) -> None:
    with pytest.raises(_Unprintable):
        with neptune_session(project="ml/unprintable", mode="offline"):
            raise _Unprintable()
    assert only_run(_isolated_tracking).failed
    with pytest.raises(_Unprintable):
        with comet_session(project_name="unprintable", mode="offline"):
            raise _Unprintable()
    (archive,) = archives(_isolated_tracking / "comet")
    assert archive.others["flyte/status"] == "failed"


def test_keys_from_the_backends_own_variables_never_reach_what_is_recorded(
    monkeypatch: pytest.MonkeyPatch, _isolated_tracking: Path
) -> None:
    # Made at run time: Comet logs this file's source as the experiment's code.
    comet_key, neptune_token = f"CometEnvKey-{uuid.uuid4().hex}", f"NeptuneEnvToken-{uuid.uuid4().hex}"
    monkeypatch.setenv("COMET_API_KEY", comet_key)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", neptune_token)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError), comet_session(project_name="leak", mode="offline"):
            raise RuntimeError(f"the server said: bad key {comet_key}")
        with pytest.raises(RuntimeError), neptune_session(project="ml/leak", mode="offline"):
            raise RuntimeError(f"the server said: bad token {neptune_token}")
    assert "***" in archives(_isolated_tracking / "comet")[0].others["flyte/error"]
    assert "***" in str(only_run(_isolated_tracking).value("flyte/error/message"))
    for path in _isolated_tracking.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert comet_key.encode() not in data and neptune_token.encode() not in data, path


def test_a_second_comet_experiment_in_another_thread_is_refused_and_never_ends_the_first(
    _isolated_tracking: Path,
) -> None:
    start = threading.Barrier(4)
    handles: list[Any] = []
    caught: list[str] = []

    def worker(number: int) -> None:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            start.wait(timeout=60)
            with comet_session(project_name=f"race{number}", mode="offline") as experiment:
                handles.append(experiment)
                experiment.log_metric("loss", number)
                start_all.wait(timeout=60)
        caught.extend(str(w.message) for w in record if issubclass(w.category, TrackingWarning))

    start_all = threading.Barrier(4)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    started = [handle for handle in handles if handle]
    assert len(started) == 1 and len(caught) == 3
    assert all("one experiment per process" in message for message in caught)
    (archive,) = archives(_isolated_tracking / "comet")
    assert archive.others["flyte/status"] == "succeeded" and len(archive.metrics("loss")) == 1


def test_a_full_disk_inside_a_neptune_block_is_a_warning_not_an_error_in_the_users_code(tmp_path: Path) -> None:
    code = """
import resource, signal
from flyte_ctx_tracking import neptune_session
with neptune_session(project="ml/full", mode="offline") as run:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
    run["x"] = 1
    run["series"].append(2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print("BLOCK DONE", flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False
    )
    assert "BLOCK DONE" in done.stdout, done.stderr[-3000:]
    assert done.returncode == 0 and "will not save your data" in done.stdout + done.stderr


def test_a_dead_wandb_helper_process_does_not_disable_wandb_for_the_rest_of_the_process(tmp_path: Path) -> None:
    code = """
import os, signal, subprocess, time
from flyte_ctx_tracking import wandb_session
with wandb_session(project="dead", mode="offline") as run:
    run.log({"x": 1})
for child in subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split():
    os.kill(int(child), signal.SIGKILL)  # wandb-core, as the OOM killer would
time.sleep(0.5)
with wandb_session(project="dead", mode="offline") as run:
    print("SECOND", type(run).__name__, flush=True)
    run.log({"x": 2})
"""
    env = {**os.environ, "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180, check=False
    )
    assert "SECOND Run" in done.stdout, done.stdout + done.stderr[-3000:]


def test_wandb_keeps_its_own_logs_under_the_data_directory(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    env = {**os.environ, "HOME": str(home), "FLYTE_CTX_TRACKING_DIR": str(data), "WANDB_SILENT": "true"}
    for name in ("WANDB_CACHE_DIR", "WANDB_SERVICE"):  # a fresh helper process, not this test process's
        env.pop(name, None)
    code = (
        "from flyte_ctx_tracking import wandb_session\n"
        "with wandb_session(mode='offline') as run:\n"
        "    run.log({'x': 1})\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, timeout=180, check=True, capture_output=True)
    assert not (home / ".cache" / "wandb").exists()
    assert list((data / "wandb" / "cache").rglob("core-debug-*.log"))


async def test_a_cancelled_async_with_closes_the_run_its_open_finished_with() -> None:
    import asyncio

    release = threading.Event()
    session = FakeSession(mode="online", online_timeout=60, hang_online=release)

    async def block() -> None:
        async with session:
            raise AssertionError("the block of a cancelled open never runs")

    task = asyncio.create_task(block())
    await asyncio.sleep(0.2)  # the open is under way in a worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()  # the open finishes after all: its run is closed, not leaked
    for _ in range(200):
        if session.opened and session.opened[0].closed:
            break
        await asyncio.sleep(0.05)
    assert [run.closed for run in session.opened] == [True]


def test_url_safe_base64_forms_of_a_key_are_scrubbed() -> None:
    import base64

    from flyte_ctx_tracking._secrets import redact

    key = "key-" + uuid.uuid4().hex
    for prefix in ("", "a", "ab", "\xff\xfe", "~~~"):
        token = base64.urlsafe_b64encode((prefix + key).encode("latin-1")).decode()
        assert redact(f"Authorization: Basic {token}", key) == "Authorization: Basic ***", token


def test_a_sigterm_handler_of_the_process_decides_and_the_runs_close_as_the_blocks_end(tmp_path: Path) -> None:
    code = """
import os, signal
from flyte_ctx_tracking import wandb_session
seen = []
signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))  # e.g. save a checkpoint, go on
with wandb_session(project="graceful", mode="offline") as run:
    os.kill(os.getpid(), signal.SIGTERM)
    run.log({"after_signal": 1})  # the run is still open: the process's own handler chose to go on
    print("LOGGED", run.settings.mode, flush=True)
print("HANDLER", seen, flush=True)
"""
    env = {**os.environ, "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOGGED offline" in done.stdout and "HANDLER [15]" in done.stdout
