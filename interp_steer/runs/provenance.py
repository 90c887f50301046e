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


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def file_commit(path: str | Path) -> str:
    """The commit that last changed ``path`` (raises if the file is not committed)."""
    path = Path(path).resolve()
    r = _git(path.parent, "log", "-1", "--format=%H", "--", path.name)
    if r.returncode != 0 or not r.stdout.strip():
        raise ValueError(f"{path} is not committed: commit it before the cells it governs")
    if _git(path.parent, "status", "--porcelain", "--", path.name).stdout.strip():
        raise ValueError(
            f"{path} has uncommitted changes: what governs the cells must be committed"
        )
    return r.stdout.strip()


def require_after(preregistration: str | Path, cell_versions) -> str:
    """The pre-registration's commit, after checking that every cell was computed from a
    clean checkout at or after it (``cell_versions``: the ``_commit`` strings cells record,
    ``<version>+g<sha>``). A cell from before, or from an unrelated or dirty checkout,
    raises: results must not assemble from cells that the pre-registration did not govern.

    Args:
        preregistration: the committed pre-registration file.
        cell_versions: each cell's recorded code version.
    """
    pre = file_commit(preregistration)
    repo = Path(preregistration).resolve().parent
    for v in cell_versions:
        sha = str(v).split("+g")[-1].split("+")[0] if "+g" in str(v) else None
        if sha is None or str(v).endswith("+dirty"):
            raise ValueError(f"a cell was computed outside a clean checkout ({v!r})")
        if _git(repo, "merge-base", "--is-ancestor", pre, sha).returncode != 0:
            raise ValueError(
                f"a cell was computed at {sha}, which does not come after the "
                f"pre-registration's commit {pre[:12]}: recompute it"
            )
    return pre
