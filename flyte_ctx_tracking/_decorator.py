"""The one decorator adapter: a session class as a flytekit-compatible task decorator.

An integration's decorator is a subclass naming its session class and, for Flyte console links,
returning the config flytekit's plugin returns::

    class wandb_init(SessionDecorator, session=WandbSession):
        def get_extra_config(self) -> dict[str, str]: ...

Adapters hold no lifecycle: each call of the decorated function runs inside the session the
adapter built at decoration time (so bad arguments fail there, not at run time). The adapter
exposes the session's attributes (``.project``, ``.secret``, ...) as flytekit's plugin decorator
objects do, and decorating an ``async def`` gives an object flytekit and ``inspect`` see as one.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from . import _flyte
from ._session import Session, refuse_flyte_task, refuse_generator_function

__all__ = ["SessionDecorator"]


class SessionDecorator:
    """The task decorator over a session (flytekit's ``ClassDecorator`` protocol).

    Base of ``wandb_init``, ``comet_ml_login``, ``neptune_init_run``, ``memray_profiling``...

    Usable as ``@x`` and ``@x(...)``, below ``@task`` or on plain (sync or async) functions. A
    subclass declares its session class (``class my_init(SessionDecorator, session=MySession)``)
    and, for console links, overrides :meth:`get_extra_config`. Positional arguments are the
    session's own positional parameters, unless the subclass lists others in ``positional`` (the
    order of the flytekit plugin it replaces).
    """

    LINK_TYPE_KEY: ClassVar[str] = "link_type"
    """The key of flytekit's console-link config that names the kind of link."""
    PORT_KEY: ClassVar[str] = "port"
    session_class: ClassVar[type[Session[Any]]]
    """The session every call of the decorated function runs in."""
    positional: ClassVar[tuple[str, ...] | None] = None
    """The names positional arguments bind to (default: the session's positional parameters)."""

    session: Session[Any]

    def __init_subclass__(cls, *, session: type[Session[Any]] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if session is not None:
            cls.session_class = session

    def __init__(self, task_function: Callable[..., Any] | None = None, *args: Any, **kwargs: Any) -> None:
        if task_function is not None and not callable(task_function):
            # Called with arguments, the first positional one is the session's (a project name),
            # as in flytekit plugins whose decorator is a function: @neptune_init_run("ws/project").
            args, task_function = (task_function, *args), None
        name = type(self).__name__
        refuse_flyte_task(name, task_function)
        refuse_generator_function(f"@{name}", task_function)
        kwargs = self._bind(args, kwargs)
        self.session = self._make_session(**kwargs)
        # flytekit's ClassDecorator protocol, without importing flytekit before a task needs it.
        _flyte.recognise_task_decorator(SessionDecorator)
        self.task_function: Callable[..., Any] | None = task_function
        self.decorator_kwargs = kwargs
        if task_function is not None:
            functools.wraps(task_function)(self)
            self.session = self.session._for_function(task_function)
            if inspect.iscoroutinefunction(task_function):
                _look_like_a_coroutine_function(self, task_function)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Positional arguments by name, so flytekit's re-creation (``cls(func, **kwargs)``) keeps them."""
        if not args:
            return kwargs
        names = self.positional
        if names is None:
            parameters = inspect.signature(self.session_class.__init__).parameters.values()
            names = tuple(p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD and p.name != "self")
        if len(args) > len(names):
            raise TypeError(
                f"{type(self).__name__}() takes at most {len(names)} positional arguments ({', '.join(names)})"
            )
        bound = dict(zip(names, args, strict=False))
        twice = sorted(set(bound) & set(kwargs))
        if twice:
            raise TypeError(f"{type(self).__name__}() got multiple values for {', '.join(twice)}")
        return {**bound, **kwargs}

    def _make_session(self, **kwargs: Any) -> Session[Any]:
        """Build (and so validate) the session every call of the function will run in."""
        return self.session_class(**kwargs)

    def _session_for_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Session[Any]:
        """The session for one call; override when a parameter depends on the call's arguments."""
        return self.session

    def __getattr__(self, name: str) -> Any:
        # The attributes flytekit's plugin decorators have (.project, .secret, .experiment_key...)
        # are the session's.
        session = self.__dict__.get("session")
        if session is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(session, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the decorated function in the session; used with arguments, decorate the function given."""
        if self.task_function is not None:
            return self.execute(*args, **kwargs)
        return type(self)(args[0], **self.decorator_kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Run the decorated function inside the session."""
        # The session's own decorator runs the call: sync or async, one lifecycle.
        assert self.task_function is not None
        return self._session_for_call(args, kwargs)(self.task_function)(*args, **kwargs)

    def get_extra_config(self) -> dict[str, str]:
        """Config flytekit attaches to the task template (console links); none by default."""
        return {}


def _look_like_a_coroutine_function(decorator: object, function: Callable[..., Any]) -> None:
    """Make ``inspect.iscoroutinefunction(decorator)`` true, as it is for ``function``.

    flytekit makes an async task only of what ``inspect`` calls a coroutine function. Python 3.12
    has a marker for that; before, ``inspect`` takes an object with a function's code attributes
    as a function (its signature still comes from ``__wrapped__``).
    """
    if sys.version_info >= (3, 12):
        inspect.markcoroutinefunction(decorator)  # type: ignore[arg-type]
    for attribute in ("__code__", "__defaults__", "__kwdefaults__"):
        setattr(decorator, attribute, getattr(function, attribute, None))
