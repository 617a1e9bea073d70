"""The seam around the core: the registry, the package's exports, the module layout, the decorator
adapter's attributes, and closing a handle exactly once when blocks end in other threads."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import flyte_ctx_tracking
from flyte_ctx_tracking import TrackingSession, current_run
from flyte_ctx_tracking._registry import builtin_modules, integrations
from tests.fake_backend import FakeRun, FakeSession

PACKAGE = Path(flyte_ctx_tracking.__file__).parent
REPO = PACKAGE.parent
OFFLINE: dict[str, Any] = {"mode": "offline"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, only_for_type_checking)`` of every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            checking.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in checking) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((module, id(node) in checking))
    return found


def test_every_shipped_integration_registers_its_kind_with_an_extra_of_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    shipped = {
        kind: found for kind, found in integrations().items() if found.session_class.__module__.startswith(PACKAGE.name)
    }
    assert set(shipped) == {"wandb", "comet", "neptune", "mlflow", "memray", "whylogs"}
    for kind, integration in shipped.items():
        assert integration.extra in extras, kind
        assert integration.extra in extras["all"][0], kind  # "flyte-ctx-tracking[wandb,comet,...]"


def test_the_package_exports_are_the_core_names_and_each_integrations_all() -> None:
    exported = set(flyte_ctx_tracking.__all__)
    for module_name in builtin_modules():
        module = __import__(module_name, fromlist=["__all__"])
        assert set(module.__all__) <= exported, module_name
    assert {"current_run", "TrackingSession", "SessionDecorator", "wandb_session", "whylogs_profile"} <= exported
    for name in exported - {"WhylogsDatasetProfileTransformer"}:
        assert getattr(flyte_ctx_tracking, name) is not None


def test_the_names_type_checkers_see_are_exactly_the_exports() -> None:
    """The one hand-written list (for type checkers) cannot drift from the registry's exports."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    declared: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if isinstance(child, ast.ImportFrom):
                    declared.update(alias.asname or alias.name for alias in child.names)
    assert declared == set(flyte_ctx_tracking.__all__)


def test_a_session_class_outside_the_package_registers_a_kind_of_its_own() -> None:
    assert integrations()["fake"].session_class is FakeSession
    with FakeSession(**OFFLINE) as run:
        assert current_run("fake") is run
    with pytest.raises(ValueError, match=r"kind='nope'.*'fake'"):
        current_run("nope")


def test_a_kind_taken_by_another_class_is_refused() -> None:
    with pytest.raises(ValueError, match="'fake' is already registered by tests.fake_backend.FakeSession"):

        class Impostor(TrackingSession[FakeRun], kind="fake"):
            pass


def test_importing_the_package_imports_neither_flytekit_nor_a_backend() -> None:
    code = (
        "import sys, flyte_ctx_tracking\n"
        "names = ('flytekit', 'wandb', 'comet_ml', 'neptune', 'memray', 'whylogs', 'pyspark', "
        "'flytekitplugins.spark')\n"
        "print(sorted(m for m in names if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_only_the_boundary_module_imports_flytekit() -> None:
    # The type transformer extends flytekit's type engine: that is the one other place, by nature.
    allowed = {PACKAGE / "_flyte.py", PACKAGE / "sessions" / "whylogs" / "_transformer.py"}
    for path in PACKAGE.rglob("*.py"):
        runtime = [
            module for module, typing_only in _imports(path) if module.startswith("flytekit") and not typing_only
        ]
        assert path in allowed or not runtime, f"{path.relative_to(REPO)} imports {runtime}"


def test_decks_are_html_only_and_the_core_never_imports_an_integration() -> None:
    for path in (PACKAGE / "decks").glob("*.py"):
        runtime = [module for module, typing_only in _imports(path) if module.startswith(".") and not typing_only]
        assert set(runtime) <= {".._types"}, f"{path.name} imports {runtime}"
    for path in PACKAGE.glob("_*.py"):
        runtime = [module for module, typing_only in _imports(path) if "sessions" in module and not typing_only]
        assert not runtime, f"{path.name} imports {runtime}"


def test_decorator_objects_expose_the_plugins_attributes() -> None:
    from flyte_ctx_tracking import comet_ml_login, memray_profiling, neptune_init_run, wandb_init

    wandb = wandb_init(project="p", entity="e", id="run-1")
    assert (wandb.project, wandb.entity, wandb.id, wandb.secret) == ("p", "e", "run-1", None)
    comet = comet_ml_login("proj", "ws", experiment_key="a" * 32)  # positional, as the plugin's function
    assert (comet.project_name, comet.workspace, comet.experiment_key) == ("proj", "ws", "a" * 32)
    neptune = neptune_init_run("ws/proj")
    assert (neptune.project, neptune.host) == ("ws/proj", "https://app.neptune.ai")
    memray = memray_profiling(memray_html_reporter="table", memray_reporter_args=["--leaks"])
    assert (memray.memray_html_reporter, memray.memray_reporter_args) == ("table", ["--leaks"])


def test_a_repr_names_the_sessions_own_arguments_and_never_a_secret_value() -> None:
    from flyte_ctx_tracking import wandb_session, whylogs_profile

    assert repr(wandb_session(project="fraud", secret=lambda: "k-123")).startswith("WandbSession(project='fraud', ")
    assert "k-123" not in repr(wandb_session(project="fraud", secret=lambda: "k-123"))
    assert (
        repr(whylogs_profile("batch", fail_on_constraints=False)) == "WhylogsProfileSession(name='batch', mode='auto')"
    )


def test_a_handle_is_closed_once_and_never_another_threads_when_a_block_ends_elsewhere() -> None:
    """One session active in two threads; a generator's block (entered in one of them) is closed from
    a third thread: exactly the generator's handle closes, once, and the other thread's stays open."""
    session = FakeSession(**OFFLINE)
    entered, release = threading.Barrier(2), threading.Event()
    held: list[FakeRun] = []

    def holder():  # type: ignore[no-untyped-def]
        with session as run:
            yield run

    def other_thread() -> None:
        with session as run:
            held.append(run)
            entered.wait(timeout=30)
            release.wait(timeout=30)

    worker = threading.Thread(target=other_thread)
    worker.start()
    generator = holder()
    generator_run = next(generator)
    entered.wait(timeout=30)
    closer = threading.Thread(target=generator.close)
    closer.start()
    closer.join(timeout=30)
    assert generator_run.closed and not held[0].closed
    release.set()
    worker.join(timeout=30)
    assert held[0].closed
    assert [run.closed for run in session.opened] == [True, True]
    assert current_run("fake") is None
