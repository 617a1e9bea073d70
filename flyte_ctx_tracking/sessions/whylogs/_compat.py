"""whylogs on numpy 2: the one compatibility step, in one place.

whylogs 1.6.4 (its last release) was written for numpy 1. The only numpy name it uses that numpy
2.0 removed (NEP 52) is ``np.unicode_``, in ``whylogs/core/datatypes.py``: every ``why.log`` and
``DatasetProfile.track`` reaches it and fails with ``AttributeError: np.unicode_ was removed in the
NumPy 2.0 release``. (flytekitplugins-whylogs answers by pinning ``numpy<2`` for the whole
environment.) Every other path this library uses was checked on numpy 2.4 and pandas 3.1 and needs
nothing: profiling DataFrames and dict rows, merging, serializing ``DatasetProfileView`` to bytes and
back, drift scores, constraints, and the ``NotebookProfileVisualizer`` reports.

The step restores numpy's own alias, ``numpy.unicode_ = numpy.str_``, only when it is missing. On
numpy 1 ``np.unicode_`` *was* ``np.str_`` (the same object), so whylogs sees exactly what it was
written for, and no other numpy behaviour changes. It runs before whylogs is first imported: this
library imports whylogs only through :func:`import_whylogs`, and its ``flytekit.plugins`` entry point
applies it when anything else in a flytekit process imports whylogs.

whylogs' sketches (the ``whylogs_sketching`` extension: KLL, HLL, frequent items) are built with a
pybind11 that initialises its numpy support lazily, on the first call that passes a numpy array,
in a C++ function-local static: ``npy_api::get()`` runs ``import numpy.core.multiarray`` once,
under the C++ runtime's one-time-initialisation guard, which knows nothing of the GIL. On numpy 2
that import is a real import of a compatibility module, during which the GIL is released; a second
thread then enters a sketch with the GIL held, waits on the guard, and the first thread waits for
the GIL: the process hangs. :func:`prepare_whylogs` runs that first use once per process, under a
lock, before any profile tracks data, so first uses from many threads at once cannot deadlock.
"""

from __future__ import annotations

import importlib
import threading
from contextlib import suppress
from types import ModuleType

__all__ = ["REMOVED_ALIASES", "ensure_numpy2_compat", "import_whylogs", "prepare_whylogs"]

REMOVED_ALIASES: dict[str, str] = {"unicode_": "str_"}
"""numpy names whylogs still uses that numpy 2 removed -> the numpy name they always aliased."""


def ensure_numpy2_compat() -> list[str]:
    """Restore the numpy aliases whylogs needs, if missing. Idempotent; returns the names it added."""
    import numpy

    added = []
    for alias, target in REMOVED_ALIASES.items():
        if alias not in vars(numpy):  # ``hasattr`` would go through numpy 2's module __getattr__ and fail
            setattr(numpy, alias, getattr(numpy, target))
            added.append(alias)
    return added


def import_whylogs() -> ModuleType:
    """Import whylogs after the numpy-2 step; the one way this library imports it."""
    ensure_numpy2_compat()
    return importlib.import_module("whylogs")


_prepared = False
_prepare_lock = threading.Lock()


def prepare_whylogs() -> ModuleType:
    """Import whylogs and, once per process, run its native one-time initialisation under a lock.

    Call it before a profile first tracks data (never during an import: it profiles a few rows).
    Concurrent callers wait for the first one; later calls only check a flag. It needs no disk
    (a read-only pod must still judge its data), and a failure is left for the real call to report.
    """
    global _prepared
    whylogs = import_whylogs()
    if not _prepared:
        with _prepare_lock:
            if not _prepared:
                with suppress(Exception):
                    _first_use()
                _prepared = True
    return whylogs


def _first_use() -> None:
    """Go once through what this library asks of whylogs' native code in memory: tracking a dict
    row and a DataFrame of each value type (the first numpy array handed to a sketch initialises
    pybind11's numpy support), then reading the sketches back (quantiles, cardinality, frequent items)."""
    from whylogs.core import DatasetProfile

    row = {"integral": 1, "fractional": 0.5, "string": "a", "boolean": True, "null": None}
    profile = DatasetProfile()
    profile.track(row=row)
    try:
        import pandas
    except ImportError:  # whylogs profiles dict rows without pandas
        return
    profile.track(pandas=pandas.DataFrame({name: [value, value] for name, value in row.items()}))
    profile.view().to_pandas()
