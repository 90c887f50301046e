"""Every analysis has the same face (`analyses` docstring): a Config dataclass with
quick_config, run / headline / main, a command line with the shared options and no swallowed
ones, and modules that fit in a reader's head."""

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from analyses import ANALYSES, load

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


@pytest.mark.parametrize("name", list(ANALYSES))
def test_analysis_conforms(name, capsys):
    mod = load(name)
    assert mod.__doc__ and mod.__doc__.strip(), f"{name} has no docstring"
    assert dataclasses.is_dataclass(mod.Config), name
    quick = mod.Config.quick_config()
    assert isinstance(quick, mod.Config) and quick.quick is True
    assert mod.Config().quick is False
    for fn in ("run", "headline", "main"):
        assert callable(getattr(mod, fn, None)), f"{name}.{fn}"
    params = list(inspect.signature(mod.run).parameters)
    assert params[0] == "cfg", f"{name}.run's first argument is {params[0]}"
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--quick", "--seed", "--out", "--allow-dirty"):
        assert option in help_text, f"{name} lacks {option}"
    with pytest.raises(SystemExit) as e:
        mod.main(["--no-such-option"])
    assert e.value.code == 2


def test_modules_fit_in_a_readers_head():
    too_long = {
        str(p.relative_to(ROOT)): n
        for folder in ("interp_steer", "analyses")
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, too_long


def test_python_m_analyses_lists_and_runs():
    out = subprocess.run(
        [sys.executable, "-m", "analyses", "list"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and [line.split()[0] for line in out.stdout.splitlines()] == list(
        ANALYSES
    )
    bad = subprocess.run(
        [sys.executable, "-m", "analyses", "run", "nope"], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode != 0 and "unknown analysis 'nope'" in bad.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "analyses", "run", "judge_audit", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert helped.returncode == 0 and "--labels" in helped.stdout


def test_committed_figures_carry_the_envelope():
    """Every committed figure JSON of an analysis names its config (with the seed) and the
    clean commit that made it."""
    import json
    import re

    found = 0
    for f in sorted((ROOT / "figures").glob("*.json")):
        if not f.name.startswith(tuple(ANALYSES)):
            continue  # a tool's record (mutation_check.json), not an analysis's figure
        found += 1
        d = json.loads(f.read_text())
        assert isinstance(d.get("config"), dict) and "seed" in d["config"], f.name
        assert re.fullmatch(r"\d+\.\d+\.\d+\+g[0-9a-f]{12}", str(d.get("interp_steer"))), (
            f"{f.name}: interp_steer = {d.get('interp_steer')!r}, not a clean commit"
        )
    assert found, "no committed figure JSON found"
