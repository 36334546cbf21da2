#!/usr/bin/env bash
# Linux and macOS entry point, twin of run.bat.
#   ./run.sh                 run every stage that is stale or missing (default config)
#   ./run.sh status          any other arguments go to: python -m core.pipeline ...
#   ./run.sh run --only 4 --force
#   ./run.sh test [ARGS]     install the test extra and run the tests (ARGS go to pytest)
#   ./run.sh serve           serve the finished run: HTTP API and MCP on 127.0.0.1:8000 (README)
#   ./run.sh add-key NAME --scopes segments,customers   create an API key for serve
# Creates .venv (Python 3.11 or newer; override with PYTHON=/path/to/python) and installs
# the project only when it is missing or pyproject.toml changed. Relative --config and
# --artifacts paths are taken from the folder you run this in. A .venv left without a
# working bin/python (an interrupted creation, or its Python removed) is created again.
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
    # venv over a half-made .venv keeps its broken parts (a dangling bin/python symlink stays
    # dangling), so delete it and start again.
    if [ -e "$here/.venv" ] || [ -L "$here/.venv" ]; then
        echo "Removing the incomplete .venv (no working bin/python) ..." >&2
        rm -rf "$here/.venv"
    fi
    echo "Creating .venv with $("$python" --version 2>&1) ..." >&2
    if ! "$python" -m venv "$here/.venv"; then
        rm -rf "$here/.venv"
        echo "Could not create .venv with $python" >&2
        exit 1
    fi
fi

# Each step returns on failure by hand: set -e does not apply inside a function called by "if !".
install_project() {
    "$venv_python" -m pip install --quiet --upgrade pip || return 1
    if [ -n "$extra" ]; then
        "$venv_python" -m pip install -e "$here[test]" || return 1
    else
        "$venv_python" -m pip install -e "$here" || return 1
    fi
    "$venv_python" "$here/scripts/env_stamp.py" write $extra
}

# The stamp is written only after a complete install, so a failed one is simply run again.
if ! "$venv_python" "$here/scripts/env_stamp.py" check $extra; then
    if ! install_project; then
        echo "Installing the project into .venv failed (the error is above). Fix its cause and run" >&2
        echo "this again; if it keeps failing, delete .venv (rm -rf \"$here/.venv\") and run this again." >&2
        exit 1
    fi
fi

if [ -n "$extra" ]; then
    cd "$here"
    exec "$venv_python" -m pytest "$@"
fi
exec "$venv_python" -m core.pipeline "$@"
