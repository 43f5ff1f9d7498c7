"""Every code sample in ``docs/`` runs (issue 8).

Each ``docs/*.md`` file runs in a fresh temporary directory, in a subprocess of its own:
its ```` ```python ```` blocks share one namespace, its ```` ```sh ```` blocks run with
``bash -euo pipefail`` (the installed ``actor-db`` script on ``PATH``), all in document
order, so a sample may use what an earlier one made. Other fences are allowed only as
``text`` (output, diagrams). A doc that mentions ``REDIS_URL`` gets a real Redis server.
"""

from __future__ import annotations

import doctest
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
RUNNABLE = ("python", "sh")

RUNNER = r'''
import json, subprocess, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for number, (lang, line, code) in enumerate(blocks, 1):
    try:
        if lang == "python":
            exec(compile(code, f"{sys.argv[2]}:{line}", "exec"), namespace)
        else:
            subprocess.run(["bash", "-euo", "pipefail", "-c", code], check=True)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: block {number} ({lang}) at {sys.argv[2]} line {line}", file=sys.stderr)
        sys.exit(1)
print(f"{len(blocks)} blocks ok")
'''


def code_blocks(path: pathlib.Path) -> list[tuple[str, int, str]]:
    """``(language, line number, code)`` of every fenced block."""
    text = path.read_text(encoding="utf-8")
    return [(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2)) for m in FENCE.finditer(text)]


def test_docs_exist() -> None:
    names = {p.name for p in DOCS}
    for required in ("quickstart.md", "format.md", "commit-protocol.md", "preload.md", "drivers.md",
                     "dbapi.md", "operations.md"):
        assert required in names, required


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_fence_is_runnable_or_text(doc: pathlib.Path) -> None:
    for lang, line, _ in code_blocks(doc):
        assert lang in RUNNABLE + ("text",), f"{doc.name}:{line}: fence language {lang!r} is neither run nor text"


@pytest.mark.parametrize("doc", [d for d in DOCS if any(b[0] in RUNNABLE for b in code_blocks(d))],
                         ids=lambda p: p.name)
def test_doc_samples_run(doc: pathlib.Path, tmp_path: pathlib.Path) -> None:
    import json

    blocks = [b for b in code_blocks(doc) if b[0] in RUNNABLE]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k not in ("ACTOR_DB_KV", "ACTOR_DB_PATH", "REDIS_URL")}
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if "REDIS_URL" in doc.read_text(encoding="utf-8"):
        from tests.redis_server import fresh_namespace, require_redis, session_server

        require_redis()
        env["REDIS_URL"] = session_server().url
        env["REDIS_NAMESPACE"] = fresh_namespace("docs")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json"), doc.name],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{doc.name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert proc.stdout.rstrip().endswith(f"{len(blocks)} blocks ok")


def test_module_doctests() -> None:
    import actor_db.metrics_export

    result = doctest.testmod(actor_db.metrics_export)
    assert result.attempted > 0 and result.failed == 0
