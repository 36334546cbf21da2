@echo off
rem Windows (DOS) entry point, twin of run.sh.
rem   run.bat                  run every stage that is stale or missing (default config)
rem   run.bat status           any other arguments go to: python -m core.pipeline ...
rem   run.bat --only 4 --force
rem   run.bat test [ARGS]      install the test extra and run the tests (ARGS go to pytest)
rem Creates .venv (Python 3.11; override with set PYTHON=C:\path\to\python.exe) and installs
rem the project only when it is missing or pyproject.toml changed.
setlocal
cd /d "%~dp0"
set "PYTHONUTF8=1"
set "VENV_PY=.venv\Scripts\python.exe"
set "EXTRA="
if /i "%~1"=="test" set "EXTRA=test"

if not exist "%VENV_PY%" (
    call :find_python
    if errorlevel 1 exit /b 1
)
if not exist "%VENV_PY%" (
    echo Creating .venv with %PYTHON_CMD% ...
    %PYTHON_CMD% -m venv .venv
    if errorlevel 1 (
        echo Could not create .venv with %PYTHON_CMD%.
        exit /b 1
    )
)

"%VENV_PY%" scripts\env_stamp.py check %EXTRA%
if errorlevel 1 call :install
if errorlevel 1 exit /b 1

if defined EXTRA goto :tests
"%VENV_PY%" -m core.pipeline %*
exit /b %errorlevel%

:tests
rem %* still holds "test"; pass only the arguments after it to pytest.
set "PYTEST_ARGS="
:collect
shift
if "%~1"=="" goto :run_tests
set PYTEST_ARGS=%PYTEST_ARGS% %1
goto :collect
:run_tests
"%VENV_PY%" -m pytest %PYTEST_ARGS%
exit /b %errorlevel%

:install
"%VENV_PY%" -m pip install --quiet --upgrade pip
if errorlevel 1 exit /b 1
if defined EXTRA (
    "%VENV_PY%" -m pip install -e ".[test]"
) else (
    "%VENV_PY%" -m pip install -e .
)
if errorlevel 1 exit /b 1
"%VENV_PY%" scripts\env_stamp.py write %EXTRA%
exit /b %errorlevel%

:find_python
if defined PYTHON (
    set "PYTHON_CMD="%PYTHON%""
    exit /b 0
)
where py >nul 2>nul
if not errorlevel 1 (
    py -3.11 -c "import sys" >nul 2>nul
    if not errorlevel 1 (
        set "PYTHON_CMD=py -3.11"
        exit /b 0
    )
)
where python >nul 2>nul
if not errorlevel 1 (
    python -c "import sys; sys.exit(sys.version_info[:2] < (3, 11))" >nul 2>nul
    if not errorlevel 1 (
        set "PYTHON_CMD=python"
        exit /b 0
    )
)
echo Python 3.11 was not found. Install it from python.org (tick "Add python.exe to PATH"),
echo or set PYTHON=C:\path\to\python.exe, then run this again.
exit /b 1
