"""Argument checks shared by every session: fail early, naming the bad value and what is accepted."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable


def check_choice(owner: str, name: str, value: object, accepted: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        choices = ", ".join(repr(choice) for choice in accepted)
        raise ValueError(f"{owner}: {name}={value!r} is not supported; use one of {choices}")


def check_str(owner: str, name: str, value: object, *, optional: bool = True, non_empty: bool = False) -> None:
    """Raise ``TypeError`` unless ``value`` is a str (or None when ``optional``); ``ValueError`` if
    ``non_empty`` and it is blank."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        accepted = "a str or None" if optional else "a str"
        raise TypeError(f"{owner}: {name}={value!r} is not accepted; pass {accepted}")
    if non_empty and not value.strip():
        raise ValueError(f"{owner}: {name}={value!r} is not accepted; pass a non-empty string")


def check_url(owner: str, name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is an http(s) URL."""
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ValueError(f"{owner}: {name}={value!r} is not a URL; pass the server's address (https://...)")


def check_str_list(owner: str, name: str, value: object, *, allow_str: bool = False) -> list[str] | None:
    """``value`` as a list of str (None stays None); ``TypeError`` for anything else.

    ``allow_str`` accepts a single str as a one-element list (Neptune's ``tags="x"``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        if allow_str:
            return [value]
    elif isinstance(value, Iterable):
        items = list(value)
        if all(isinstance(item, str) for item in items):
            return items
    accepted = "a str or a list of str" if allow_str else "a list of str"
    raise TypeError(f"{owner}: {name}={value!r} is not accepted; pass {accepted}")


def check_bool(owner: str, name: str, value: object) -> bool:
    """``value`` when it is a bool, else ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name}={value!r} is not accepted; pass True or False")
    return value


def check_positive_int(owner: str, name: str, value: object) -> int:
    """``value`` when it is an int of at least 1 (not a bool), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name}={value!r} is not accepted; pass a positive integer")
    return value


def shorten_id(value: str, limit: int) -> str:
    """``value`` if it fits in ``limit`` characters, else a readable head and a hash of the whole
    (deterministic, so the same long pod name always gives the same id)."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return f"{value[: limit - len(digest) - 1].rstrip('-')}-{digest}"


def file_stem(name: str, default: str) -> str:
    """``name`` reduced to characters safe in a file name on every platform (``default`` if none are)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or default
