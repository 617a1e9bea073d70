"""Foundation benchmarks: the import cost and the cost of a nested (reentrant) enter+exit.

Run: .venv/bin/python benchmarks/bench_core.py
Targets: importing flyte_ctx_tracking after flytekit adds at most 15% to `import flytekit`;
a nested enter+exit costs at most 5 microseconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _util import best_of, fresh_import_seconds


def main() -> None:
    # flytekit imports our `flytekit.plugins` entry point (the whylogs type registration) while it
    # imports, so "import flytekit, then flyte_ctx_tracking" would hide our cost inside flytekit's.
    # Instead: what importing our package costs in a fresh interpreter, against import flytekit.
    flytekit = fresh_import_seconds("import flytekit")
    ours_alone = fresh_import_seconds("import flyte_ctx_tracking")
    entry_point = fresh_import_seconds("import flyte_ctx_tracking.sessions.whylogs._plugin")
    print(f"import flytekit:                          {flytekit * 1000:8.1f} ms (includes our entry point)")
    print(
        f"import flyte_ctx_tracking alone:          {ours_alone * 1000:8.2f} ms  "
        f"({ours_alone / flytekit:.2%} of import flytekit; imports no backend, no flytekit)"
    )
    print(f"our flytekit.plugins entry point alone:   {entry_point * 1000:8.2f} ms")

    from tests.fake_backend import FakeSession

    session = FakeSession(mode="offline")
    with session:
        number = 100_000

        def nested() -> None:
            with session:
                pass

        per_call = best_of(nested, number=number)
    print(f"nested (reentrant) enter+exit:            {per_call * 1e6:8.2f} us")


if __name__ == "__main__":
    main()
