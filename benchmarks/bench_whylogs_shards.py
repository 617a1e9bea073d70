"""whylogs across shards: N rows profiled as k shards (one process each, as map task elements) and
then merged, vs one profile of all N rows in one process.

Every step runs in a fresh interpreter, as in its own pod:

* ``whole``: the N-row frame is built in memory and logged in one ``whylogs_profile`` block;
* ``shard``: N/k rows are built and logged in a block, and the profile is serialized, as the
  ``DatasetProfileView`` type transformer does for a map task's output;
* ``merge``: the k serialized profiles are read back and logged (``prof.log(view)``) into one
  block, as the reduce task does.

All blocks run with decks off and save their profile on exit, as in a task. The data has 4 columns
(float, int, string, bool), and its generation is excluded from the timings. Reported: CPU seconds
(``time.process_time``: steadier than wall time on a shared machine) of the whole profile, of all the
shards together and of the merge; the merge as a share of the whole profile; the throughput of
shards + merge relative to the whole profile; and peak RSS above the interpreter's post-import
baseline (``resource.getrusage``) of the whole profile and of the largest shard (goal: about 1/k).

Run: ``.venv/bin/python benchmarks/bench_whylogs_shards.py`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROWS = 1_200_000
SHARDS = (4, 12)
ROUNDS = 2  # fresh interpreters for the whole profile and the merge; the best time and lowest peak kept
REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, tempfile, time
from pathlib import Path
from benchmarks._whylogs_data import make, peak_mb
from flyte_ctx_tracking import whylogs_profile
from flyte_ctx_tracking.sessions.whylogs._compat import import_whylogs

import_whylogs()
from whylogs.core import DatasetProfileView

def profile(name, data):
    with whylogs_profile(name, deck=False, directory=tempfile.mkdtemp()) as prof:
        prof.log(data)
    return prof

# Warm up (lazy imports, whylogs' first use): the baseline holds no data.
warm = profile("warm-up", make(1000, 99))
DatasetProfileView.deserialize(warm.view().serialize())
baseline = peak_mb()
mode = sys.argv[1]
if mode == "whole":
    data = make(int(sys.argv[2]), 0)
    start = time.process_time()
    profile("whole", data)
elif mode == "shard":
    rows, index, out = int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    data = make(rows, index)
    start = time.process_time()
    out.write_bytes(profile("shard", data).view().serialize())
else:
    paths = [Path(p) for p in sys.argv[2:]]
    start = time.process_time()
    with whylogs_profile("merged", deck=False, directory=tempfile.mkdtemp()) as prof:
        for path in paths:
            prof.log(DatasetProfileView.deserialize(path.read_bytes()))
seconds = time.process_time() - start
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb() - baseline}))
"""


def measure(*args: str) -> dict[str, float]:
    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "1", "FLYTE_CTX_TRACKING_MODE": ""}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, *args], capture_output=True, text=True, check=True, cwd=REPO, env=env
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def best(samples: list[dict[str, float]]) -> dict[str, float]:
    return {"seconds": min(s["seconds"] for s in samples), "peak_mb": min(s["peak_mb"] for s in samples)}


def main() -> None:
    whole = best([measure("whole", str(ROWS)) for _ in range(ROUNDS)])
    print(f"{ROWS:,} rows; 4 columns (float, int, string, bool); CPU seconds, peak RSS above baseline")
    print(f"one profile of all rows: {whole['seconds']:.2f} CPU-s, peak {whole['peak_mb']:.0f} MB")
    print(
        f"{'shards':>6} | {'shards CPU-s':>12} | {'merge CPU-s':>11} | {'merge / whole':>13} | "
        f"{'throughput vs whole':>19} | {'peak per shard MB':>17} | {'peak shard / whole':>18}"
    )
    for shards in SHARDS:
        with tempfile.TemporaryDirectory() as folder:
            paths = [str(Path(folder) / f"shard-{index}.bin") for index in range(shards)]
            parts = [measure("shard", str(ROWS // shards), str(index), path) for index, path in enumerate(paths)]
            merge = best([measure("merge", *paths) for _ in range(ROUNDS)])
        shard_seconds = sum(part["seconds"] for part in parts)
        shard_peak = max(part["peak_mb"] for part in parts)
        total = shard_seconds + merge["seconds"]
        print(
            f"{shards:>6} | {shard_seconds:>12.2f} | {merge['seconds']:>11.3f} | "
            f"{merge['seconds'] / whole['seconds']:>12.1%} | {whole['seconds'] / total:>18.2f}x | "
            f"{shard_peak:>17.1f} | {shard_peak / whole['peak_mb']:>17.2f} (1/{shards} = {1 / shards:.2f})"
        )


if __name__ == "__main__":
    main()
