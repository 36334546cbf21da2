"""run.bat keeps its Windows fixes, and run.sh (its reference twin) repairs a half-made .venv.

The run.bat tests are STATIC: no Windows machine (or wine) runs them, so they read run.bat as
text and check its structure, enough to fail if one of its fixes is reverted: arguments reach
pytest through ``%*`` rather than a ``shift`` loop, the PYTHON override and ``py -3`` are
version-checked, a half-created .venv is deleted, TensorFlow's prerequisites (the Visual C++
runtime, long paths) are checked before pip installs anything, and a double-clicked window
pauses on an error. They do not prove cmd.exe runs the file as intended.

The run.sh tests run it for real with bash, against a fake Python that creates a fake .venv,
so they need neither a network nor an install.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION_CHECK = '-c "import sys; sys.exit(sys.version_info[:2] < (3, 11))"'


def _bat_lines() -> list[str]:
    return [line.strip() for line in (ROOT / "run.bat").read_text(encoding="ascii").splitlines()]


def _is_comment(line: str) -> bool:
    return line.lower() == "rem" or line.lower().startswith("rem ") or line.lower() == "@echo off"


def _code() -> list[str]:
    """run.bat's commands and labels, without comments and blank lines."""
    return [line for line in _bat_lines() if line and not _is_comment(line)]


def _index(lines: list[str], predicate, what: str) -> int:
    for i, line in enumerate(lines):
        if predicate(line):
            return i
    raise AssertionError(f"run.bat has no line {what}")


def _label(lines: list[str], name: str) -> int:
    return _index(lines, lambda line: line.lower() == f":{name}".lower(), f":{name}")


def _section(lines: list[str], start: str, end: str) -> list[str]:
    """Lines from label ``start`` up to label ``end`` (labels fall through in batch)."""
    return lines[_label(lines, start):_label(lines, end)]


def _main_flow(lines: list[str]) -> list[str]:
    """Everything run.bat does before its first error label; the subroutines come after it."""
    return lines[:_label(lines, "fail")]


# --- run.bat, static ---------------------------------------------------------------------------


def test_pytest_arguments_are_not_collected_by_a_shift_loop():
    """A shift loop over %1 splits "-o cache_dir=x" at "=" and stops at an empty argument."""
    code = _code()
    assert not [line for line in code if re.match(r"shift\b", line, re.I)]
    assert not [line for line in code if re.search(r"%~?[1-9]", line) and "PYTEST_ARGS" in line
                and "%*" not in line and "*test" not in line.lower()]


def test_pytest_gets_everything_after_test_from_percent_star():
    code = _code()
    tests = _section(code, "tests", "fail")
    first = _index(tests, lambda line: line.startswith("set ") and "PYTEST_ARGS" in line, "setting PYTEST_ARGS")
    # Unquoted on purpose: quotes inside the arguments then stay paired.
    assert tests[first] == "set PYTEST_ARGS=%*"
    assert "set PYTEST_ARGS=%PYTEST_ARGS:*test=%" in tests, "the leading word test is removed"
    assert 'set PYTEST_ARGS=%PYTEST_ARGS:*"test"=%' in tests, "a quoted leading test is removed"
    assert not [line for line in tests if line.lower().startswith('set "pytest_args=')]
    run = _index(tests, lambda line: "-m pytest" in line, "running pytest")
    assert tests[run] == '"%VENV_PY%" -m pytest %PYTEST_ARGS%'
    assert tests.index('pushd "%HERE%"') < run, "pytest runs from the project folder"
    assert '"%VENV_PY%" -m core.pipeline %*' in _main_flow(code), "the runner gets every argument"
    assert 'if /i "%~1"=="test" set "EXTRA=test"' in code


def test_python_override_must_be_python_3_11_or_newer():
    code = _code()
    find = _section(code, "find_python", "try_py_launcher")
    accepted = _index(find, lambda line: line == 'set PYTHON_CMD="%PYTHON%"', "accepting PYTHON")
    check = _index(find, lambda line: line == f'"%PYTHON%" {VERSION_CHECK} >nul 2>nul', "checking PYTHON")
    assert check < accepted
    rejected = find[check + 1]
    assert rejected.lower().startswith("if errorlevel 1 goto :"), "a failed check must not fall through"
    message = " ".join(_section(code, rejected.split(":")[-1], "try_py_launcher"))
    assert "PYTHON is set to" in message and "3.11 or newer" in message and "exit /b 1" in message


def test_py_launcher_accepts_any_python_3_11_or_newer():
    code = _code()
    find = code[_label(code, "try_py_launcher"):_label(code, "no_python")]
    py311 = _index(find, lambda line: line.startswith("py -3.11 "), "trying py -3.11")
    py3 = _index(find, lambda line: line == f"py -3 {VERSION_CHECK} >nul 2>nul", "trying py -3 with the check")
    python = _index(find, lambda line: line == f"python {VERSION_CHECK} >nul 2>nul", "trying python")
    assert py311 < py3 < python, "like run.sh: 3.11, then any newer Python 3, then python"
    assert find[py3 + 1].lower().startswith("if errorlevel 1 goto :")
    assert find[py3 + 2] == 'set "PYTHON_CMD=py -3"'


