"""Which code produced a result: the package version plus the git commit of its checkout."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from interp_steer import __version__


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<version>+g<commit>`` (``+dirty`` with uncommitted edits; the bare version outside a
    checkout). Read once per process, so a long run records the commit it started from even
    if more commits land while it runs."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return __version__  # an installed copy outside a checkout
    return f"{__version__}+g{commit}" + ("+dirty" if dirty else "")
