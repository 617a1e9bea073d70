"""whylogs_profile under stress (issue 11): many threads' first profiles at once, a data directory
that cannot be created or written, and frames whose column names whylogs cannot keep.

Real whylogs on numpy 2, no mocks. What could hang runs in a fresh interpreter with a hard timeout
(and a traceback dump before it), so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flytekit import task
from flytekit.core.context_manager import FlyteContextManager

from flyte_ctx_tracking import TrackingWarning, WhylogsSummaryDriftRenderer, whylogs_profile
from flyte_ctx_tracking.sessions.whylogs import ConstraintsFailedError, _compat
from flyte_ctx_tracking.sessions.whylogs._compat import import_whylogs

from .conftest import REPO

import_whylogs()

from whylogs.core import DatasetProfile, DatasetProfileView  # noqa: E402
from whylogs.core.constraints.factories import no_missing_values  # noqa: E402

PYTHON = sys.executable


def chunk(rows: int = 4, *, start: int = 0) -> pd.DataFrame:
    values = range(start, start + rows)
    return pd.DataFrame(
        {
            "amount": [float(v) if v % 4 else None for v in values],
            "items": list(values),
            "country": ["fr" if v % 2 else "de" for v in values],
        }
    )


def counts(view: DatasetProfileView) -> dict[str, tuple[int, int]]:
    table = view.to_pandas()
    return {str(c): (int(table.loc[c, "counts/n"]), int(table.loc[c, "counts/null"])) for c in table.index}


def deck_pages() -> dict[str, str]:
    return {deck.name: deck.html for deck in FlyteContextManager.current_context().user_space_params.decks}


def saved_profiles(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "WHYLOGS_NO_ANALYTICS": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"the child process hung for {timeout} s:\n{stderr[-4000:]}")
    return process.returncode, stdout, stderr


# ------------------------------------------------------------------ 1. first use from many threads
# Every thread's first whylogs_profile starts at the same moment (whylogs not imported yet). Before
# the fix, two threads met in the one-time numpy initialisation of whylogs' native sketches (pybind11,
# under a C++ guard that ignores the GIL) and the process hung, 2, 8 or 32 threads alike.
_FIRST_USE = textwrap.dedent(
    """
    import faulthandler, sys, threading
    faulthandler.dump_traceback_later(float(sys.argv[2]), exit=True)  # a hang dumps every stack and exits
    import pandas as pd
    from flyte_ctx_tracking import whylogs_profile
    assert "whylogs" not in sys.modules
    threads = int(sys.argv[1])
    barrier = threading.Barrier(threads)
    frame = pd.DataFrame({"amount": [1.5, None, 3.5], "items": [1, 2, 3], "country": ["fr", None, "de"]})
    columns = []
    def first_profile(index):
        barrier.wait()
        with whylogs_profile(f"thread{index}", deck=False, on_error="raise") as prof:
            prof.log(frame)
            prof.log({"amount": 2.0, "items": 4, "country": "it"})
        columns.append(len(prof.columns or ()))
    workers = [threading.Thread(target=first_profile, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(" ".join(map(str, columns)))
    """
)
_THREADS = (2, 8, 32, 2, 8, 32)  # one fresh interpreter each (only the first use can hang), side by side


def test_many_threads_first_profiles_at_once_do_not_deadlock() -> None:
    children = [(threads, start_python(_FIRST_USE, str(threads), "90")) for threads in _THREADS]
    try:
        for threads, child in children:
            returncode, stdout, stderr = finish(child)
            assert returncode == 0, f"{threads} threads:\n{stderr[-4000:]}"
            assert stdout.split() == ["3"] * threads, f"{threads} threads:\n{stderr[-4000:]}"
    finally:
        for _, child in children:  # a failure leaves no interpreter behind
            if child.poll() is None:
                child.kill()
                child.communicate()


# ------------------------------------------------------------------ 2. no data directory: fail closed
@pytest.fixture
def uncreatable_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FLYTE_CTX_TRACKING_DIR under a regular file: mkdir fails for root too (chmod would not)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file, not a directory", encoding="utf-8")
    root = blocker / "tracking"
    monkeypatch.setenv("FLYTE_CTX_TRACKING_DIR", str(root))
    return root


def test_a_data_gate_without_a_data_directory_still_judges_its_constraints_and_fails(
    uncreatable_root: Path,
) -> None:
    seen: dict[str, Any] = {}

    @task(enable_deck=True)
    def gate() -> int:
        rules = [no_missing_values(column_name="amount"), no_missing_values(column_name="country")]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with whylogs_profile("gate", constraints=rules, fail_on_constraints=True, interactive=False) as prof:
                    prof.log(chunk(8))  # amount has missing values
            except ConstraintsFailedError as error:
                seen["error"] = error
        seen["warnings"] = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
        seen["decks"] = deck_pages()
        seen["prof"] = prof
        return 0

    gate()
    error, prof = seen["error"], seen["prof"]
    assert error.failed == ["amount has no missing values"]
    assert [(r.name, r.passed) for r in prof.constraints] == [
        ("amount has no missing values", False),
        ("country has no missing values", True),
    ]
    assert {c.column: (c.count, c.null_count) for c in prof.columns} == {
        "amount": (8, 2),
        "items": (8, 0),
        "country": (8, 0),
    }
    assert counts(prof.view())["amount"] == (8, 2)
    assert prof.path is None  # only the saving degraded
    opened, saved = seen["warnings"]
    assert "could not create its data directory" in opened and "nothing will be saved" in opened
    assert "gate" in saved and "NotADirectoryError" in saved
    assert "FAIL" in seen["decks"]["whylogs constraints: gate"]
    assert "8 rows logged" in seen["decks"]["whylogs: gate"]
    assert not uncreatable_root.parent.is_dir()


def test_without_a_data_directory_passing_constraints_and_an_explicit_directory_only_warn(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    rules = [no_missing_values(column_name="country")]
    with pytest.warns(TrackingWarning) as caught:
        with whylogs_profile(
            "ok", constraints=rules, fail_on_constraints=True, directory=blocker / "profiles", reference=chunk(4)
        ) as prof:
            prof.log(chunk(8))
    assert prof.failed_constraints == [] and prof.constraints is not None
    assert prof.drift is not None and {d.column for d in prof.drift} == {"amount", "items", "country"}
    assert prof.columns is not None and prof.path is None
    ours = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 2  # the directory at the start, the saving at the end
    assert "could not create its data directory" in ours[0] and "could not close whylogs" in ours[1]


_PART_WAY = textwrap.dedent(
    """
    import json, resource, signal, sys, warnings
    import pandas as pd
    from flyte_ctx_tracking import whylogs_profile, tracking_root
    from flyte_ctx_tracking.sessions.whylogs import ConstraintsFailedError
    from flyte_ctx_tracking.sessions.whylogs._compat import import_whylogs
    import_whylogs()
    from whylogs.core.constraints.factories import no_missing_values
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)
    warnings.simplefilter("always")
    frame = pd.DataFrame({"amount": [1.0, None, 3.0], "country": ["fr", "de", None]})
    results = []
    for name, limit in [("ours", lambda size: size - 1), ("all", lambda size: size // 2)]:
        out = {}
        rules = [no_missing_values(column_name="amount")]
        with warnings.catch_warnings(record=True) as caught:
            try:
                with whylogs_profile(name, constraints=rules, fail_on_constraints=True, reference=frame) as prof:
                    prof.log(frame)
                    out["size"] = size = len(prof.view().serialize())
                    # "ours": whylogs' own temporary file (the profile without its header) still
                    # fits, the profile file does not; "all": nothing bigger than half of it fits.
                    resource.setrlimit(resource.RLIMIT_FSIZE, (limit(size), unlimited[1]))
            except ConstraintsFailedError as error:
                out["failed"] = error.failed
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, unlimited)
        out["warnings"] = [str(w.message) for w in caught]
        out["path"] = None if prof.path is None else str(prof.path)
        out["columns"] = [c.column for c in prof.columns or ()]
        out["drift"] = [d.column for d in prof.drift or ()]
        out["files"] = sorted(p.name for p in (tracking_root() / "whylogs").iterdir() if name in p.name)
        results.append(out)
    print(json.dumps(results))
    """
)


def test_a_save_that_fails_part_way_leaves_no_truncated_profile_and_the_data_is_still_judged() -> None:
    # A truly full disk needs a mount (root). A file size limit (RLIMIT_FSIZE) makes writes fail the
    # same way, part-way through, and needs no privilege: first only the profile file's write (a
    # truncated profile was left behind), then whylogs' own temporary file too (the constraints
    # could not be judged: whylogs copied the profile through it).
    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("no file size limit (RLIMIT_FSIZE) on this platform")
    returncode, stdout, stderr = finish(start_python(_PART_WAY))
    assert returncode == 0, stderr[-4000:]
    for out in json.loads(stdout):
        assert out["size"] > 64
        assert out["failed"] == ["amount has no missing values"]
        assert out["columns"] == ["amount", "country"] and out["drift"] == ["amount", "country"]
        assert out["path"] is None
        assert out["files"] == []  # no truncated profile, no partial file left behind
        [saved] = out["warnings"]
        assert "could not close whylogs cleanly" in saved and "File too large" in saved


def test_a_locked_down_pod_with_no_writable_directory_at_all_still_judges_the_data(
    uncreatable_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No data directory and no temporary directory (a read-only root filesystem): whylogs cannot
    # serialize a profile at all, so only the saving fails. The process's first profile included.
    monkeypatch.setattr(tempfile, "tempdir", str(uncreatable_root / "tmp"))
    monkeypatch.setattr(_compat, "_prepared", False)
    rules = [no_missing_values(column_name="amount"), no_missing_values(column_name="country")]
    with pytest.warns(TrackingWarning) as caught:
        with pytest.raises(ConstraintsFailedError) as failed:
            with whylogs_profile("pod", constraints=rules, fail_on_constraints=True, reference=chunk(4)) as prof:
                prof.log(chunk(8))
    assert failed.value.failed == ["amount has no missing values"]
    assert prof.columns is not None and prof.drift is not None and prof.path is None
    ours = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 2 and "could not close whylogs" in ours[1] and "NotADirectoryError" in ours[1]
    with pytest.raises(OSError):
        prof.view().serialize()  # what whylogs itself cannot do here


def test_a_saved_profile_is_complete_and_nothing_partial_is_left(tmp_path: Path) -> None:
    with whylogs_profile("whole", directory=tmp_path / "profiles") as prof:
        prof.log(chunk(50))
    assert prof.path is not None and saved_profiles(tmp_path / "profiles") == [prof.path]
    assert counts(DatasetProfileView.read(str(prof.path)))["items"] == (50, 0)


# ------------------------------------------------------------------ 3. column names whylogs cannot keep
def _awkward_frames() -> Iterator[Any]:
    two = [[1.0, 2.0], [3.0, 4.0]]
    yield pytest.param(
        pd.DataFrame(two, columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])),
        TypeError,
        r"MultiIndex columns \(\('a', 'x'\) \(tuple\), \('a', 'y'\) \(tuple\)\)",
        id="multiindex",
    )
    yield pytest.param(pd.DataFrame(two), TypeError, r"has 0 \(int\), 1 \(int\)", id="range-index")
    yield pytest.param(
        pd.DataFrame({"amount": [1.0], 7: [2.0]}), TypeError, r"has 7 \(int\)\. whylogs profiles", id="int"
    )
    yield pytest.param(pd.DataFrame({None: [1], "a": [2]}), TypeError, r"has nan \(float\)", id="none")
    yield pytest.param(
        pd.DataFrame({0: [1], 1.5: [2], None: [3]}),
        TypeError,
        r"has 0\.0 \(float\), 1\.5 \(float\), nan \(float\)",  # pandas made 0 a float
        id="int-float-none",
    )
    yield pytest.param(pd.DataFrame({True: [1]}), TypeError, r"has True \(bool\)", id="bool")
    yield pytest.param(pd.DataFrame({b"a": [1]}), TypeError, r"has b'a' \(bytes\)", id="bytes")
    yield pytest.param(pd.DataFrame({("a", "b"): [1], "c": [2]}), TypeError, r"\('a', 'b'\) \(tuple\)", id="tuple")
    yield pytest.param(
        pd.DataFrame({pd.Timestamp("2024-01-01"): [1]}), TypeError, r"Timestamp\('2024-01-01.*\(Timestamp\)", id="ts"
    )
    yield pytest.param(
        pd.DataFrame([[1, 2, 3]], columns=["a", "a", "b"]), ValueError, r"repeats 'a' \(whylogs would merge", id="dup"
    )
    yield pytest.param({0: 1, "a": 2}, TypeError, r"keys are its column names .* got 0 \(int\)", id="row-int")
    yield pytest.param({None: 1}, TypeError, r"got None \(NoneType\)", id="row-none")
    yield pytest.param({("a", "b"): 1}, TypeError, r"got \('a', 'b'\) \(tuple\)", id="row-tuple")


@pytest.mark.parametrize(("bad", "error", "names"), list(_awkward_frames()))
def test_awkward_column_names_are_refused_at_once_and_nothing_logged_is_lost(
    bad: Any, error: type[Exception], names: str
) -> None:
    with whylogs_profile("tx") as prof:
        prof.log(chunk(4))
        with pytest.raises(error, match=names) as refused:
            prof.log(bad)
        assert "strings, unique, in one level (no MultiIndex)" in str(refused.value)
        assert str(refused.value).startswith("WhylogsProfile.log: ")
        prof.log(chunk(4, start=4))
    assert (prof.rows, prof.chunks) == (8, 2)  # the refused call counted nothing
    assert prof.path is not None and prof.columns is not None
    saved = DatasetProfileView.read(str(prof.path))
    assert counts(saved) == {"amount": (8, 2), "items": (8, 0), "country": (8, 0)}


def test_the_refusal_says_how_many_more_names_are_bad() -> None:
    with whylogs_profile("wide") as prof:
        with pytest.raises(TypeError, match=r"has 0 \(int\), 1 \(int\), 2 \(int\), 3 \(int\), 4 \(int\) and 15 more"):
            prof.log(pd.DataFrame(np.zeros((1, 20))))
        with pytest.raises(ValueError, match=r"repeats 'a', 'b' \("):
            prof.log(pd.DataFrame([[1, 2, 3, 4, 5]], columns=["a", "b", "a", "b", "c"]))
        with pytest.raises(TypeError, match=r"rename them first, e\.g\. frame\.rename\(columns=str\)"):
            prof.log(pd.DataFrame({1: [1]}))
    assert prof.chunks == 0


def test_string_column_names_of_every_kind_are_kept() -> None:
    frame = pd.DataFrame({"": [1], np.str_("np"): [2], "a/b": [3], "prix €": [4], "with space": [5]})
    with whylogs_profile("names") as prof:
        prof.log(frame)
        prof.log({"": 1, "a/b": 2})
        prof.log(pd.DataFrame(index=[0, 1]))  # no columns: nothing to profile, nothing refused
    assert prof.path is not None
    assert set(DatasetProfileView.read(str(prof.path)).get_columns()) == {"", "np", "a/b", "prix €", "with space"}


def test_a_disabled_profile_refuses_the_same_data() -> None:
    with whylogs_profile("off", mode="disabled") as prof:
        with pytest.raises(TypeError, match=r"has 0 \(int\)"):
            prof.log(pd.DataFrame({0: [1]}))
        prof.log(chunk(2))
    assert prof.rows == 0


def test_a_reference_or_renderer_frame_with_awkward_names_is_refused() -> None:
    with pytest.raises(TypeError, match=r"whylogs_profile: reference: column names must be strings; .* 0 \(int\)"):
        whylogs_profile("tx", reference=pd.DataFrame({0: [1.0], "a": [2.0]}))
    with pytest.raises(ValueError, match=r"whylogs_profile: reference: column names must be unique"):
        whylogs_profile("tx", reference=pd.DataFrame([[1, 2]], columns=["a", "a"]))
    with pytest.raises(TypeError, match=r"to_html: target_data: column names must be strings"):
        WhylogsSummaryDriftRenderer.to_html(chunk(4), pd.DataFrame({0: [1.0]}), interactive=False)


# Why exactly these are refused: what whylogs itself does with them (whylogs 1.6.4, its last release).
@pytest.mark.parametrize(
    "columns",
    [[0, 1], [1.5], [True], [("a", "b")], [pd.Timestamp("2024-01-01")], ["a", 0]],
    ids=["int", "float", "bool", "tuple", "ts", "str-and-int"],
)
def test_whylogs_itself_tracks_non_string_names_then_cannot_save_them(columns: list[Any]) -> None:
    profile = DatasetProfile()
    profile.track(pandas=pd.DataFrame([list(range(len(columns)))], columns=columns))
    with pytest.raises(TypeError):
        profile.view().serialize()


def test_whylogs_itself_breaks_on_mixed_names_and_merges_duplicates() -> None:
    with pytest.raises(KeyError):
        DatasetProfile().track(pandas=pd.DataFrame({0: [1], 1.5: [2], None: [3]}))
    profile = DatasetProfile()
    profile.track(pandas=pd.DataFrame([[1, 2]], columns=["a", "a"]))
    assert counts(profile.view()) == {"a": (4, 0)}  # one row, two columns: one column of 4 values
    profile = DatasetProfile()
    profile.track(pandas=pd.DataFrame({b"a": [1]}))
    assert list(DatasetProfileView.deserialize(profile.view().serialize()).get_columns()) == ["a"]
