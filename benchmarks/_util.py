"""Small helpers shared by the benchmark scripts: timing in a subprocess, and ratios."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def run_in_venv(python: Path, source: str, *args: str, own_home: bool = False) -> Any:
    """Run ``source`` as a script file with another venv's ``python``; return the JSON of its last line.

    A file, not ``python -c``: flytekit reads a task's source. ``own_home`` gives the script a
    throwaway HOME (a plugin that logs in may write there).
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-venv-"))
    try:
        script = workdir / "bench_script.py"
        script.write_text(source, encoding="utf-8")
        env = {**os.environ, "HOME": str(workdir)} if own_home else None
        done = subprocess.run([str(python), str(script), *args], capture_output=True, text=True, cwd=workdir, env=env)
        if done.returncode != 0:
            raise SystemExit(f"the benchmark in {python} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def fresh_import_seconds(statement: str, *, python: str = sys.executable, repeat: int = 7) -> float:
    """The median time of ``statement`` in a fresh interpreter, measured inside it."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    samples = [
        float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeat)
    ]
    return statistics.median(samples)
