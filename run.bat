@echo off
rem Windows (DOS) entry point, twin of run.sh.
rem   run.bat                  run every stage that is stale or missing (default config)
rem   run.bat status           any other arguments go to: python -m core.pipeline ...
rem   run.bat run --only 4 --force
rem   run.bat test [ARGS]      install the test extra and run the tests (ARGS go to pytest)
rem   run.bat serve            serve the finished run: HTTP API and MCP on 127.0.0.1:8000 (README)
rem   run.bat add-key NAME --scopes segments,customers   create an API key for serve
rem Creates .venv (Python 3.11 or newer; override with: set PYTHON=C:\path\to\python.exe) and
rem installs the project only when it is missing or pyproject.toml changed. Relative --config and
rem --artifacts paths are taken from the folder you run this in. A .venv left without
rem Scripts\python.exe by an interrupted creation is deleted and created again.
rem Written without parenthesised blocks where a path is expanded: a ")" in a path such as
rem "C:\Program Files (x86)" would end a block early.
setlocal
set "PYTHONUTF8=1"
set "HERE=%~dp0"
set "VENV_PY=%HERE%.venv\Scripts\python.exe"
set "EXTRA="
if /i "%~1"=="test" set "EXTRA=test"

rem Started by a double click, cmd runs: cmd.exe /c ""C:\...\run.bat" ", so its command line holds
rem this file's full path; typed in a console it does not. Then errors pause (see :finish) so the
rem window stays open to be read. The comparison uses delayed expansion rather than piping the
rem command line through echo to find, where an "&" in the folder's path would run as a command.
set "DOUBLE_CLICKED="
setlocal EnableDelayedExpansion
set "DC="
if /i not "!cmdcmdline:%~f0=!"=="!cmdcmdline!" set "DC=1"
endlocal & set "DOUBLE_CLICKED=%DC%"

if exist "%VENV_PY%" goto :venv_ready
call :find_python
if errorlevel 1 goto :fail
rem A .venv folder without Scripts\python.exe is what an interrupted creation leaves; "python -m
rem venv" over it would keep the broken parts, so delete it and start again.
if not exist "%HERE%.venv" goto :create_venv
echo Removing the incomplete .venv (it has no Scripts\python.exe) ...
rmdir /s /q "%HERE%.venv"
if exist "%HERE%.venv" goto :venv_not_removed
:create_venv
echo Creating .venv with %PYTHON_CMD% ...
%PYTHON_CMD% -m venv "%HERE%.venv"
if errorlevel 1 goto :venv_failed
:venv_ready

rem env_stamp.py is written only after a complete install, so an install that failed midway is
rem simply run again next time.
"%VENV_PY%" "%HERE%scripts\env_stamp.py" check %EXTRA%
if not errorlevel 1 goto :installed
call :check_prerequisites
if errorlevel 1 goto :fail
call :install
if errorlevel 1 goto :install_failed
:installed

if defined EXTRA goto :tests
"%VENV_PY%" -m core.pipeline %*
set "CODE=%errorlevel%"
goto :finish

:tests
rem Give pytest everything typed after the word "test", untouched. A loop of shift and %%1 splits
rem "-o cache_dir=x" at the "=" (cmd splits arguments at = , ; too) and stops at an empty "".
rem %%* is the arguments exactly as typed (shift never changes it); "*test=" deletes up to and
rem including the first "test", case-insensitively, which is the first argument here; a quoted
rem "test" loses its quotes too. No quotes around PYTEST_ARGS=...: the quotes inside the arguments
rem then stay paired, so an "&" or "|" inside a quoted argument stays quoted.
set PYTEST_ARGS=%*
if /i %1=="test" goto :strip_quoted_test
set PYTEST_ARGS=%PYTEST_ARGS:*test=%
goto :run_tests
:strip_quoted_test
set PYTEST_ARGS=%PYTEST_ARGS:*"test"=%
:run_tests
pushd "%HERE%"
"%VENV_PY%" -m pytest %PYTEST_ARGS%
set "CODE=%errorlevel%"
popd
goto :finish

:fail
set "CODE=1"
:finish
if "%CODE%"=="0" exit /b 0
if defined DOUBLE_CLICKED pause
exit /b %CODE%

:venv_not_removed
echo Could not delete the incomplete .venv (is a program using it?). Close it, delete the .venv
echo folder by hand (rmdir /s /q .venv in this folder), then run this again.
goto :fail

:venv_failed
echo Could not create .venv with %PYTHON_CMD%.
rem Delete the half-made folder so that the next run starts clean.
if exist "%HERE%.venv" rmdir /s /q "%HERE%.venv"
goto :fail

