"""The decorator adapter: a session's parameters as a flytekit-compatible task decorator.

Adapters hold no lifecycle: each call of the decorated function runs inside the session the
adapter built at decoration time (so bad arguments fail there, not at run time). Being a flytekit
``ClassDecorator`` lets each integration return the console-link config flytekit's plugins return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from flytekit.core.utils import ClassDecorator

from ._session import Session, refuse_generator_function


def _is_flyte_task(obj: object) -> bool:
    from flytekit.core.base_task import Task

    return isinstance(obj, Task)


class SessionDecorator(ClassDecorator):  # type: ignore[misc]
    """Base of ``wandb_init``, ``comet_ml_login``, ``neptune_init_run`` and ``memray_profiling``.

    Usable as ``@x`` and ``@x(...)``, below ``@task`` or on plain (sync or async) functions.
    Subclasses implement :meth:`_make_session` and, for console links, :meth:`get_extra_config`.
    """

    decorator_name: ClassVar[str] = "decorator"

    def __init__(self, task_function: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        if _is_flyte_task(task_function):
            name = self.decorator_name
            raise TypeError(
                f"@{name} was applied to a Flyte task object; put it below @task instead:\n"
                f"    @task\n    @{name}(...)\n    def my_task(...): ..."
            )
        refuse_generator_function(f"@{self.decorator_name}", task_function)
        self.session: Session[Any] = self._make_session(**kwargs)
        super().__init__(task_function, **kwargs)

    def _make_session(self, **kwargs: Any) -> Session[Any]:
        """Build (and so validate) the session every call of the function will run in."""
        raise NotImplementedError

    def _session_for_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Session[Any]:
        """The session for one call; override when a parameter depends on the call's arguments."""
        return self.session

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Run the decorated function inside the session."""
        # The session's own decorator runs the call: sync or async, one lifecycle.
        return self._session_for_call(args, kwargs)(self.task_function)(*args, **kwargs)

    def get_extra_config(self) -> dict[str, str]:
        """Config flytekit attaches to the task template (console links); none by default."""
        return {}
