# Sourced by scripts/demo and scripts/test: set up the project-local virtual environment.
#
# Everything is installed into ./.venv (created if missing); the system Python is never
# touched. System packages come from apt-get (as root, else through sudo) only when
# missing: Debian's python3-venv when `python3 -m venv` does not work, and whatever the
# caller asks for. A line on stderr announces every apt-get and pip step; their own
# output is kept in a log that is shown only if the step fails.

VENV="$PWD/.venv"
PY="$VENV/bin/python"
SETUP_LOG="$(mktemp "${TMPDIR:-/tmp}/actor-db-setup.XXXXXX")"
trap 'rm -f "$SETUP_LOG"' EXIT

say() { printf 'setup: %s\n' "$*" >&2; }

# Run a step quietly; on failure show its output and stop.
quietly() {
  if ! "$@" >"$SETUP_LOG" 2>&1; then
    cat "$SETUP_LOG" >&2
    say "failed: $*"
    exit 1
  fi
}

as_root() {
  if [ "$(id -u)" = "0" ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    say "need root (or sudo) for: $*"
    return 1
  fi
}

APT_UPDATED=""
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install $* (no apt-get): install it with your package manager and run this again"
    exit 1
  fi
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update (system package lists)"
    quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  say "apt-get install $* (system packages)"
  quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

ensure_venv() {
  if [ -x "$PY" ] && "$PY" -c 'import sys' >/dev/null 2>&1; then
    say "using the virtual environment $VENV"
    return
  fi
  rm -rf "$VENV"
  say "creating the virtual environment $VENV (packages go there, not into the system Python)"
  if ! python3 -m venv "$VENV" >"$SETUP_LOG" 2>&1; then
    rm -rf "$VENV"
    say "python3 -m venv does not work here (Debian ships it separately)"
    apt_install python3-venv
    quietly python3 -m venv "$VENV"
  fi
}

# Call before `exec`: an exec'd shell runs no EXIT trap.
setup_done() {
  rm -f "$SETUP_LOG"
  trap - EXIT
}

# pip_install ARGS...: install into the virtual environment.
pip_install() {
  say "pip install $* into $VENV"
  quietly "$PY" -m pip install --disable-pip-version-check "$@"
}

# npm_ci_interop: install the RivetKit interop suite's Node packages, pinned by
# tests/interop/package-lock.json, into tests/interop/node_modules (`npm ci`; skipped
# when that lock file is already installed). Node 20+ and npm are needed; without them
# the interop tests skip, except under CI=true, where this fails the run.
npm_ci_interop() {
  local dir="$PWD/tests/interop"
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1 \
      || [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 20 ]; then
    if [ "${CI:-}" = "true" ]; then
      say "CI: Node 20+ and npm are required for the RivetKit interop tests (tests/interop)"
      exit 1
    fi
    say "Node 20+ / npm not found: the RivetKit interop tests will be skipped"
    return 0
  fi
  if [ -f "$dir/node_modules/.package-lock.json" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    say "using the interop suite's Node packages in $dir/node_modules"
    return 0
  fi
  say "npm ci in $dir (@rivetkit/sqlite-vfs, pinned, for the interop tests)"
  quietly npm ci --prefix "$dir" --no-audit --no-fund
}

# fetch_django_tests: Django's own test suite (not in its wheel) for the installed Django
# version, from its source distribution on the package index, into .cache/django-VERSION/
# (skipped when already there; tests/run_django_suite.py --fetch does it).
# tests/test_django_suite.py runs a subset of it against actor_db.django and against
# Django's own SQLite backend.
fetch_django_tests() {
  say "Django's test suite for tests/test_django_suite.py (.cache/, fetched once)"
  quietly "$PY" tests/run_django_suite.py --fetch
}

# fetch_sqlalchemy_tests: SQLAlchemy's own requirements class for its compliance suite
# (test/requirements.py, not in its wheel) for the installed SQLAlchemy version, from its
# source distribution on the package index, into .cache/sqlalchemy-VERSION/ (skipped when
# already there; tests/run_sqlalchemy_suite.py --fetch does it). tests/test_sqlalchemy_suite.py
# runs sqlalchemy.testing.suite against sqlite+actordb and against the stdlib with it.
fetch_sqlalchemy_tests() {
  say "SQLAlchemy's test requirements for tests/test_sqlalchemy_suite.py (.cache/, fetched once)"
  quietly "$PY" tests/run_sqlalchemy_suite.py --fetch
}

# fetch_datasette_tests: Datasette 0.65.2's test modules (not in its wheel) from its source
# distribution on the package index, into .cache/datasette-0.65.2/ (skipped when already
# there; tests/run_datasette_suite.py --fetch does it). tests/test_datasette_suite.py runs
# those that open databases read-only against the stdlib sqlite3 and against actor_db.dbapi.
fetch_datasette_tests() {
  say "Datasette's tests for tests/test_datasette_suite.py (.cache/, fetched once)"
  quietly "$PY" tests/run_datasette_suite.py --fetch
}