:install_failed
echo Installing the project into .venv failed (the error is above). Fix its cause (network, proxy,
echo disk space) and run this again: the install is repeated until it completes. If it keeps
echo failing, delete .venv (rmdir /s /q .venv in this folder) and run this again.
goto :fail

:install
"%VENV_PY%" -m pip install --quiet --upgrade pip
if errorlevel 1 exit /b 1
set "TARGET=%HERE%."
if defined EXTRA set "TARGET=%HERE%.[test]"
"%VENV_PY%" -m pip install -e "%TARGET%"
if errorlevel 1 exit /b 1
"%VENV_PY%" "%HERE%scripts\env_stamp.py" write %EXTRA%
exit /b %errorlevel%

:check_prerequisites
rem TensorFlow's Windows build needs msvcp140.dll and msvcp140_1.dll (its self_check.py lists
rem them) from the Visual C++ 2015-2022 Redistributable; msvcp140_1.dll comes only with 2017 on.
if exist "%SystemRoot%\System32\msvcp140_1.dll" goto :vc_runtime_ok
echo TensorFlow needs the Microsoft Visual C++ 2015-2022 Redistributable, which is missing here
echo (%SystemRoot%\System32\msvcp140_1.dll was not found). Download and run
echo   Microsoft Visual C++ Redistributable for Visual Studio 2015-2022 (x64), vc_redist.x64.exe
echo from Microsoft's page "Latest supported Visual C++ Redistributable downloads"
echo (https://aka.ms/vs/17/release/vc_redist.x64.exe), then run this again.
exit /b 1
:vc_runtime_ok
rem TensorFlow 2.21 installs files up to 163 characters below .venv\Lib\site-packages\ (24 more),
rem and Windows refuses paths of 260 characters or more unless long paths are enabled, so this
rem folder's path (HERE) may have about 72 characters. Python counts them: HERE is in its
rem environment, which avoids passing a path ending in a backslash as an argument.
"%VENV_PY%" -c "import os, sys; sys.exit(len(os.environ['HERE']) > 70)"
if not errorlevel 1 goto :paths_ok
rem The full path to find.exe: a Unix find on PATH (Git's usr\bin) would take "0x1" as a file.
reg query HKLM\SYSTEM\CurrentControlSet\Control\FileSystem /v LongPathsEnabled 2>nul | "%SystemRoot%\System32\find.exe" "0x1" >nul
if not errorlevel 1 goto :paths_ok
echo This folder's path is too long for TensorFlow's files while Windows long paths are off:
echo   "%HERE%"
echo Either enable long paths: in a PowerShell opened with "Run as administrator", run
echo   New-ItemProperty -Path "HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem" -Name "LongPathsEnabled" -Value 1 -PropertyType DWORD -Force
echo then open a new terminal; or move this folder to a shorter path such as C:\src\retail.
echo Then run this again.
exit /b 1
:paths_ok
exit /b 0

:find_python
if not defined PYTHON goto :try_py_launcher
rem Like run.sh, the override must be Python 3.11 or newer too. Quotes typed around it are dropped.
set "PYTHON=%PYTHON:"=%"
"%PYTHON%" -c "import sys; sys.exit(sys.version_info[:2] < (3, 11))" >nul 2>nul
if errorlevel 1 goto :bad_python_override
set PYTHON_CMD="%PYTHON%"
exit /b 0
:bad_python_override
echo PYTHON is set to "%PYTHON%", which does not run or is not Python 3.11 or newer. It says:
"%PYTHON%" --version
echo Set PYTHON to the python.exe of a Python 3.11 or newer, or clear it (set PYTHON=) to let
echo this script look for one, then run this again.
exit /b 1
:try_py_launcher
rem Like run.sh (python3.11, then python3, then python): the launcher's 3.11 first, the version this
rem project is developed on, then its newest Python 3 if that is 3.11 or newer, then python.
where py >nul 2>nul
if errorlevel 1 goto :try_python
py -3.11 -c "import sys" >nul 2>nul
if errorlevel 1 goto :try_py3
set "PYTHON_CMD=py -3.11"
exit /b 0
:try_py3
py -3 -c "import sys; sys.exit(sys.version_info[:2] < (3, 11))" >nul 2>nul
if errorlevel 1 goto :try_python
set "PYTHON_CMD=py -3"
exit /b 0
:try_python
where python >nul 2>nul
if errorlevel 1 goto :no_python
python -c "import sys; sys.exit(sys.version_info[:2] < (3, 11))" >nul 2>nul
if errorlevel 1 goto :no_python
set "PYTHON_CMD=python"
exit /b 0
:no_python
echo Python 3.11 or newer was not found. Install it from python.org (tick "Add python.exe to PATH"),
echo or set PYTHON=C:\path\to\python.exe, then run this again.
exit /b 1
