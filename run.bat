@echo off
rem Windows (DOS) entry point, twin of run.sh.
rem   run.bat                  run every stage that is stale or missing (default config)
rem   run.bat status           any other arguments go to: python -m core.pipeline ...
rem   run.bat run --only 4 --force
rem   run.bat test [ARGS]      install the test extra and run the tests (ARGS go to pytest)
rem Creates .venv (Python 3.11; override with: set PYTHON=C:\path\to\python.exe) and installs
rem the project only when it is missing or pyproject.toml changed. Relative --config and
rem --artifacts paths are taken from the folder you run this in.
rem Written without parenthesised blocks where a path is expanded: a ")" in a path such as
rem "C:\Program Files (x86)" would end a block early.
setlocal
set "PYTHONUTF8=1"
set "HERE=%~dp0"
set "VENV_PY=%HERE%.venv\Scripts\python.exe"
set "EXTRA="
if /i "%~1"=="test" set "EXTRA=test"

if exist "%VENV_PY%" goto :venv_ready
call :find_python
if errorlevel 1 exit /b 1
echo Creating .venv with %PYTHON_CMD% ...
%PYTHON_CMD% -m venv "%HERE%.venv"
if errorlevel 1 goto :venv_failed
:venv_ready

"%VENV_PY%" "%HERE%scripts\env_stamp.py" check %EXTRA%
if errorlevel 1 call :install
if errorlevel 1 exit /b 1

if defined EXTRA goto :tests
"%VENV_PY%" -m core.pipeline %*
exit /b %errorlevel%

:tests
rem %* still holds "test"; pass only the arguments after it to pytest, from the project folder.
set "PYTEST_ARGS="
:collect
shift
if "%~1"=="" goto :run_tests
set PYTEST_ARGS=%PYTEST_ARGS% %1
goto :collect
:run_tests
pushd "%HERE%"
"%VENV_PY%" -m pytest %PYTEST_ARGS%
set "CODE=%errorlevel%"
popd
exit /b %CODE%

:install
"%VENV_PY%" -m pip install --quiet --upgrade pip
if errorlevel 1 exit /b 1
set "TARGET=%HERE%."
if defined EXTRA set "TARGET=%HERE%.[test]"
"%VENV_PY%" -m pip install -e "%TARGET%"
if errorlevel 1 exit /b 1
"%VENV_PY%" "%HERE%scripts\env_stamp.py" write %EXTRA%
exit /b %errorlevel%

:venv_failed
echo Could not create .venv with %PYTHON_CMD%.
exit /b 1

:find_python
if not defined PYTHON goto :try_py_launcher
set PYTHON_CMD="%PYTHON%"
exit /b 0
:try_py_launcher
where py >nul 2>nul
if errorlevel 1 goto :try_python
py -3.11 -c "import sys" >nul 2>nul
if errorlevel 1 goto :try_python
set "PYTHON_CMD=py -3.11"
exit /b 0
:try_python
where python >nul 2>nul
if errorlevel 1 goto :no_python
python -c "import sys; sys.exit(sys.version_info[:2] < (3, 11))" >nul 2>nul
if errorlevel 1 goto :no_python
set "PYTHON_CMD=python"
exit /b 0
:no_python
echo Python 3.11 was not found. Install it from python.org (tick "Add python.exe to PATH"),
echo or set PYTHON=C:\path\to\python.exe, then run this again.
exit /b 1
