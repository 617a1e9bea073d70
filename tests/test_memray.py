"""memray_profile and memray_profiling, against the real memray: captures, numbers, reports, decks.

Every test profiles for real and reads back what memray wrote (the handle's numbers come from the
capture file; the HTML is memray's own report). No timing is asserted here: see benchmarks/.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from flytekit import task
from flytekit.core.context_manager import FlyteContextManager

from flyte_ctx_tracking import TrackingWarning, current_run, memray_profile, memray_profiling
from flyte_ctx_tracking.sessions.memray import MAX_DECKS_PER_SECTION, MemrayCapture
from flyte_ctx_tracking.sessions.memray._report import _STATIC_OPTIONS, accepted_reporter_options

from .conftest import PodRunner
from .fake_backend import FakeSession

MiB = 1024 * 1024
THIS_FILE = Path(__file__).name


def allocate(megabytes: int) -> list[bytearray]:
    """Allocate ``megabytes`` blocks of 1 MiB and keep them alive."""
    return [bytearray(MiB) for _ in range(megabytes)]


def external_resources(html: str) -> list[str]:
    """URLs a browser would fetch to show ``html``: scripts and stylesheets from a CDN."""
    return re.findall(r"<script[^>]*\ssrc=[\"']?(https?://[^\"' >]+)", html) + re.findall(
        r"<link[^>]*\shref=[\"']?(https?://[^\"' >]+)", html
    )


def decks_of_the_running_task() -> dict[str, str]:
    """Title -> HTML of the decks the running task has so far."""
    params = FlyteContextManager.current_context().user_space_params
    return {deck.name: deck.html for deck in params.decks}


def captures() -> list[Path]:
    return sorted((Path(os.environ["FLYTE_CTX_TRACKING_DIR"]) / "memray").glob("*.bin"))


# ---------------------------------------------------------------------------------------- numbers
def test_a_section_reports_peak_memory_allocations_and_where_the_memory_went() -> None:
    with memray_profile("join") as prof:
        assert current_run("memray") is prof
        assert prof.peak_memory is None  # filled after the block
        kept = allocate(50)
    del kept

    assert prof.profiled and prof.closed
    assert prof.peak_memory is not None and prof.peak_memory >= 50 * MiB
    assert prof.total_allocations is not None and prof.total_allocations >= 50
    top = prof.top_sites[0]
    assert THIS_FILE in top.location  # the line of `allocate` that made the blocks
    assert top.bytes >= 50 * MiB and top.count >= 50
    assert prof.path is not None and prof.path.is_file()
    assert prof.path.parent == Path(os.environ["FLYTE_CTX_TRACKING_DIR"]) / "memray"
    assert current_run("memray") is None


def test_the_report_is_memrays_flame_graph_and_fetches_nothing_from_the_network() -> None:
    with memray_profile("join") as prof:
        kept = allocate(3)
    del kept
    html = prof.html
    assert html is not None
    assert prof.report_kind == "flamegraph"
    assert "flamegraph report" in html  # memray's own title
    assert "packed_data" in html  # memray's data, rendered in this process
    assert external_resources(html) == []  # local assets inlined: renders in a closed network
    assert "cdn.jsdelivr.net/npm" not in html


def test_the_table_reporter_and_reporter_arguments_shape_the_report() -> None:
    with memray_profile("t", memray_html_reporter="table") as table:
        kept = allocate(2)
    with memray_profile("leaks", memray_reporter_args=["--leaks", "--split-threads"]) as leaks:
        kept += allocate(2)
    with memray_profile("temporal", memray_reporter_args=["--temporal"]) as temporal:
        kept += allocate(2)
    del kept
    assert table.html is not None and "table report" in table.html and table.report_kind == "table"
    assert external_resources(table.html) == []
    assert leaks.html is not None and "flamegraph report (memory leaks)" in leaks.html
    assert temporal.html is not None and temporal.report_kind == "temporal_flamegraph"
    assert "temporal flamegraph report" in temporal.html


def test_a_section_profiled_many_times_per_second_gets_one_capture_file_each() -> None:
    handles = []
    for _ in range(6):  # well within one second: the anchor's per-second file names collide here
        with memray_profile("hot") as prof:
            kept = allocate(1)
        del kept
        handles.append(prof)
    paths = [h.path for h in handles]
    assert len(set(paths)) == 6
    assert sorted(p for p in paths if p is not None) == captures()
    assert all(h.peak_memory is not None and h.peak_memory >= MiB for h in handles)


def test_capture_files_never_go_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    with memray_profile("join", memray_html_reporter="table") as prof:
        kept = allocate(1)
    del kept
    assert prof.html is not None
    assert list(workdir.iterdir()) == []
    assert prof.path is not None and prof.path.parent == Path(os.environ["FLYTE_CTX_TRACKING_DIR"]) / "memray"


def test_an_explicit_directory_wins(tmp_path: Path) -> None:
    with memray_profile("join", directory=tmp_path / "mine") as prof:
        pass
    assert prof.path is not None and prof.path.parent == tmp_path / "mine"


# ---------------------------------------------------------------------------------------- nesting
def test_a_nested_profile_joins_the_outer_capture() -> None:
    inner_profile = memray_profile("inner")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning, no error
        with memray_profile("outer") as outer:
            kept = allocate(5)
            with inner_profile as inner:
                kept += allocate(20)
            assert inner is outer  # joined, not a second tracker
            assert inner.peak_memory is None  # the outer capture is still running
    del kept
    assert outer.name == "outer"
    assert outer.peak_memory is not None and outer.peak_memory >= 25 * MiB  # both sections counted
    assert len(captures()) == 1


def test_a_profiled_function_called_inside_a_profiled_block_joins_it() -> None:
    @memray_profiling
    def step() -> int:
        return len(allocate(4))

    with memray_profile("outer") as outer:
        assert step() == 4
    assert outer.peak_memory is not None and outer.peak_memory >= 4 * MiB
    assert len(captures()) == 1


# ---------------------------------------------------------------------------------------- errors
def test_an_exception_stops_the_tracker_still_reports_and_propagates_unchanged() -> None:
    boom = ValueError("bad join key")
    with pytest.raises(ValueError) as raised:
        with memray_profile("join") as prof:
            kept = allocate(8)
            raise boom
    del kept
    assert raised.value is boom
    assert prof.failed and prof.error_type == "ValueError"
    assert prof.peak_memory is not None and prof.peak_memory >= 8 * MiB
    assert prof.html is not None and prof.report_kind == "flamegraph"
    with memray_profile("after") as after:  # the tracker was stopped: a new one starts
        pass
    assert after.profiled


def test_a_failing_section_in_a_task_still_gets_its_deck() -> None:
    @task(enable_deck=True)
    def failing_section() -> str:
        try:
            with memray_profile("join"):
                kept = allocate(2)
                raise KeyError("id")
        except KeyError:
            del kept
        return decks_of_the_running_task()["Memray: join"]

    html = failing_section()
    assert "the section raised KeyError" in html
    assert "srcdoc=" in html


def test_a_report_that_cannot_render_never_fails_the_task() -> None:
    @task(enable_deck=True)
    def capture_lost() -> str:
        with memray_profile("join") as prof:
            kept = allocate(1)
            assert prof.path is not None
            prof.path.unlink()  # the capture disappears: nothing can be read or rendered
        del kept
        return decks_of_the_running_task()["Memray: join"]

    with pytest.warns(TrackingWarning) as caught:
        html = capture_lost()
    assert "could not be rendered" in html
    assert any("could not be rendered" in str(w.message) for w in caught)


def test_a_report_over_the_size_limit_degrades_and_says_so() -> None:
    with memray_profile("join", memray_reporter_args=["--temporal"], max_report_bytes=200_000) as prof:
        kept = allocate(2)
    del kept
    html = prof.html
    assert html is not None and len(html) <= 200_000
    assert prof.report_kind == "summary"
    notes = " ".join(prof.report_notes)
    assert "temporal flame graph" in notes and "over the" in notes and "summary" in notes
    assert THIS_FILE in html  # the summary still shows where the memory went


# ---------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("reporter", ["svg", "Flamegraph", "tree", ""])
def test_an_unsupported_reporter_is_refused_at_decoration_time(reporter: str) -> None:
    message = f"{reporter} is not a supported html reporter."
    with pytest.raises(ValueError, match=re.escape(message)):
        memray_profiling(memray_html_reporter=reporter)
    with pytest.raises(ValueError, match=re.escape(message)):
        memray_profile("x", memray_html_reporter=reporter)


@pytest.mark.parametrize(
    ("reporter", "args", "named"),
    [
        ("flamegraph", ["--no-such-flag"], "--no-such-flag"),
        ("flamegraph", ["--leaks", "--nope=3"], "--nope=3"),
        ("table", ["--temporal"], "--temporal"),
        ("table", ["--inverted"], "--inverted"),
        ("flamegraph", ["--output=x.html"], "--output=x.html"),  # where the report goes is ours
        ("flamegraph", ["-o", "x.html"], "-o"),
        ("flamegraph", ["--force"], "--force"),
    ],
)
def test_an_option_the_reporter_does_not_accept_is_refused_naming_it_and_the_accepted_ones(
    reporter: str, args: list[str], named: str
) -> None:
    with pytest.raises(ValueError) as raised:

        @memray_profiling(memray_html_reporter=reporter, memray_reporter_args=args)
        def train() -> None: ...

    message = str(raised.value)
    assert repr(named) in message
    assert "--leaks" in message and "--split-threads" in message  # the accepted ones


@pytest.mark.parametrize(
    "args",
    [
        ["--temporary-allocation-threshold=abc"],  # not a number
        ["--leaks", "--temporary-allocations"],  # memray: not allowed together
        ["--temporal", "--temporary-allocations"],  # memray cannot draw that
        ["--confidential-files=some"],  # not one of all/none/default
        ["--leaks", "stray"],
    ],
)
def test_bad_option_values_and_combinations_are_refused(args: list[str]) -> None:
    with pytest.raises(ValueError, match="memray_reporter_args"):
        memray_profile("x", memray_reporter_args=args)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"memray_reporter_args": "--leaks"}, TypeError),  # a string, not a list
        ({"memray_reporter_args": [3]}, TypeError),
        ({"memory_interval_ms": 0}, ValueError),
        ({"memory_interval_ms": "10"}, ValueError),
        ({"native_traces": "yes"}, TypeError),
        ({"max_report_bytes": -1}, ValueError),
        ({"on_error": "ignore"}, ValueError),
    ],
)
def test_bad_parameters_are_refused_naming_the_value(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        memray_profiling(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(raised.value)


def test_valid_reporter_arguments_are_accepted() -> None:
    memray_profiling(memray_reporter_args=["--leaks", "--inverted", "--max-memory-records=100"])
    memray_profiling(memray_reporter_args=["--temporal", "--split-threads", "--confidential-files=all"])
    memray_profiling(memray_reporter_args=["--temporary-allocation-threshold", "3"])
    memray_profiling(memray_html_reporter="table", memray_reporter_args=["--temporary-allocations", "--no-web"])


def test_the_accepted_options_are_those_of_the_installed_memray() -> None:
    flamegraph = accepted_reporter_options("flamegraph")
    assert {"--leaks", "--temporal", "--inverted", "--split-threads", "--temporary-allocations"} <= set(flamegraph)
    assert flamegraph["--temporary-allocation-threshold"] and flamegraph["--max-memory-records"]
    assert "--temporal" not in accepted_reporter_options("table")
    # The table used where memray cannot be imported agrees with the installed memray's parser.
    assert flamegraph == _STATIC_OPTIONS["flamegraph"]
    assert accepted_reporter_options("table") == _STATIC_OPTIONS["table"]


def test_importing_and_configuring_does_not_import_memray() -> None:
    code = (
        "import sys, flyte_ctx_tracking as f; "
        "f.memray_profile('x', memray_html_reporter='table'); f.memray_profiling(native_traces=True); "
        "print('memray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------- decorators
def test_the_decorator_profiles_every_call_of_a_plain_function() -> None:
    @memray_profiling(memray_html_reporter="table")
    def build(n: int) -> int:
        return len(allocate(n))

    assert build(3) == 3
    assert build(2) == 2
    assert len(captures()) == 2
    assert all(path.name.startswith("build-") for path in captures())


def test_an_unnamed_session_takes_the_name_of_its_function() -> None:
    @memray_profile()
    def featurize() -> MemrayCapture:
        return current_run("memray")  # type: ignore[no-any-return]

    assert featurize().name == "featurize"

    def caller() -> MemrayCapture:
        with memray_profile() as prof:
            pass
        return prof

    assert caller().name == "caller"


# ---------------------------------------------------------------------------------------- decks
def test_in_a_task_each_capture_gets_a_deck_titled_with_its_section_up_to_a_bound() -> None:
    handles: list[MemrayCapture] = []

    @task(enable_deck=True)
    def hot_loop() -> dict[str, str]:
        for _ in range(MAX_DECKS_PER_SECTION + 2):
            with memray_profile("join", memray_html_reporter="table") as prof:
                kept = allocate(1)
            del kept
            handles.append(prof)
        with memray_profile("other", memray_html_reporter="table"):
            pass
        return {k: v for k, v in decks_of_the_running_task().items() if k.startswith("Memray")}

    decks = hot_loop()
    assert sorted(decks) == ["Memray: join", "Memray: join #2", "Memray: join #3", "Memray: other"]
    first = decks["Memray: join"]
    assert "peak memory" in first and "allocations" in first and THIS_FILE in first
    assert "<iframe" in first and "srcdoc=" in first  # the report is isolated from the other decks
    assert external_resources(first) == []
    assert "get no deck" in decks["Memray: join #3"]  # the last one says later captures get none
    embedded = re.search(r'srcdoc="([^"]*)"', first)
    assert embedded is not None and html.unescape(embedded.group(1)) == handles[0].html  # memray's report, intact
    # Every handle has its numbers, with or without a deck.
    assert [h.deck_title for h in handles] == ["Memray: join", "Memray: join #2", "Memray: join #3", None, None]
    assert all(h.peak_memory is not None and h.peak_memory >= MiB for h in handles)
    assert "no deck" in " ".join(handles[-1].report_notes)


def test_deck_false_adds_no_deck_and_decks_off_render_nothing_eagerly() -> None:
    @task(enable_deck=True)
    def no_deck() -> list[str]:
        with memray_profile("join", deck=False):
            pass
        return list(decks_of_the_running_task())

    @task
    def decks_off() -> bool:
        with memray_profile("join") as prof:
            pass
        return prof._report is None  # nothing rendered until someone asks for prof.html

    assert not any(title.startswith("Memray") for title in no_deck())
    assert decks_off() is True


POD_TASK = """
from flytekit import task
from flyte_ctx_tracking import memray_profiling


