"""Small helpers shared by the benchmark scripts: timing in a subprocess, and ratios."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def best_of(function: Callable[[], object], *, repeat: int = 7, number: int = 1) -> float:
    """The best per-call time in seconds over ``repeat`` rounds of ``number`` calls."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            function()
        rounds.append((time.perf_counter() - start) / number)
    return min(rounds)


def import_increment(first: str, second: str, *, python: str = sys.executable, repeat: int = 9) -> tuple[float, float]:
    """Median seconds of ``import first`` and then of ``import second``, in the same fresh interpreters."""
    code = (
        "import time; t0 = time.perf_counter(); "
        f"import {first}; t1 = time.perf_counter(); import {second}; t2 = time.perf_counter(); "
        "print(t1 - t0, t2 - t1)"
    )
    pairs = [
        tuple(
            map(float, subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split())
        )
        for _ in range(repeat)
    ]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def fresh_import_seconds(statement: str, *, python: str = sys.executable, repeat: int = 7) -> float:
    """The median time of ``statement`` in a fresh interpreter, measured inside it."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    samples = [
        float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeat)
    ]
    return statistics.median(samples)
