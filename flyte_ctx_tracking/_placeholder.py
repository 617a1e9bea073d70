"""Stand-ins for public names whose integration has not landed yet."""

from __future__ import annotations

from typing import Any, NoReturn


def not_implemented(name: str) -> Any:
    """A callable that raises a clear NotImplementedError naming ``name``."""

    def placeholder(*args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(f"flyte_ctx_tracking.{name} is not implemented yet in this version")

    placeholder.__name__ = placeholder.__qualname__ = name
    placeholder.__doc__ = f"``{name}``: not implemented yet in this version."
    return placeholder