@task(enable_deck=True)
@memray_profiling(memray_reporter_args=["--leaks"])
def train(n: int) -> int:
    blocks = [bytearray(1024 * 1024) for _ in range(n)]
    return len(blocks)
"""


def test_in_a_pod_the_whole_task_is_profiled_into_its_deck(pod_run: PodRunner) -> None:
    result = pod_run(POD_TASK, "train", inputs={"n": 12})
    assert result.returncode == 0, result.output
    assert result.outputs["o0"] == 12
    html = result.deck_html
    assert html is not None
    assert "Memray: train" in html
    assert "flamegraph report (memory leaks)" in html
    assert "srcdoc=" in html
    capture_files = [p for p in result.files() if p.suffix == ".bin"]
    assert len(capture_files) == 1
    assert capture_files[0].parent == result.workdir / "tracking" / "memray"


# ---------------------------------------------------------------------------------------- trackers
def test_the_numbers_are_logged_to_the_active_tracking_run() -> None:
    tracker = FakeSession(mode="offline")
    with tracker as run:
        with memray_profile("join") as prof:
            kept = allocate(3)
        del kept
        with memray_profile("quiet", log_to_trackers=False):
            pass
    assert run.log == [
        {"memray/join/peak_memory_bytes": prof.peak_memory, "memray/join/total_allocations": prof.total_allocations}
    ]


def test_the_numbers_land_in_an_active_offline_wandb_run() -> None:
    from flyte_ctx_tracking import tracking_root, wandb_session

    from .wandb_records import find_runs

    with wandb_session(project="features", mode="offline"):
        with memray_profile("join") as prof:
            kept = allocate(4)
        del kept
    (recorded,) = find_runs(tracking_root())
    rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in recorded.history]
    assert rows == [
        {"memray/join/peak_memory_bytes": prof.peak_memory, "memray/join/total_allocations": prof.total_allocations}
    ]
    assert prof.peak_memory is not None and prof.peak_memory >= 4 * MiB
