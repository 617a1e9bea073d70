"""Secrets: resolve a flytekit ``Secret`` or a callable to its value, and keep that value out of sight.

A secret's value is only ever handed to the backend call that needs it. It never enters a repr,
a warning, an exception message, a deck or run metadata: :func:`redact` scrubs any text the
library is about to show that could carry it (backend error messages often echo their input).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Union
from urllib.parse import quote

from ._flyte import is_flyte_secret, read_flyte_secret

if TYPE_CHECKING:
    from flytekit import Secret

__all__ = ["SecretSpec", "describe_secret", "redact", "resolve_secret", "scrub_exception_chain", "validate_secret"]

SecretSpec = Union["Secret", Callable[[], str], None]
"""What ``secret=`` accepts: a flytekit ``Secret``, a callable returning the value, or ``None``."""

_MASK = "***"
_MIN_SECRET = 4  # shorter values would mask ordinary text, and are no secret anyway
# A run of base64 (standard or URL-safe) long enough to hold a key.
_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")


def validate_secret(secret: object, *, owner: str) -> None:
    """Raise ``TypeError`` naming the bad value unless ``secret`` is a ``Secret``, a callable or None."""
    if secret is None or is_flyte_secret(secret) or callable(secret):
        return
    raise TypeError(
        f"{owner}: secret={type(secret).__name__} is not accepted; pass a flytekit Secret(group=..., key=...), "
        "a callable that returns the key as a string, or None to use the backend's own login. "
        "(A plain string would put the key in your code: put it in a Flyte secret instead.)"
    )


def describe_secret(secret: object) -> str:
    """A printable description of where a secret comes from, never its value."""
    if secret is None:
        return "None"
    if is_flyte_secret(secret):
        group = getattr(secret, "group", None)
        key = getattr(secret, "key", None)
        return f"Secret(group={group!r}, key={key!r})"
    return f"<callable {getattr(secret, '__qualname__', type(secret).__name__)}>"


def resolve_secret(secret: SecretSpec) -> str | None:
    """The secret's value, or ``None`` when it is not set where a Flyte pod or a laptop would have it.

    A ``Secret`` resolves through the Flyte context's secrets manager, in remote and local runs
    alike: it reads the environment variables and files a Flyte pod mounts (``_FSEC_<GROUP>_<KEY>``),
    and locally also the bare ``<GROUP>_<KEY>`` variable. A missing secret is not an error here: the
    caller falls back to the backend's own login, or to offline mode.

    Raises:
        TypeError: a callable returned something other than a non-empty string.
    """
    if secret is None:
        return None
    if is_flyte_secret(secret):
        return read_flyte_secret(secret)
    value = secret()  # type: ignore[operator]
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"the secret callable {describe_secret(secret)} returned {type(value).__name__}; "
            "it must return the key as a str (or None when there is none)"
        )
    return value.strip() or None


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret replaced by ``***``: as it is, URL-encoded, and inside any base64
    token (HTTP Basic auth sends ``base64("api:<key>")``, and servers echo it back)."""
    values = [value for value in secrets if value and len(value) >= _MIN_SECRET]
    if not values:
        return text
    for value in values:
        for form in {value, quote(value, safe="")}:
            text = text.replace(form, _MASK)

    def scrub_token(match: re.Match[str]) -> str:
        token = match.group(0)
        decoded = _b64decode(token)
        if decoded is not None and any(value.encode() in decoded for value in values):
            return _MASK
        return token

    return _BASE64_TOKEN.sub(scrub_token, text)


def _b64decode(token: str) -> bytes | None:
    """``token`` decoded as base64 in the alphabet it uses (standard or URL-safe), or None."""
    padded = token + "=" * (-len(token) % 4)
    if "-" in token or "_" in token:
        padded = padded.replace("-", "+").replace("_", "/")  # URL-safe: the same bytes, other symbols
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def scrub_exception_chain(error: BaseException, *secrets: str | None) -> None:
    """Replace ``secret`` in the messages of ``error`` and of every exception it was caused by.

    Backend errors often echo the key they were given, and chained exceptions are printed in full
    by tracebacks and error reporters. Scrubs ``args`` and string attributes in place (the
    exceptions are the backend's, about to be reported as ours).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            current.args = tuple(redact(arg, *secrets) if isinstance(arg, str) else arg for arg in current.args)
            for name, value in list(vars(current).items()):
                if isinstance(value, str) and redact(value, *secrets) != value:
                    setattr(current, name, redact(value, *secrets))
        except Exception:  # an exception type that refuses new attributes: its message stays as is
            pass
        current = current.__cause__ or current.__context__