def test_a_half_created_venv_is_deleted_and_created_again():
    main = _main_flow(_code())
    ready = main.index('if exist "%VENV_PY%" goto :venv_ready')
    remove = main.index('rmdir /s /q "%HERE%.venv"')
    create = _index(main, lambda line: line.endswith('-m venv "%HERE%.venv"'), "creating .venv")
    assert ready < remove < create, "only a .venv without Scripts\\python.exe is removed, before venv runs"
    assert main[remove + 1].lower().startswith('if exist "%here%.venv" goto :'), "a failed removal is reported"


def test_a_failed_install_says_how_to_recover():
    code = _code()
    main = _main_flow(code)
    install = main.index("call :install")
    assert main[install + 1] == "if errorlevel 1 goto :install_failed"
    message = " ".join(_section(code, "install_failed", "install"))
    assert "delete .venv" in message and "rmdir /s /q .venv" in message
    # The stamp is written only after both pip installs, so an interrupted install reruns.
    body = _section(code, "install", "check_prerequisites")
    write = _index(body, lambda line: "env_stamp.py\" write" in line, "writing the stamp")
    assert all(i < write for i, line in enumerate(body) if "pip install" in line)


def test_tensorflow_prerequisites_are_checked_before_pip_installs():
    code = _code()
    main = _main_flow(code)
    stamp = _index(main, lambda line: "env_stamp.py\" check" in line, "checking the stamp")
    prereq = main.index("call :check_prerequisites")
    assert stamp < prereq < main.index("call :install"), "checked only when an install is due, before it"
    assert main[prereq + 1] == "if errorlevel 1 goto :fail"
    checks = _section(code, "check_prerequisites", "find_python")
    text = "\n".join(checks)
    assert 'if exist "%SystemRoot%\\System32\\msvcp140_1.dll" goto :' in text
    assert "Microsoft Visual C++ Redistributable for Visual Studio 2015-2022 (x64), vc_redist.x64.exe" in text
    assert "reg query HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem /v LongPathsEnabled" in text
    assert '"0x1"' in text
    assert ('New-ItemProperty -Path "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\FileSystem" '
            '-Name "LongPathsEnabled" -Value 1 -PropertyType DWORD -Force') in text
    assert "shorter path" in text
    assert "len(os.environ['HERE']) > 70" in text, "long paths matter only for a long folder path"
    assert text.count("exit /b 1") >= 2, "each missing prerequisite stops the script"
    assert "pip install" not in text


def test_a_double_clicked_window_pauses_on_an_error():
    code = _code()
    main = _main_flow(code)
    assert any("cmdcmdline" in line.lower() and "%~f0" in line for line in main)
    assert 'endlocal & set "DOUBLE_CLICKED=%DC%"' in main
    finish = _section(code, "fail", "venv_not_removed")
    success = finish.index('if "%CODE%"=="0" exit /b 0')
    assert finish.index("if defined DOUBLE_CLICKED pause") > success, "pause only on a non-zero exit"
    # Every way out of the main flow goes through :finish, so none skips the pause.
    assert not [line for line in main if re.search(r"\bexit\b", line, re.I)]
    for command in ('"%VENV_PY%" -m core.pipeline %*', '"%VENV_PY%" -m pytest %PYTEST_ARGS%'):
        assert main[main.index(command) + 1] == 'set "CODE=%errorlevel%"'
    for error in ("venv_not_removed", "venv_failed", "install_failed"):
        body = code[_label(code, error):]
        assert next(line for line in body[1:] if line.lower().startswith(("goto", "exit"))) == "goto :fail"


def test_every_goto_and_call_target_exists():
    code = _code()
    labels = {line[1:].lower() for line in code if line.startswith(":")}
    targets = {m.group(1).lower() for line in code for m in re.finditer(r"\b(?:goto|call) :(\w+)", line, re.I)}
    assert targets and targets - {"eof"} <= labels


def test_every_variable_used_is_set_or_given_by_windows():
    code = _code()
    set_here = {m.group(1).upper() for line in code for m in re.finditer(r'\bset "?(\w+)=', line, re.I)}
    given = {"SYSTEMROOT", "ERRORLEVEL", "CMDCMDLINE", "PYTHON"}  # PYTHON is the user's override
    used = {m.group(1).upper() for line in code for m in re.finditer(r"[%!]([A-Za-z_]\w*)(?::[^%!]*)?[%!]", line)}
    assert used - set_here - given == set()


def test_no_parenthesised_blocks_and_no_tilde_in_comments():
    """A ")" in an expanded path (C:\\Program Files (x86)) would end a block early; and cmd
    expands "%~" even in a rem line, where an invalid modifier stops the script."""
    for line in _code():
        if not line.lower().startswith("echo"):
            assert not line.endswith("(") and not line.startswith(")"), line
    for line in _bat_lines():
        if _is_comment(line):
            assert "%~" not in line, line


