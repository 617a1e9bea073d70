"""memray benchmarks, each a ratio measured in one run.

1. The exit of a small profile inside a task with decks on: ours (stop the tracker, read the
   numbers, render the report in this process, add the deck) against the anchor plugin's way on
   the same workload (stop the tracker, render with ``python -m memray flamegraph`` in a
   subprocess, read the file, add the deck). The anchor's way is reproduced here with an argument
   list instead of its ``os.system`` string; the cost is the same second interpreter.
2. The overhead of profiling only the hot section of a task against profiling the whole task
   (setup + hot section), both including the report, relative to the unprofiled task.

Run: .venv/bin/python benchmarks/bench_memray.py    Target: (1) at least 10x faster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flytekit import Deck, task

ROUNDS = 7
MiB = 1024 * 1024


def small_workload() -> int:
    """A small hot section: a few large blocks and some small objects."""
    blocks = [bytearray(MiB) for _ in range(8)]
    rows = [{"id": i, "name": str(i)} for i in range(2_000)]
    return len(blocks) + len(rows)


def setup_phase() -> dict[int, str]:
    """The part of a task that is not the problem: many calls and short-lived buffers."""

    def parse(i: int) -> int:
        return len(bytes(1024 + i % 7))  # above pymalloc's 512 bytes: each one is a recorded allocation

    checksum = sum(parse(i) for i in range(60_000))
    return {i: f"row-{i}-{checksum}" for i in range(100_000)}


def hot_section(lookup: dict[int, str]) -> int:
    """The part users want to see: a join-like step with large allocations."""
    blocks = [bytearray(2 * MiB) for _ in range(10)]
    joined = [lookup[i] for i in range(0, len(lookup), 3)]
    return len(blocks) + len(joined)


@task(enable_deck=True)
def measure_exit() -> list[float]:
    """Time both exits inside a task with decks on; returns [first exit, ours, anchor] in seconds."""
    import memray

    from flyte_ctx_tracking import memray_profile

    ours: list[float] = []
    anchor: list[float] = []
    cold = 0.0
    workdir = Path(tempfile.mkdtemp(prefix="bench-memray-"))
    for i in range(ROUNDS + 1):
        session = memray_profile(f"section{i}")
        session.__enter__()
        small_workload()
        start = time.perf_counter()
        session.__exit__(None, None, None)
        elapsed = time.perf_counter() - start
        if i == 0:
            cold = elapsed  # the first exit in a process imports memray's reporters
        else:
            ours.append(elapsed)

        capture = workdir / f"anchor{i}.bin"
        tracker = memray.Tracker(os.fspath(capture))
        tracker.__enter__()
        small_workload()
        start = time.perf_counter()
        tracker.__exit__(None, None, None)
        report = workdir / f"anchor{i}.html"
        command = [sys.executable, "-m", "memray", "flamegraph", "-o", os.fspath(report), os.fspath(capture)]
        subprocess.run(command, check=True, capture_output=True)
        Deck("Memray Flamegraph", report.read_text(encoding="utf-8"))
        if i > 0:
            anchor.append(time.perf_counter() - start)
    return [cold, min(ours), min(anchor)]


def bench_exit() -> None:
    cold, ours, anchor = measure_exit()
    print(f"1. exit of a small profile, in a task with decks on (best of {ROUNDS})")
    print(
        f"   ours, in-process render + deck:          {ours * 1000:8.1f} ms"
        f"   (first exit in a process: {cold * 1000:.1f} ms)"
    )
    print(f"   anchor, subprocess `memray flamegraph`:  {anchor * 1000:8.1f} ms")
    print(
        f"   ratio anchor / ours:                     {anchor / ours:8.1f}x   (vs our first exit: {anchor / cold:.1f}x)"
    )


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_overhead() -> None:
    from flyte_ctx_tracking import memray_profile

    def plain() -> None:
        hot_section(setup_phase())

    def hot_only() -> None:
        lookup = setup_phase()
        with memray_profile("hot", memray_html_reporter="table") as prof:
            hot_section(lookup)
        assert prof.html is not None

    def whole() -> None:
        with memray_profile("task", memray_html_reporter="table") as prof:
            hot_section(setup_phase())
        assert prof.html is not None

    samples: dict[str, list[float]] = {"plain": [], "hot": [], "whole": []}
    for _ in range(ROUNDS):  # interleaved, so machine noise hits all three alike
        samples["plain"].append(timed(plain))
        samples["hot"].append(timed(hot_only))
        samples["whole"].append(timed(whole))
    base, hot, whole_ms = (min(samples[k]) * 1000 for k in ("plain", "hot", "whole"))
    root = Path(os.environ["FLYTE_CTX_TRACKING_DIR"]) / "memray"
    sizes = {prefix: max(p.stat().st_size for p in root.glob(f"{prefix}-*.bin")) for prefix in ("hot", "task")}
    print(f"2. profiling only the hot section vs the whole task (best of {ROUNDS}, report included)")
    print(f"   unprofiled task:           {base:8.1f} ms")
    print(
        f"   hot section profiled:      {hot:8.1f} ms   overhead {hot - base:7.1f} ms ({hot / base - 1:6.1%})"
        f"   capture {sizes['hot'] / 1024:8.1f} KiB"
    )
    print(
        f"   whole task profiled:       {whole_ms:8.1f} ms   overhead {whole_ms - base:7.1f} ms "
        f"({whole_ms / base - 1:6.1%})   capture {sizes['task'] / 1024:8.1f} KiB"
    )
    print(f"   whole-task overhead / hot-section overhead: {(whole_ms - base) / max(hot - base, 1e-9):.1f}x")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-memray-tracking-") as directory:
        os.environ["FLYTE_CTX_TRACKING_DIR"] = directory
        warnings.simplefilter("ignore")
        import memray

        print(f"memray {memray.__version__}, Python {sys.version.split()[0]}")
        bench_exit()
        bench_overhead()


if __name__ == "__main__":
    main()
