"""Tell the runners whether .venv already has this project's dependencies installed.

    python scripts/env_stamp.py check [test]   exit 0 if up to date, 1 if an install is needed
    python scripts/env_stamp.py write [test]   record that the install just succeeded

The stamp holds a hash of pyproject.toml and the Python version, so editing
the dependencies (or recreating .venv with another Python) triggers exactly
one reinstall. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _stamp_path(extra: str) -> Path:
    return Path(sys.prefix) / f".retail-segmentation-installed{'-' + extra if extra else ''}"


def _fingerprint() -> str:
    pyproject = (ROOT / "pyproject.toml").read_bytes().replace(b"\r\n", b"\n")
    return f"{hashlib.sha256(pyproject).hexdigest()} python-{sys.version_info[0]}.{sys.version_info[1]}"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("check", "write") or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    extra = argv[1] if len(argv) == 2 else ""
    stamp = _stamp_path(extra)
    if argv[0] == "write":
        stamp.write_text(_fingerprint() + "\n", encoding="utf-8")
        return 0
    # The test extra installs everything the plain install does, so either stamp will do for a run.
    candidates = [stamp] if extra else [stamp, _stamp_path("test")]
    if any(p.exists() and p.read_text(encoding="utf-8").strip() == _fingerprint() for p in candidates):
        return 0
    print(f"Installing the project into {sys.prefix} (dependencies missing or changed) ...", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