def test_every_run_sh_command_is_offered_by_run_bat():
    sh = (ROOT / "run.sh").read_text(encoding="utf-8")
    bat = (ROOT / "run.bat").read_text(encoding="ascii")

    def commands(text: str, prefix: str) -> set[str]:
        found = set()
        for m in re.finditer(rf"^{prefix}[ \t]+(?:\./)?run\.(?:sh|bat)(.*)$", text, re.M):
            # The command ends where two spaces start its description.
            found.add(re.split(r"\s{2,}", m.group(1).rstrip())[0].strip())
        return found

    documented = commands(sh, "#")
    assert {"", "status", "test [ARGS]"} <= documented
    assert documented <= commands(bat, "rem")


# --- run.sh, run for real with bash --------------------------------------------------------------

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

# Stands for the Python that creates .venv: answers the version check, and "-m venv DIR" makes
# DIR/bin/python a copy of FAKE_VENV_PY. FAKE_PY_OLD=1 makes it an old Python.
FAKE_PYTHON = """#!/usr/bin/env bash
case "$1" in
    -c) exit "${FAKE_PY_OLD:-0}" ;;
    --version) echo "Python 3.11.99"; exit 0 ;;
    -m) [ "$2" = venv ] || exit 2
        [ ! -e "$3/bin/python" ] || { echo "venv over a broken .venv" >&2; exit 3; }
        mkdir -p "$3/bin" && cp "$FAKE_VENV_PY" "$3/bin/python" && chmod +x "$3/bin/python" ;;
    *) exit 2 ;;
esac
"""

# Stands for .venv/bin/python: the stamp is up to date unless FAKE_STAMP_STALE=1, pip fails, and
# anything else is recorded (working folder, then each argument in <>) in FAKE_LOG.
FAKE_VENV_PY = """#!/usr/bin/env bash
case "$1" in
    *env_stamp.py) exit "${FAKE_STAMP_STALE:-0}" ;;
esac
if [ "$1 $2" = "-m pip" ]; then echo "pip: no network" >&2; exit 1; fi
{ pwd; printf '<%s>' "$@"; echo; } > "$FAKE_LOG"
"""


@pytest.fixture()
def sandbox(tmp_path):
    """A copy of run.sh in its own folder, and an environment pointing at the fakes."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(ROOT / "run.sh", project / "run.sh")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for name, text in (("python", FAKE_PYTHON), ("venv_python", FAKE_VENV_PY)):
        (fakes / name).write_text(text, encoding="utf-8")
        (fakes / name).chmod((fakes / name).stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PYTHON": str(fakes / "python"), "FAKE_VENV_PY": str(fakes / "venv_python"),
           "FAKE_LOG": str(tmp_path / "log")}
    for name in ("FAKE_PY_OLD", "FAKE_STAMP_STALE"):
        env.pop(name, None)

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(project / "run.sh"), *args], cwd=tmp_path, text=True,
                              capture_output=True, env={**env, **extra_env}, timeout=60)

    run.project = project
    run.log = tmp_path / "log"
    return run


@needs_bash
def test_run_sh_parses():
    result = subprocess.run(["bash", "-n", str(ROOT / "run.sh")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@needs_bash
def test_run_sh_recreates_a_venv_without_python_and_forwards_arguments(sandbox):
    venv = sandbox.project / ".venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "left-over").write_text("x", encoding="utf-8")
    result = sandbox("test", "-o", "cache_dir=x", "", "a b;c")
    assert result.returncode == 0, result.stderr
    assert "Removing the incomplete .venv" in result.stderr
    assert not (venv / "lib" / "left-over").exists() and (venv / "bin" / "python").exists()
    folder, args = sandbox.log.read_text(encoding="utf-8").splitlines()
    assert Path(folder) == sandbox.project, "pytest runs from the project folder"
    assert args == "<-m><pytest><-o><cache_dir=x><><a b;c>"

    result = sandbox("status", "--rows", "")
    assert result.returncode == 0, result.stderr
    assert "Creating .venv" not in result.stderr, "a working .venv is kept"
    assert sandbox.log.read_text(encoding="utf-8").splitlines()[1] == "<-m><core.pipeline><status><--rows><>"


@needs_bash
def test_run_sh_recreates_a_venv_whose_python_is_a_dangling_link(sandbox):
    bin_dir = sandbox.project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sandbox.project / "removed-python")
    result = sandbox("status")
    assert result.returncode == 0, result.stderr
    assert "Removing the incomplete .venv" in result.stderr
    assert not (bin_dir / "python").is_symlink()


@needs_bash
def test_run_sh_rejects_an_old_python_override_and_keeps_the_venv(sandbox):
    (sandbox.project / ".venv").mkdir()
    result = sandbox("status", FAKE_PY_OLD="1")
    assert result.returncode == 1
    assert "3.11 or newer" in result.stderr
    assert (sandbox.project / ".venv").is_dir(), "nothing is deleted before a Python is found"


@needs_bash
def test_run_sh_says_how_to_recover_from_a_failed_install(sandbox):
    result = sandbox("status", FAKE_STAMP_STALE="1")
    assert result.returncode == 1
    assert "delete .venv" in result.stderr
    assert not sandbox.log.exists(), "nothing runs after a failed install"
