"""Docs that run: every ```python block of README.md and docs/*.md runs as written, offline.

A block that runs Spark skips, and says so, without a Java runtime (it fails under ``CI=true``).
Each block runs in a fresh interpreter (``sys.executable``), written to a file in the test's tmp
dir and run from there, with the suite's isolated environment (see ``conftest.py``: its own
``FLYTE_CTX_TRACKING_DIR`` and ``HOME``, no API keys, backends' telemetry off). Blocks are
self-contained: none depends on another block having run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250
BLOCK_TIMEOUT_S = 240
# An opening fence: any indent (fences inside list items), 3+ backticks or tildes, then the info string.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, in order, with the language of its info string."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is not None and opening["fence"][0] == "`" and "`" in lines[index][opening.end("fence") :]:
            opening = None  # a line starting with an inline code span, not a fence
        if opening is None:
            index += 1
            continue
        fence, start = opening["fence"], index
        body: list[str] = []
        index += 1
        while index < len(lines):
            stripped = lines[index].strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                break
            body.append(lines[index])
            index += 1
        indent = len(opening["indent"])
        # The fence's own indent is not part of the code (a fence inside a list item).
        code = "\n".join(line[min(indent, len(line) - len(line.lstrip())) :] for line in body)
        blocks.append(Block(path, start + 1, index + 1, opening["info"].lower(), code + "\n"))
        index += 1
    return blocks


PYTHON_BLOCKS = [block for path in DOC_FILES for block in fenced_blocks(path) if block.language == "python"]


def test_docs_have_python_blocks() -> None:
    """The collection itself works: the README and the docs pages hold runnable examples."""
    assert any(block.path.name == "README.md" for block in PYTHON_BLOCKS)
    assert len({block.path for block in PYTHON_BLOCKS}) > 1


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.id for block in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    if "pyspark" in block.code and shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        reason = f"{block.id} runs Spark, which needs a Java runtime: `apt-get install default-jre-headless`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run it: {reason}", pytrace=False)
        pytest.skip(reason)
    script = tmp_path / "doc_block.py"
    script.write_text(block.code, encoding="utf-8")
    env = dict(os.environ)  # conftest's isolation: tracking dir, home, no keys, no telemetry
    env["WANDB_SILENT"] = "true"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{block.id}: still running after {BLOCK_TIMEOUT_S} s\n{_output(error.stdout, error.stderr)}")
    assert done.returncode == 0, f"{block.id} exited with {done.returncode}\n{_output(done.stdout, done.stderr)}"


def _output(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    def text(value: str | bytes | None) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else value or ""

    return f"--- stdout ---\n{text(stdout)}\n--- stderr ---\n{text(stderr)}"


def test_readme_is_a_front_page() -> None:
    """Under 250 lines, and it opens with the two commands that matter: a title, one line, then them."""
    readme = REPO / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; keep it under {README_MAX_LINES}"
    assert lines[0].startswith("# ")
    first = fenced_blocks(readme)[0]
    prose = [line for line in lines[1 : first.line - 1] if line.strip()]
    assert len(prose) == 1, f"one line of what it is between the title and the commands, got {prose}"
    commands = [line.split("#", 1)[0].strip() for line in first.code.splitlines() if line.strip()]
    assert (first.language, commands) == ("bash", ["make demo", "make test"])


def _without_code_blocks(path: Path) -> str:
    """The Markdown of ``path`` with its fenced code blocks blanked out (line numbers kept)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for block in fenced_blocks(path):
        lines[block.line - 1 : block.end] = [""] * (block.end - block.line + 1)
    return "\n".join(lines)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of ``path``: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", _without_code_blocks(path), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_docs_links_resolve() -> None:
    """Relative links between README.md and docs/ point at files, and headings, that exist."""
    link = re.compile(r"\]\((?!https?://|mailto:)([^)\s]*)\)")
    broken = []
    for path in DOC_FILES:
        prose = re.sub(r"`+[^`\n]*`+", "", _without_code_blocks(path))  # no links in code spans
        for target in link.findall(prose):
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(REPO)} -> {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{path.relative_to(REPO)} -> {target}: no such heading")
    assert not broken, "\n".join(broken)
