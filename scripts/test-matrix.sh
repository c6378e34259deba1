#!/usr/bin/env bash
# Run the stdlib-only core suite under `python -m unittest` on each Python version named,
# each in a bare virtualenv with no aiohttp (tests that need it skip themselves).
# A version that is not on this machine is skipped with a line saying so.
set -u
cd "$(dirname "$0")/.."
root=${PYENV_ROOT:-$HOME/.pyenv}
status=0
for version in "$@"; do
  python=""
  for candidate in $(ls -d "$root"/versions/"$version".* 2>/dev/null | sort -V -r); do
    if [ -x "$candidate/bin/python$version" ]; then python="$candidate/bin/python$version"; break; fi
  done
  [ -n "$python" ] || python=$(command -v "python$version" 2>/dev/null || true)
  if [ -z "$python" ]; then
    echo "test-matrix: skip Python $version: not installed on this machine"
    continue
  fi
  venv=".venv-core/$version"
  [ -x "$venv/bin/python" ] || "$python" -m venv --without-pip "$venv" || { status=1; continue; }
  echo "test-matrix: Python $version ($python)"
  if ! PYTHONPATH="$PWD" "$venv/bin/python" -m unittest discover -s tests -t . -q; then
    echo "test-matrix: FAILED on Python $version"
    status=1
  fi
done
exit $status
