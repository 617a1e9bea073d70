"""The ``flytekit.plugins`` entry point: whylogs profiles become a Flyte type when whylogs is imported.

flytekit imports every ``flytekit.plugins`` entry point at the end of ``import flytekit``, and an
exception here would break that import. So this module is cheap (no whylogs, no numpy, no
pandas: whylogs alone would add about 0.3 s to every ``import flytekit``) and never raises:

* whylogs already imported: register :class:`WhylogsDatasetProfileTransformer` now;
* whylogs installed but not imported: watch for its import (a one-shot ``sys.meta_path`` hook). When
  something imports whylogs, the hook applies the numpy-2 step first (see ``_compat``),
  lets whylogs load unchanged, then registers the transformer, before a task can annotate a
  ``DatasetProfileView``;
* whylogs not installed: nothing happens.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import warnings
from collections.abc import Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["install"]

_TARGET = "whylogs"
_TRANSFORMER_MODULE = __name__.rpartition(".")[0] + "._transformer"
_lock = threading.Lock()


def _register_quietly() -> None:
    """Register the transformer; a failure is one warning, never an exception in the user's import."""
    if _TRANSFORMER_MODULE in sys.modules:  # imported (or being imported): it registers itself
        return
    try:
        from ._transformer import register

        register()
    except Exception as error:
        warnings.warn(
            f"flyte_ctx_tracking: could not register the whylogs DatasetProfileView type with flytekit "
            f"({type(error).__name__}: {error}); import flyte_ctx_tracking.sessions.whylogs._transformer to see why",
            stacklevel=2,
        )


class _RegisteringLoader(Loader):
    """Runs whylogs' own loader unchanged, then registers the transformer."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # whylogs sees its real loader (resources, reloads); this wrapper is gone once it ran.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _register_quietly()


class _WhylogsImportHook(MetaPathFinder):
    """One-shot: on the first import of whylogs, apply the numpy-2 step and register the transformer."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != _TARGET:
            return None
        _uninstall(self)
        try:
            from ._compat import ensure_numpy2_compat

            ensure_numpy2_compat()
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            spec.loader = _RegisteringLoader(spec.loader)
            return spec
        except Exception:
            return None  # let the normal import machinery (and its errors) take over


_hook: _WhylogsImportHook | None = None


def _uninstall(hook: _WhylogsImportHook) -> None:
    global _hook
    with _lock:
        if hook in sys.meta_path:
            sys.meta_path.remove(hook)
        if _hook is hook:
            _hook = None


def install() -> None:
    """Register now if whylogs is imported, else once it is; idempotent and never raises."""
    global _hook
    try:
        if sys.modules.get(_TARGET) is not None:
            _register_quietly()
            return
        with _lock:
            if _hook is not None or importlib.util.find_spec(_TARGET) is None:
                return
            _hook = _WhylogsImportHook()
            sys.meta_path.insert(0, _hook)
    except Exception:  # never break flytekit's plugin loading
        return


install()
