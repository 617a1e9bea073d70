"""whylogs: streaming a large frame in chunks through ``whylogs_profile`` vs one ``why.log(whole_frame)``.

For each size, two fresh interpreters profile the same kind of data (4 columns: float, int, string,
bool):

* ``whole``: the frame is built in memory, then ``why.log(frame).view()``;
* ``stream``: chunks of ``CHUNK`` rows are produced one at a time (as a reader would) and folded
  with ``prof.log(chunk)`` inside ``whylogs_profile`` (decks off; the profile is saved on exit, as
  in a task).

Reported: profiling throughput (rows per CPU second, ``time.process_time``: on a machine shared
with other jobs, CPU time is far steadier than wall time; data generation excluded from both), their
ratio (goal >= 0.9x), and peak RSS above the interpreter's post-import baseline (``resource.getrusage``):
``whole`` holds the frame, so it grows with rows; ``stream`` holds one chunk, so it stays flat.

Run: ``.venv/bin/python benchmarks/bench_whylogs.py`` (about 80 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SIZES = (200_000, 600_000, 1_200_000)  # multiples of CHUNK
ROUNDS = 2  # fresh interpreters per size and mode; the best time and the lowest peak are kept
CHUNK = 100_000
REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, tempfile, time
from benchmarks._whylogs_data import make, peak_mb
from flyte_ctx_tracking import whylogs_profile
from flyte_ctx_tracking.sessions.whylogs._compat import import_whylogs

why = import_whylogs()
mode, rows, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

# Warm up both paths (whylogs' and flytekit's lazy imports): the baseline holds no data.
why.log(make(1000, 99)).view()
with whylogs_profile("warm-up", deck=False, directory=tempfile.mkdtemp()) as warm:
    warm.log(make(1000, 98))
baseline = peak_mb()
seconds = 0.0
if mode == "whole":
    frame = make(rows, 0)
    start = time.process_time()
    why.log(frame).view()
    seconds = time.process_time() - start
else:
    with whylogs_profile("bench", deck=False, directory=tempfile.mkdtemp()) as prof:
        for index in range(rows // chunk):
            data = make(chunk, index)
            start = time.process_time()
            prof.log(data)
            seconds += time.process_time() - start
            del data
        start = time.process_time()
    seconds += time.process_time() - start  # the exit: summary and the saved profile
    assert prof.rows == rows
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb() - baseline}))
"""


def measure(mode: str, rows: int) -> dict[str, float]:
    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "1", "FLYTE_CTX_TRACKING_MODE": ""}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, mode, str(rows), str(CHUNK)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=env,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def best(samples: list[dict[str, float]]) -> dict[str, float]:
    return {"seconds": min(s["seconds"] for s in samples), "peak_mb": min(s["peak_mb"] for s in samples)}


def main() -> None:
    print(f"chunk = {CHUNK:,} rows; 4 columns (float, int, string, bool)")
    print(
        f"{'rows':>10} | {'why.log rows/CPU-s':>18} | {'stream rows/CPU-s':>17} | {'ratio':>5} | "
        f"{'why.log peak MB':>15} | {'stream peak MB':>14}"
    )
    for rows in SIZES:
        whole = best([measure("whole", rows) for _ in range(ROUNDS)])
        stream = best([measure("stream", rows) for _ in range(ROUNDS)])
        whole_rate, stream_rate = rows / whole["seconds"], rows / stream["seconds"]
        print(
            f"{rows:>10,} | {whole_rate:>18,.0f} | {stream_rate:>17,.0f} | {stream_rate / whole_rate:>4.2f}x | "
            f"{whole['peak_mb']:>15.0f} | {stream['peak_mb']:>14.0f}"
        )


if __name__ == "__main__":
    main()
