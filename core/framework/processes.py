"""Whether a process is still running, on POSIX and on Windows.

``os.kill(pid, 0)`` is the POSIX idiom, but on Windows ``os.kill`` with
signal 0 sends CTRL_C_EVENT to the process group (Python maps any other
value to TerminateProcess): it would interrupt the processes it asks about.
Windows asks the kernel instead, through ``OpenProcess`` and
``GetExitCodeProcess``.
"""

from __future__ import annotations

import os
import sys

# Windows API values (winbase.h, winnt.h, winerror.h).
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
_STILL_ACTIVE = 259
_ERROR_ACCESS_DENIED = 5


def process_alive(pid: int) -> bool:
    """True when a process with id ``pid`` exists on this machine (it may belong to another user).

    A process that ended but was not yet reaped by its parent (a zombie)
    counts as alive on POSIX; pids are reused, so a very old pid may name
    an unrelated process: callers treat a live pid as "maybe still the
    owner", never as proof.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; we may not signal it (another user's process)
    return True


def _windows_process_alive(pid: int) -> bool:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        # Access denied: the process exists but runs as someone else (a service, another user).
        return ctypes.get_last_error() == _ERROR_ACCESS_DENIED
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # it exists (we hold a handle to it); we only cannot read its state
        # A process that really exited with code 259 reads as running: a documented quirk of this API.
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
