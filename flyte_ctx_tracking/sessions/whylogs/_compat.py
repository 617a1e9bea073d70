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
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["REMOVED_ALIASES", "ensure_numpy2_compat", "import_whylogs"]

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
