"""Installation as documented works: the distributions are complete and install into a fresh venv.

``python -m build`` makes the sdist, then the wheel *from that sdist* (so a file missing from the
sdist is missing from the wheel too), in an isolated build environment as pip would. The checks:

* the build prints no deprecation warning (setuptools' warnings about ``pyproject.toml``);
* the wheel holds every file of the package (``py.typed``, every subpackage, any data file), the
  ``flytekit.plugins`` entry point, and metadata that matches ``pyproject.toml``;
* the sdist holds ``pyproject.toml``, the README, the CHANGELOG and the whole package;
* the wheel, with its ``memray`` extra, installs into a new, empty venv (no system site-packages),
  where ``import flytekit`` loads our plugin and a Flyte task profiled with ``memray_profile`` runs.

The install resolves the wheel's own ``Requires-Dist`` with pip, pinned (as constraints, never as
requirements) to the versions this test environment already has: the same packages, from the same
indexes and caches, so the venv costs seconds rather than a fresh resolution of flytekit's tree.
"""

from __future__ import annotations

import configparser
import email.parser
import fcntl
import importlib.metadata
import json
import os
import pwd
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from dataclasses import asdict, dataclass
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy (in the dev extra) depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "flyte_ctx_tracking"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
DIST_NAME = PROJECT["name"]
VERSION = PROJECT["version"]
STEM = f"{PACKAGE}-{VERSION}"  # the archives' normalized name-version
ENTRY_POINT = ("flytekit.plugins", "flyte_ctx_tracking_whylogs", "flyte_ctx_tracking.sessions.whylogs._plugin")
SUBPACKAGES = ("decks", "sessions", "sessions/memray", "sessions/whylogs")
# What the sdist must carry beside the package (license files are checked separately).
SDIST_FILES = ("pyproject.toml", "README.md", "CHANGELOG.md", "PKG-INFO")
LICENSE_PATTERNS = ("LICEN[CS]E*", "COPYING*", "NOTICE*", "AUTHORS*")  # setuptools' defaults
BUILD_TIMEOUT = 600
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 300
RESULT_MARKER = "PACKAGING-SMOKE-RESULT "


@dataclass(frozen=True)
class Built:
    wheel: str
    sdist: str
    output: str  # what `python -m build` printed, stdout and stderr


def _pip_env() -> dict[str, str]:
    """This environment with the real home: pip's user config (indexes) and cache live there.

    The suite's autouse fixture points HOME at a throwaway directory; pip and the build frontend
    must still see the machine's pip configuration, as a developer's shell does.
    """
    env = dict(os.environ)
    env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
    for name in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(name, None)
    return env


