"""Demo part: a whylogs profile of data read in chunks, with drift against last week and constraints."""

from __future__ import annotations

import numpy as np
import pandas as pd
from flytekit import task

from flyte_ctx_tracking import whylogs_profile


def _transactions(rows: int, *, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    country = rng.choice(np.array(["fr", "de", "it"], dtype=object), rows)
    country[::50] = None  # a few rows lost their country
    return pd.DataFrame({"amount": rng.gamma(2.0, 20.0 + shift, rows), "country": country})


def _rules() -> list[object]:
    from whylogs.core.constraints.factories import greater_than_number, no_missing_values

    return [greater_than_number(column_name="amount", number=0), no_missing_values(column_name="country")]


@task(enable_deck=True)
def whylogs_part() -> str:
    """Profile 5 chunks of today's data against last week's; one constraint fails, on purpose."""
    last_week = _transactions(5_000, seed=1)
    with whylogs_profile("transactions", reference=last_week, constraints=_rules(), interactive=False) as prof:
        for day in range(5):  # data larger than memory arrives one chunk at a time
            prof.log(_transactions(2_000, seed=10 + day, shift=8.0))
    drifted = [d.column for d in prof.drift or [] if d.category == "DRIFT"]
    passed = [c.name for c in prof.constraints or [] if c.passed]
    return "\n".join(
        [
            f"whylogs: profile 'transactions' folded {prof.rows:,} rows from {prof.chunks} chunks into one profile",
            f"  drift against last week: {', '.join(drifted) or 'none'}",
            f"  constraints passed: {'; '.join(passed) or 'none'}",
            f"  constraints failed: {'; '.join(prof.failed_constraints) or 'none'}"
            " (fail_on_constraints=True would fail the task here)",
            f"  profile saved to {prof.path}; decks: whylogs, whylogs drift, whylogs constraints",
        ]
    )
