"""Every code sample in ``README.md`` and ``docs/`` runs on its own (issues 8 and 15).

Each ```` ```python ```` or ```` ```sh ```` block is a test of its own: it runs in a fresh
empty directory, by itself (nothing from the blocks before it), and then a second time
in the same directory (what a reader gets who pastes it twice: the state of the first
run persists). Python blocks run with ``python``, sh blocks with ``bash -euo pipefail``,
with the installed ``actor-db`` script on ``PATH``. Other fences are allowed only as
``text`` (output, diagrams). A block that mentions ``REDIS_URL`` gets a real Redis server
and a fresh namespace.

The README's two commands (``./scripts/demo``, ``./scripts/test``) run the checkout's
own scripts, so they are not run here: ``tests/test_scripts.py`` runs both scripts
against stand-in tools, and CI (``.ci/run``) runs ``./scripts/test`` itself.

The documentation stands alone: no link or reference leaves the repository.
"""

from __future__ import annotations

import doctest
import os
import pathlib
import re
import subprocess
import sys
from typing import NamedTuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
RUNNABLE = ("python", "sh")
README_COMMANDS = ["./scripts/demo", "./scripts/test"]

CONTINUED_PAGES: dict[str, str] = {}
"""Pages whose samples may still build on an earlier sample of the page, with the reason:
a block of theirs that fails on its own is an expected failure (xfail, not strict, so a
fixed page shows XPASS and can leave this list). Every other page must pass."""


class Block(NamedTuple):
    page: pathlib.Path
    lang: str
    line: int
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def code_blocks(path: pathlib.Path) -> list[Block]:
    """Every fenced block of ``path``, with the line its fence starts on."""
    text = path.read_text(encoding="utf-8")
    return [Block(path, m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2)) for m in FENCE.finditer(text)]


def _commands(code: str) -> list[str]:
    """The command of each non-comment line of a sh block (comments stripped)."""
    return [line.split("#", 1)[0].strip() for line in code.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _is_checkout_commands(block: Block) -> bool:
    return block.lang == "sh" and _commands(block.code) == README_COMMANDS


def _runnable_blocks() -> list[Block]:
    return [b for page in PAGES for b in code_blocks(page) if b.lang in RUNNABLE and not _is_checkout_commands(b)]


def _params() -> list[object]:
    params: list[object] = []
    for block in _runnable_blocks():
        reason = CONTINUED_PAGES.get(block.page.name)
        marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def test_docs_exist() -> None:
    names = {p.name for p in DOCS}
    for required in ("quickstart.md", "format.md", "commit-protocol.md", "preload.md", "drivers.md",
                     "dbapi.md", "operations.md"):
        assert required in names, required


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_fence_is_runnable_or_text(page: pathlib.Path) -> None:
    for block in code_blocks(page):
        assert block.lang in RUNNABLE + ("text",), \
            f"{block.id}: fence language {block.lang!r} is neither run nor text"


def test_readme_gives_a_newcomer_exactly_two_commands() -> None:
    blocks = [b for b in code_blocks(ROOT / "README.md") if b.lang == "sh"]
    assert _commands(blocks[0].code) == README_COMMANDS
    assert [b for b in blocks if _is_checkout_commands(b)] == blocks[:1]
    for command in README_COMMANDS:
        script = ROOT / command
        assert script.is_file() and os.access(script, os.X_OK), script
    assert ".venv" in (ROOT / "README.md").read_text(encoding="utf-8")


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_documentation_stands_alone(page: pathlib.Path) -> None:
    """No reference to files outside the repository (a clone has no ``../shared``)."""
    text = page.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text, f"{page.name} refers to DESIGN.md, which a clone does not have"
    assert "../shared" not in text
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name}: link {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: link {target} does not exist"


def _run_once(block: Block, work: pathlib.Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = work.parent / ("block.py" if block.lang == "python" else "block.sh")
    script.write_text(block.code, encoding="utf-8")
    command = [sys.executable, str(script)] if block.lang == "python" else ["bash", "-euo", "pipefail", str(script)]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("block", _params())
def test_sample_runs_on_its_own_twice(block: Block, tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ACTOR_DB_KV", "ACTOR_DB_PATH", "REDIS_URL", "REDIS_NAMESPACE")
           and not k.startswith("PYTEST_")}
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if "REDIS_URL" in block.code:
        from tests.redis_server import fresh_namespace, require_redis, session_server

        require_redis()
        env["REDIS_URL"] = session_server().url
        env["REDIS_NAMESPACE"] = fresh_namespace("docs")
    work = tmp_path / "work"
    work.mkdir()
    for run in ("first", "second"):
        proc = _run_once(block, work, env)
        assert proc.returncode == 0, (f"{block.id} ({block.lang}) failed on its {run} run in a fresh directory:\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def test_module_doctests() -> None:
    import actor_db.metrics_export

    result = doctest.testmod(actor_db.metrics_export)
    assert result.attempted > 0 and result.failed == 0
