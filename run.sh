#!/usr/bin/env bash
# Linux and macOS entry point, twin of run.bat.
#   ./run.sh                 run every stage that is stale or missing (default config)
#   ./run.sh status          any other arguments go to: python -m core.pipeline ...
#   ./run.sh run --only 4 --force
#   ./run.sh test [ARGS]     install the test extra and run the tests (ARGS go to pytest)
# Creates .venv (Python 3.11; override with PYTHON=/path/to/python) and installs the
# project only when it is missing or pyproject.toml changed. Relative --config and
# --artifacts paths are taken from the folder you run this in.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

venv_python="$here/.venv/bin/python"
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
    "$python" -m venv "$here/.venv"
fi

if ! "$venv_python" "$here/scripts/env_stamp.py" check $extra; then
    "$venv_python" -m pip install --quiet --upgrade pip
    if [ -n "$extra" ]; then
        "$venv_python" -m pip install -e "$here[test]"
    else
        "$venv_python" -m pip install -e "$here"
    fi
    "$venv_python" "$here/scripts/env_stamp.py" write $extra
fi

if [ -n "$extra" ]; then
    cd "$here"
    exec "$venv_python" -m pytest "$@"
fi
exec "$venv_python" -m core.pipeline "$@"
