#!/usr/bin/env bash
# Leak check of the native VFS's C code under valgrind: thousands of open/close cycles
# (default 2000; pass a number to change it). Fails if valgrind finds a block
# "definitely lost" or "indirectly lost" whose stack goes through native/kvvfs.c, or if
# the C block counter does not return to its start.
# Needs valgrind (apt-get install valgrind). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-2000}"
# The real interpreter, not a pyenv shim script (valgrind would trace the shell).
log="$(mktemp)"
PYTHONMALLOC=malloc valgrind --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect --num-callers=30 --log-file="$log" \
  "$(python3 -c "import sys; print(sys.executable)")" -m tests.leakcheck_native "$cycles"
grep -E "definitely lost|indirectly lost|ERROR SUMMARY" "$log" | tail -3
# Python itself leaks a few objects at exit (interned strings, ...); count only our frames.
if grep -B2 -A30 -E "are (definitely|indirectly) lost" "$log" | grep -qE "kvvfs\.c|_kvvfs"; then
  echo "LEAK in the native VFS (see $log)"
  exit 1
fi
echo "no leak in the native VFS ($cycles cycles; valgrind log: $log)"
