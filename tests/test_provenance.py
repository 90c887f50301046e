"""Pre-registration before cells: `runs.provenance.require_after` on a real git history."""

import pytest

from interp_steer.runs.provenance import file_commit, require_after
from interp_steer.testing import git


def test_cells_must_come_after_the_preregistration(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-q", "-m", "code")
    before = git(tmp_path, "rev-parse", "HEAD")
    pre = tmp_path / "prereg.json"
    with pytest.raises(ValueError, match="not committed"):
        file_commit(pre)
    pre.write_text('{"margin": 0.2}\n')
    git(tmp_path, "add", "prereg.json")
    git(tmp_path, "commit", "-q", "-m", "pre-register")
    registered = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "code.py").write_text("x = 2\n")
    git(tmp_path, "commit", "-qam", "more code")
    after = git(tmp_path, "rev-parse", "HEAD")

    assert require_after(pre, [f"0.1.0+g{registered[:12]}", f"0.1.0+g{after[:12]}"]) == registered
    with pytest.raises(ValueError, match="does not come after"):
        require_after(pre, [f"0.1.0+g{after[:12]}", f"0.1.0+g{before[:12]}"])
    with pytest.raises(ValueError, match="clean checkout"):
        require_after(pre, [f"0.1.0+g{after[:12]}+dirty"])
    with pytest.raises(ValueError, match="clean checkout"):
        require_after(pre, ["0.1.0"])
    pre.write_text('{"margin": 0.5}\n')  # widening the margin after the data shows
    with pytest.raises(ValueError, match="uncommitted changes"):
        require_after(pre, [f"0.1.0+g{after[:12]}"])
