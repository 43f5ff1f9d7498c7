"""The README's two commands (issue 15): ``./scripts/demo`` and ``./scripts/test``.

The scripts run for real, in a copy of ``scripts/``, with stand-ins for the tools they
call (``python3``, ``apt-get``, ``id``) first on a ``PATH`` that has nothing else of the
machine's: each stand-in logs its arguments, so the tests see exactly what a fresh
machine would get. (CI runs the real ``./scripts/test`` through ``.ci/run``.) The demo
itself runs for real, twice.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = ["bash", "env", "mktemp", "cat", "rm", "dirname", "mkdir", "cp", "touch", "chmod"]

SYSTEM_PYTHON = r"""#!/bin/bash
echo "system-python3 $*" >> "$STUB_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  if [ -n "${BROKEN_VENV:-}" ] && [ ! -e "$STUB_STATE/python3-venv" ]; then
    mkdir -p "$3"
    echo "The virtual environment was not created successfully because ensurepip is not available." >&2
    exit 1
  fi
  mkdir -p "$3/bin"
  cp "$STUB_DIR/venv-python" "$3/bin/python"
fi
"""
VENV_PYTHON = """#!/bin/bash
echo "venv-python $*" >> "$STUB_LOG"
"""
APT_GET = r"""#!/bin/bash
echo "apt-get $*" >> "$STUB_LOG"
for arg in "$@"; do
  case "$arg" in
    python3-venv) touch "$STUB_STATE/python3-venv" ;;
    redis-server) printf '#!/bin/bash\n' > "$STUB_DIR/redis-server"; cp "$STUB_DIR/redis-server" "$STUB_DIR/redis-cli"
                  chmod +x "$STUB_DIR/redis-server" "$STUB_DIR/redis-cli" ;;
  esac
done
"""


def _sandbox(tmp: pathlib.Path) -> tuple[pathlib.Path, dict[str, str]]:
    """A copy of the scripts and a PATH of stand-ins: (repository copy, environment)."""
    repo = tmp / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    stubs, state = tmp / "stubs", tmp / "state"
    stubs.mkdir()
    state.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (stubs / tool).symlink_to(found)
    for name, text in (("python3", SYSTEM_PYTHON), ("venv-python", VENV_PYTHON), ("apt-get", APT_GET),
                       ("id", "#!/bin/bash\necho 0\n")):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    env = {"PATH": str(stubs), "HOME": str(tmp), "TMPDIR": str(tmp), "STUB_LOG": str(tmp / "calls.log"),
           "STUB_DIR": str(stubs), "STUB_STATE": str(state)}
    return repo, env


def _run(repo: pathlib.Path, script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(repo / "scripts" / script), *args], cwd=repo.parent, env=env,
                          capture_output=True, text=True, timeout=60)


def _calls(env: dict[str, str]) -> list[str]:
    log = pathlib.Path(env["STUB_LOG"])
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def _setup_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("setup: ")]


def test_demo_installs_into_a_project_venv_and_says_so(tmp_path: pathlib.Path) -> None:
    repo, env = _sandbox(tmp_path)
    venv = repo / ".venv"
    first = _run(repo, "demo", env, "--actor", "x")
    assert first.returncode == 0, first.stderr
    assert _calls(env) == [f"system-python3 -m venv {venv}",
                           "venv-python -m pip install --disable-pip-version-check -e .",
                           "venv-python -m actor_db.demo --actor x"]
    lines = _setup_lines(first.stderr)
    assert lines[0] == f"setup: creating the virtual environment {venv} (packages go there, not into the system Python)"
    assert lines[1] == f"setup: pip install -e . into {venv}"
    second = _run(repo, "demo", env)
    assert second.returncode == 0, second.stderr
    assert _calls(env) == ["venv-python -c import sys",  # the existing venv works: reused
                           "venv-python -m pip install --disable-pip-version-check -e .",
                           "venv-python -m actor_db.demo"]
    assert _setup_lines(second.stderr)[0] == f"setup: using the virtual environment {venv}"
    assert not list(tmp_path.glob("actor-db-setup.*"))  # its temporary log is removed


def test_missing_venv_module_is_installed_with_apt_get_first(tmp_path: pathlib.Path) -> None:
    repo, env = _sandbox(tmp_path)
    env["BROKEN_VENV"] = "1"  # a bare Debian: python3 without its venv module
    result = _run(repo, "demo", env)
    assert result.returncode == 0, result.stderr
    calls = _calls(env)
    venv = repo / ".venv"
    assert calls[:4] == [f"system-python3 -m venv {venv}", "apt-get update -qq",
                         "apt-get install -y -qq python3-venv", f"system-python3 -m venv {venv}"]
    assert not [c for c in calls if c.startswith("system-python3 -m pip")]  # the system Python is left alone
    lines = _setup_lines(result.stderr)
    assert "setup: apt-get update (system package lists)" in lines
    assert lines.index("setup: apt-get install python3-venv (system packages)") < \
        lines.index(f"setup: pip install -e . into {venv}")


def test_test_script_installs_redis_then_runs_pytest_in_the_venv(tmp_path: pathlib.Path) -> None:
    repo, env = _sandbox(tmp_path)
    result = _run(repo, "test", env, "-k", "docs")
    assert result.returncode == 0, result.stderr
    venv = repo / ".venv"
    assert _calls(env) == ["apt-get update -qq", "apt-get install -y -qq redis-server",
                           f"system-python3 -m venv {venv}",
                           "venv-python -m pip install --disable-pip-version-check -e .[test,redis,serve]",
                           "venv-python tests/run_django_suite.py --fetch",
                           "venv-python tests/run_sqlalchemy_suite.py --fetch",
                           "venv-python tests/run_datasette_suite.py --fetch",
                           "venv-python -m pytest -q -n 2 -k docs"]
    lines = _setup_lines(result.stderr)
    assert lines[:2] == ["setup: apt-get update (system package lists)",
                         "setup: apt-get install redis-server (system packages)"]
    again = _run(repo, "test", env)  # redis-server is there now: no apt-get
    assert again.returncode == 0 and not [c for c in _calls(env) if c.startswith("apt-get")]


def test_scripts_never_install_into_the_system_python() -> None:
    for name in ("demo", "test", "_setup.sh"):
        text = (ROOT / "scripts" / name).read_text()
        assert "PIP_BREAK_SYSTEM_PACKAGES" not in text and "--break-system-packages" not in text
    ignored = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert ".venv/" in ignored or ".venv" in ignored


def test_demo_reuses_one_actor_and_says_where(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ACTOR_DB_KV", "ACTOR_DB_PATH")}
    outputs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "actor_db.demo"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    store = os.path.realpath(tmp_path / ".actor-db")
    for out in outputs:
        assert f"actor 'demo' in the LMDB store {store}" in out
        assert "VFS actor-db" in out  # which VFS ran: actor-db-native or actor-db (Python)
        assert "reopened cold" in out and "1000 rows" in out
        assert "shell demo" in out  # how to look at it
    from tests.cli_support import run_cli

    listed = run_cli("ls", cwd=tmp_path).stdout.splitlines()[1:]
    assert [line.split()[0] for line in listed] == ["demo"]  # one actor, however many runs