def _build(outdir: Path) -> Built:
    # Isolated (pip's default): the build needs setuptools>=77, which the dev venv need not have.
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(REPO)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=_pip_env(),
        cwd=outdir,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"python -m build failed ({proc.returncode}):\n{output[-8000:]}"
    wheels = sorted(outdir.glob("*.whl"))
    sdists = sorted(outdir.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, f"expected one wheel and one sdist in {sorted(outdir.iterdir())}"
    return Built(wheel=str(wheels[0]), sdist=str(sdists[0]), output=output)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One build per test session, shared by the xdist workers that run this module's tests."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return _build(tmp_path_factory.mktemp("dist"))
    # Workers share the parent of their base temp dirs, which is new for every session.
    shared = tmp_path_factory.getbasetemp().parent / "packaging-build"
    shared.mkdir(exist_ok=True)
    record = shared / "built.json"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.is_file():
            return Built(**json.loads(record.read_text()))
        outdir = shared / "dist"
        outdir.mkdir()
        result = _build(outdir)
        record.write_text(json.dumps(asdict(result)))
        return result


def _package_files() -> set[str]:
    """Every file of the package in the source tree, as paths relative to the repository."""
    files = set()
    for path in (REPO / PACKAGE).rglob("*"):
        relative = path.relative_to(REPO)
        if not path.is_file() or path.suffix in {".pyc", ".pyo"}:
            continue
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            continue
        files.add(relative.as_posix())
    return files


def _license_files() -> set[str]:
    return {path.name for pattern in LICENSE_PATTERNS for path in REPO.glob(pattern) if path.is_file()}


def _wheel_names(built: Built) -> list[str]:
    with zipfile.ZipFile(built.wheel) as wheel:
        return wheel.namelist()


def _wheel_text(built: Built, name: str) -> str:
    with zipfile.ZipFile(built.wheel) as wheel:
        return wheel.read(f"{STEM}.dist-info/{name}").decode("utf-8")


def _metadata(built: Built) -> Message:
    return email.parser.Parser().parsestr(_wheel_text(built, "METADATA"))


def _requirement(text: str) -> tuple[str, str, str]:
    """(extra, canonical name with extras, specifier): comparable across pyproject and METADATA."""
    requirement = Requirement(text)
    extra = ""
    if requirement.marker is not None:
        match = re.fullmatch(r'extra == "([^"]+)"', str(requirement.marker))
        assert match, f"unexpected marker in {text!r}"
        extra = match.group(1)
    extras = "".join(f"[{name}]" for name in sorted(requirement.extras))
    return extra, canonicalize_name(requirement.name) + extras, str(requirement.specifier)


# --- the build ---------------------------------------------------------------------------------


def test_build_prints_no_deprecation_warning(built: Built) -> None:
    flagged = [
        line
        for line in built.output.splitlines()
        if re.search(r"deprecat", line, re.IGNORECASE) or line.strip() == "!!" or "SetuptoolsWarning" in line
    ]
    assert not flagged, "the build warned:\n" + "\n".join(flagged) + "\n\nfull output:\n" + built.output[-8000:]


def test_archives_are_named_after_the_project(built: Built) -> None:
    assert Path(built.wheel).name == f"{STEM}-py3-none-any.whl"  # pure Python, any platform
    assert Path(built.sdist).name == f"{STEM}.tar.gz"
    import flyte_ctx_tracking

    assert flyte_ctx_tracking.__version__ == VERSION


# --- the wheel ---------------------------------------------------------------------------------


def test_wheel_holds_the_whole_package(built: Built) -> None:
    names = set(_wheel_names(built))
    missing = _package_files() - names
    assert not missing, f"files of the package missing from the wheel: {sorted(missing)}"
    for required in (
        f"{PACKAGE}/py.typed",
        *(f"{PACKAGE}/{subpackage}/__init__.py" for subpackage in SUBPACKAGES),
        f"{PACKAGE}/sessions/whylogs/_plugin.py",
    ):
        assert required in names, required
    # Nothing but the package and its metadata: no tests, no caches.
    stray = sorted(
        name for name in names if not name.startswith((f"{PACKAGE}/", f"{STEM}.dist-info/")) or "__pycache__" in name
    )
    assert not stray, f"unexpected files in the wheel: {stray}"
    assert _wheel_text(built, "top_level.txt").split() == [PACKAGE]
    for license_file in _license_files():
        assert f"{STEM}.dist-info/licenses/{license_file}" in names, license_file


def test_wheel_declares_the_flytekit_plugin_entry_point(built: Built) -> None:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # names are case-sensitive
    parser.read_string(_wheel_text(built, "entry_points.txt"))
    group, name, value = ENTRY_POINT
    assert parser.has_section(group), parser.sections()
    assert dict(parser[group]) == {name: value}


def test_wheel_declares_the_sync_command(built: Built) -> None:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # names are case-sensitive
    parser.read_string(_wheel_text(built, "entry_points.txt"))
    assert dict(parser["console_scripts"]) == {"flyte-ctx-tracking": "flyte_ctx_tracking._sync:main"}


def test_wheel_metadata_matches_pyproject(built: Built) -> None:
    metadata = _metadata(built)
    assert metadata["Name"] == DIST_NAME
    assert metadata["Version"] == VERSION
    assert metadata["Requires-Python"] is not None
    assert str(Requirement(f"x{metadata['Requires-Python']}").specifier) == str(
        Requirement(f"x{PROJECT['requires-python']}").specifier
    )
    # PEP 639: an SPDX expression, and neither the legacy License field nor a License classifier.
    assert metadata["License-Expression"] == PROJECT["license"] == "Apache-2.0"
    assert metadata["License"] is None
    classifiers = metadata.get_all("Classifier") or []
    assert classifiers == PROJECT["classifiers"]
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert "Typing :: Typed" in classifiers
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (REPO / PROJECT["readme"]).read_text(encoding="utf-8").strip()

    declared = sorted(_requirement(text) for text in metadata.get_all("Requires-Dist") or [])
    expected = sorted(
        [_requirement(text) for text in PROJECT["dependencies"]]
        + [
            _requirement(f'{text}; extra == "{extra}"')
            for extra, texts in PROJECT["optional-dependencies"].items()
            for text in texts
        ]
    )
    assert declared == expected
    assert sorted(metadata.get_all("Provides-Extra") or []) == sorted(PROJECT["optional-dependencies"])
    assert ("", "flytekit", "<2,>=1.16") in declared  # the only hard dependency
    assert [r for r in declared if r[0] == ""] == [("", "flytekit", "<2,>=1.16")]


# --- the sdist ---------------------------------------------------------------------------------


def test_sdist_holds_the_sources(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = {name.removeprefix(f"{STEM}/") for name in sdist.getnames() if name.startswith(f"{STEM}/")}
    missing = sorted({*SDIST_FILES, *_package_files(), *_license_files()} - names)
    assert not missing, (
        f"missing from the sdist: {missing} (files other than the package, the README and license files "
        "get into the sdist through MANIFEST.in)"
    )
    caches = sorted(name for name in names if "__pycache__" in name or name.endswith((".pyc", ".pyo")))
    assert not caches, caches
    assert not [name for name in names if name.split("/")[0] in {".venv", ".git", "build", "dist"}]


# --- a fresh venv --------------------------------------------------------------------------------

SMOKE_SCRIPT = textwrap.dedent(
    '''
    """Runs in the fresh venv: the installed wheel, imported and used the way the docs show."""

    import importlib.metadata
    import importlib.resources
    import importlib.util
    import json
    import sys

    import flyte_ctx_tracking

    result = {
        "package_file": flyte_ctx_tracking.__file__,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "version": importlib.metadata.version("flyte-ctx-tracking"),
        "py_typed": importlib.resources.files("flyte_ctx_tracking").joinpath("py.typed").is_file(),
        # `import flyte_ctx_tracking` imports no backend, not even flytekit
        "eager_imports": sorted(m for m in ("flytekit", "memray", "whylogs", "wandb") if m in sys.modules),
        "entry_points": sorted(
            f"{ep.name}={ep.value}" for ep in importlib.metadata.entry_points(group="flytekit.plugins")
        ),
        "memray_installed": importlib.util.find_spec("memray") is not None,
        "whylogs_installed": importlib.util.find_spec("whylogs") is not None,
    }

    import flytekit
    from flytekit import task, workflow

    result["plugin_loaded_by_flytekit"] = "flyte_ctx_tracking.sessions.whylogs._plugin" in sys.modules

    from flyte_ctx_tracking import current_run, memray_profile, whylogs_profile

    seen = {}


    def load(rows: int) -> dict:
        return {key: f"name-{key}" for key in range(rows)}


    @task(enable_deck=True)
    def build_features(rows: int) -> int:
        lookup = load(rows)  # not profiled
        with memray_profile("join", memray_html_reporter="table") as prof:
            seen["current_run_is_handle"] = current_run("memray") is prof
            joined = [(key, lookup[key], bytearray(1024)) for key in range(0, rows, 2)]  # the hot section
        seen.update(
            profiled=prof.profiled,
            peak_memory=prof.peak_memory,
            total_allocations=prof.total_allocations,
            top_sites=len(prof.top_sites),
            deck_title=prof.deck_title,
            report_kind=prof.report_kind,
        )
        return len(joined)


    @workflow
    def wf(rows: int) -> int:
        return build_features(rows=rows)


    result["workflow_output"] = wf(rows=10_000)
    result["task"] = seen

    # An extra that is not installed: entering its session says which extra to install.
    try:
        with whylogs_profile("batch"):
            result["missing_extra"] = None
    except ImportError as error:
        result["missing_extra"] = str(error)

    print("RESULT_MARKER" + json.dumps(result))
    '''
).replace("RESULT_MARKER", RESULT_MARKER)


def _constraints() -> str:
    """`name==version` for every distribution of this environment but ours: pins, not requirements."""
    pins: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or canonicalize_name(name) == canonicalize_name(DIST_NAME):
            continue
        pins.setdefault(canonicalize_name(name), f"{name}=={dist.version}")
    return "\n".join(sorted(pins.values())) + "\n"


def test_wheel_installs_into_a_fresh_venv_and_runs_a_flyte_task(built: Built, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # A new venv, no system site-packages; pip comes from this environment (`pip --python`), and the
    # venv gets its own pip too, as a user's venv has (flytekit's deck lists packages with it).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=RUN_TIMEOUT)
    python = venv / "bin" / "python"
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(_constraints())
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "--no-compile",
            "--constraint",
            str(constraints),
            f"{built.wheel}[memray]",
            "pip",
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env=_pip_env(),
        cwd=tmp_path,
        check=False,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout[-4000:]}\n{install.stderr[-4000:]}"

    script = tmp_path / "smoke" / "packaging_smoke.py"
    script.parent.mkdir()
    script.write_text(SMOKE_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    run = subprocess.run(
        [str(python), str(script)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        cwd=script.parent,  # not the repository: only the installed package is importable
        check=False,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    assert run.returncode == 0 and lines, f"the smoke task failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    result = json.loads(lines[-1].removeprefix(RESULT_MARKER))

    assert Path(result["package_file"]).is_relative_to(venv), result["package_file"]
    assert Path(result["prefix"]).resolve() == venv.resolve()
    assert result["version"] == VERSION
    assert result["py_typed"] is True
    assert result["eager_imports"] == []
    _group, name, value = ENTRY_POINT
    assert f"{name}={value}" in result["entry_points"]
    assert result["plugin_loaded_by_flytekit"] is True
    assert result["memray_installed"] is True  # the extra was honoured
    assert result["whylogs_installed"] is False  # and only that extra

    # The sync command is installed, and lists nothing to upload in an empty folder.
    command = subprocess.run(
        [str(venv / "bin" / "flyte-ctx-tracking"), "sync", str(script.parent), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        cwd=script.parent,
        check=False,
    )
    assert command.returncode == 0 and "(none found)" in command.stdout, command.stdout + command.stderr
    assert result["workflow_output"] == 5_000
    task = result["task"]
    assert task["current_run_is_handle"] is True
    assert task["profiled"] is True
    assert task["peak_memory"] > 5_000_000  # the hot section's 5,000 bytearrays of 1 KiB, at least
    assert task["total_allocations"] > 0
    assert task["top_sites"] > 0
    assert task["deck_title"] == "Memray: join"
    assert task["report_kind"] == "table"

    assert result["missing_extra"] is not None
    assert "flyte-ctx-tracking[whylogs]" in result["missing_extra"]
    assert "Traceback" not in run.stderr, run.stderr[-4000:]
