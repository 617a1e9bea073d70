"""The open registry of integrations: which session kinds exist, and what the package exports.

A session class declares itself by subclassing a public base with class keywords::

    class MySession(TrackingSession[MyRun], kind="mine", display_name="Mine", backend="mine_client"):
        ...

Defining the class registers it; ``current_run("mine")`` then knows the kind. The integrations
that ship with the package are the modules (or subpackages) of :mod:`flyte_ctx_tracking.sessions`;
each one's ``__all__`` is what ``flyte_ctx_tracking`` exports from it. They are found by listing
that folder and imported only when a name or a kind is asked for (importing one imports no backend).
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["Integration", "builtin_exports", "find", "integrations", "kinds", "register"]

SESSIONS_PACKAGE = "flyte_ctx_tracking.sessions"


@dataclass(frozen=True)
class Integration:
    """One registered integration."""

    kind: str
    """The name ``current_run`` knows it by."""
    display_name: str
    """How messages and decks name the backend."""
    backend_module: str
    """The module that must be importable to enter its sessions."""
    extra: str | None
    """The pip extra of ``flyte-ctx-tracking`` that installs the backend, if the package has one."""
    session_class: type[Any]
    """The session class that declared the kind."""


_INTEGRATIONS: dict[str, Integration] = {}
_LOCK = threading.RLock()
_LOAD_LOCK = threading.Lock()
_builtin_loaded = False


def register(integration: Integration) -> None:
    """Record ``integration``; a kind taken by another class raises ``ValueError``.

    Defining the same class again (a module reloaded, a test module imported twice) replaces it.
    """
    with _LOCK:
        taken = _INTEGRATIONS.get(integration.kind)
        if taken is not None and _qualified(taken.session_class) != _qualified(integration.session_class):
            raise ValueError(
                f"session kind {integration.kind!r} is already registered by {_qualified(taken.session_class)}; "
                f"{_qualified(integration.session_class)} must declare a kind of its own"
            )
        _INTEGRATIONS[integration.kind] = integration


def _qualified(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def builtin_modules() -> list[str]:
    """The integration modules shipped in :mod:`flyte_ctx_tracking.sessions` (listed, not imported)."""
    package = importlib.import_module(SESSIONS_PACKAGE)
    return sorted(
        f"{SESSIONS_PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    )


def _load_builtin() -> None:
    global _builtin_loaded
    if _builtin_loaded:
        return
    # Importing a module registers its classes under _LOCK: loading must not hold that lock, or a
    # class defined in another thread's import would wait for this import, which waits for it.
    with _LOAD_LOCK:
        if not _builtin_loaded:
            for module in builtin_modules():
                importlib.import_module(module)
            _builtin_loaded = True


def integrations() -> Mapping[str, Integration]:
    """Every registered integration by kind: the shipped ones and any defined elsewhere."""
    _load_builtin()
    return MappingProxyType(dict(_INTEGRATIONS))


def kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(integrations())


def find(kind: str) -> Integration | None:
    """The integration of ``kind``, or None (shipped integrations are loaded on the first miss)."""
    found = _INTEGRATIONS.get(kind)
    if found is None and not _builtin_loaded:
        _load_builtin()
        found = _INTEGRATIONS.get(kind)
    return found


def builtin_exports() -> dict[str, str]:
    """Public name -> defining module, for every name in a shipped integration's ``__all__``."""
    exports: dict[str, str] = {}
    for module_name in builtin_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            if name in exports:
                raise RuntimeError(f"{module_name} and {exports[name]} both export {name!r}")
            exports[name] = module_name
    return exports
