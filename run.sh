#!/usr/bin/env bash
# Linux and macOS entry point, twin of run.bat.
#   ./run.sh                 run every stage that is stale or missing (default config)
#   ./run.sh status          any other arguments go to: python -m core.pipeline ...
#   ./run.sh --only 4 --force
#   ./run.sh test [ARGS]     install the test extra and run the tests (ARGS go to pytest)
# Creates .venv (Python 3.11; override with PYTHON=/path/to/python) and installs the
# project only when it is missing or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")"

venv_python=.venv/bin/python
extra=""
if [ "${1:-}" = "test" ]; then
    extra="test"
    shift
fi

if [ ! -x "$venv_python" ]; then
    python="${PYTHON:-}"
    if [ -z "$python" ]; then
        for candidate in python3.11 python3 python; do
            if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
        done
    fi
    if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
        echo "Python 3.11 or newer was not found; install it or set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    echo "Creating .venv with $("$python" --version 2>&1) ..." >&2
    "$python" -m venv .venv
fi

if ! "$venv_python" scripts/env_stamp.py check $extra; then
    "$venv_python" -m pip install --quiet --upgrade pip
    if [ -n "$extra" ]; then
        "$venv_python" -m pip install -e ".[test]"
    else
        "$venv_python" -m pip install -e .
    fi
    "$venv_python" scripts/env_stamp.py write $extra
fi

if [ -n "$extra" ]; then
    exec "$venv_python" -m pytest "$@"
fi
exec "$venv_python" -m core.pipeline "$@"
