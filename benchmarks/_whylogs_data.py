"""The data the whylogs benchmarks profile, and their memory probe; imported by their worker scripts
(which run from the repository's root, so ``benchmarks`` is importable there)."""

from __future__ import annotations

import resource

import numpy as np
import pandas as pd

STRINGS = np.array(["fr", "de", "it", "es"], dtype=object)


def make(rows: int, seed: int) -> pd.DataFrame:
    """``rows`` rows of 4 columns: float, int, string, bool."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(100.0, 10.0, rows),
            "items": rng.integers(0, 100, rows),
            "country": STRINGS[rng.integers(0, 4, rows)],
            "flag": rng.random(rows) < 0.1,
        }
    )


def peak_mb() -> float:
    """This process's peak RSS so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
