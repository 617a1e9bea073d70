"""`make bench`: set up the anchor plugins' venvs (benchmark-only), then run every benchmark once.

The flytekit plugins we compare against are installed only into `benchmarks/.venv-<name>/`, never
into the project's `.venv`, pinned to the same flytekit and backend versions as ours. The exception is
flytekitplugins-mlflow, a dev dependency (a test runs its documented usage), so `bench_mlflow` compares
in the project's `.venv`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ANCHOR_VENVS = {
    "wandb": ["flytekitplugins-wandb", "flytekit==1.16.*", "wandb==0.31.*"],
    "comet": ["flytekitplugins-comet-ml", "flytekit==1.16.*", "comet_ml==3.58.*"],
    "neptune": ["flytekitplugins-neptune", "flytekit==1.16.*", "neptune==1.14.*"],
}
BENCHMARKS = [
    *("bench_core", "bench_wandb", "bench_comet", "bench_neptune", "bench_mlflow", "bench_memray"),
    *("bench_whylogs", "bench_whylogs_shards", "bench_whylogs_spark"),
]


def ensure_anchor_venv(name: str, requirements: list[str]) -> None:
    venv = HERE / f".venv-{name}"
    if (venv / "bin" / "python").exists():
        return
    print(f"-- creating {venv.name} for the flytekitplugins-{name} comparison", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements, "-e", str(ROOT)], check=True)


def main() -> None:
    for name, requirements in ANCHOR_VENVS.items():
        ensure_anchor_venv(name, requirements)
    for bench in BENCHMARKS:
        print(f"\n===== {bench} =====", flush=True)
        subprocess.run([sys.executable, str(HERE / f"{bench}.py")], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
