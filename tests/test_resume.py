"""Real runs killed with SIGKILL mid-way and resumed in a new process.

Tests 1-3 (``sweep()``, ``interp-steer sweep``, the steering-window analysis) run the same
job three times, each in its own child process: once uninterrupted (the reference), once
killed (``SIGKILL``) as soon as some of its cells are on disk, and once resumed from what the
killed run left. The resumed run must compute only the cells the killed one had not finished
(finished cells' files keep their bytes, mtime and inode; every computed cell is logged by
the child) and must end with the reference's summary, number for number. Test 4
(``interp-steer figures --resume``) kills and resumes without a reference.

The children are forks of this process: importing torch + TransformerLens costs ~25 s on a
busy 2-core machine, a fork nothing. Each child sets one torch thread (the same in every run,
and no OpenMP pool carried over a fork) and leads its own process group, which is SIGKILLed
(killed run) or killed on the way out whatever happens (every test). All runs of a test share
one ``INTERP_STEER_CACHE``: the GEMM backend (`interp_steer.models.fast`) is chosen by timing and
kept there, so the reference's choices, which can change the last bits of the floats, are
the later runs' too, as they are for a user resuming on the machine that started the run.

The per-cell delay that makes the kill land mid-run lives in the children only: it wraps the
library's own cell functions (`interp_steer.eval.sweep._sweep_cell`, `interp_steer.runs.cells.cell` as
`analyses.steering_window` calls it), which still compute the real cells.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FORK = multiprocessing.get_context("fork")
TIMEOUT = 240  # seconds for any one child or wait; only reached when something hangs
DELAY = 0.5  # seconds slept before each cell in the run that is killed
PROMPTS = ["hi there", "tell me a story"]
HOOKS = ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
    reason="forks children and kills process groups (POSIX)",
)


# ---------------------------------------------------------------- child processes


class Children:
    """Forked children; whatever is still running at teardown is SIGKILLed with its group."""

    def __init__(self):
        self.procs: list = []

    def start(self, target, *args):
        proc = FORK.Process(target=_child_main, args=(target, *args), daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def run(self, target, *args) -> None:
        """Run a child to its end; it must succeed."""
        proc = self.start(target, *args)
        proc.join(TIMEOUT)
        if proc.is_alive():
            self.kill(proc)
            pytest.fail(f"child {target.__name__}{args} still running after {TIMEOUT} s")
        assert proc.exitcode == 0, f"child {target.__name__} failed (see its stderr above)"

    def kill(self, proc) -> None:
        """SIGKILL the child and its process group (anything it started)."""
        for kill, pid in ((os.killpg, proc.pid), (os.kill, proc.pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
        proc.join(30)

    def kill_when(self, proc, ready, what: str) -> None:
        """Poll until ``ready()``, then SIGKILL the child; it must not have ended by itself."""
        t0 = time.monotonic()
        while not ready():
            if not proc.is_alive():
                pytest.fail(f"the run ended (exit {proc.exitcode}) before {what}")
            if time.monotonic() - t0 > TIMEOUT:
                pytest.fail(f"no {what} after {TIMEOUT} s")
            time.sleep(0.01)
        self.kill(proc)
        assert proc.exitcode == -signal.SIGKILL, f"the run ended by itself ({proc.exitcode})"

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                self.kill(proc)


@pytest.fixture
def children(tmp_path, monkeypatch):
    # the children inherit this environment: caches under tmp_path, shared by a test's runs
    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    kids = Children()
    try:
        yield kids
    finally:
        kids.close()


def _child_main(target, *args) -> None:
    os.setpgid(0, 0)  # its own group, so that a kill reaches whatever it starts
    import torch

    torch.set_num_threads(1)
    target(*args)


def _log_computed(log: Path, name: str) -> None:
    with open(log, "a") as f:
        f.write(name + "\n")


def _computed(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _delay_sweep_cells(log: Path, delay: float) -> None:
    """In a child: every sweep cell sleeps ``delay`` s, then is computed and logged."""
    import interp_steer.eval.sweep as sw

    real = sw._sweep_cell

    def cell(model, cell, **kw):
        time.sleep(delay)
        rows = real(model, cell, **kw)
        _log_computed(log, f"{cell.id}.jsonl")  # its part's name
        return rows

    sw._sweep_cell = cell


def _success(texts) -> np.ndarray:
    return np.array([t.count("e") / max(len(t), 1) for t in texts])


def _embed(texts) -> np.ndarray:
    """A cheap deterministic stand-in for MiniLM: L2-normalised character counts."""
    e = np.zeros((len(texts), 128))
    for i, t in enumerate(texts):
        for ch in t:
            e[i, ord(ch) % 128] += 1
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


class _CheapMiniLM:
    name = "minilm"

    def __call__(self, texts):
        return _embed(texts)


# ---------------------------------------------------------------- comparisons


def _snapshot(files) -> dict[Path, tuple]:
    """Bytes, mtime and inode of each file: an atomic rewrite changes the last two."""
    return {
        Path(p): (Path(p).read_bytes(), Path(p).stat().st_mtime_ns, Path(p).stat().st_ino)
        for p in sorted(files)
    }


def _json_without(path: Path, drop: set[str]) -> str:
    """The JSON file with the keys in ``drop`` removed at any depth, as a canonical string
    (NaN == NaN here, unlike in float comparisons)."""

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return json.dumps(strip(json.loads(path.read_text())), sort_keys=True)


def _check_sweep_outputs(ref: Path, got: Path, cells: int) -> None:
    """The resumed sweep's outputs equal the reference's: every cell's rows (byte for byte),
    the summary and sample tables, and the JSON but its ``interp_steer`` (the code version,
    ``+dirty`` while anyone edits the checkout)."""
    ref_parts = sorted(Path(f"{ref}.cells").glob("*.jsonl"))
    assert len(ref_parts) == cells
    assert [p.name for p in sorted(Path(f"{got}.cells").glob("*.jsonl"))] == [
        p.name for p in ref_parts
    ]
    for p in ref_parts:
        assert (Path(f"{got}.cells") / p.name).read_bytes() == p.read_bytes(), p.name
    for suffix in (".csv", "_samples.csv"):
        assert Path(f"{got}{suffix}").read_text() == Path(f"{ref}{suffix}").read_text(), suffix
    assert _json_without(Path(f"{got}.json"), {"interp_steer"}) == _json_without(
        Path(f"{ref}.json"), {"interp_steer"}
    )


def _kill_and_resume(children, job, out: Path, store: Path, pattern: str, k: int, n: int):
    """Run ``job(out, log, delay, resume)`` uninterrupted into ``out``_ref, then into ``out``
    killed once ``k`` of its ``n`` cells (``pattern`` under ``store``) are written, then
    resumed; check the resume computed exactly the missing cells and left the finished ones
    untouched. Returns the reference and resumed ``out``."""
    ref = out.with_name(out.name + "_ref")
    children.run(job, ref, out.parent / "ref.log", 0.0, False)
    assert len(_computed(out.parent / "ref.log")) == n

    killed = children.start(job, out, out.parent / "killed.log", DELAY, False)
    children.kill_when(killed, lambda: len(list(store.glob(pattern))) >= k, f"{k} finished cells")
    finished = _snapshot(store.glob(pattern))
    print(f"killed with {len(finished)} of {n} cells finished: {[p.name for p in finished]}")
    assert k <= len(finished) < n, "the kill must land mid-run"

    log = out.parent / "resumed.log"
    children.run(job, out, log, 0.0, True)
    done = _snapshot(store.glob(pattern))
    assert len(done) == n
    # (a) no finished cell was recomputed or rewritten; every other one was computed once
    assert {name: done[name] for name in finished} == finished
    computed = _computed(log)
    assert len(computed) == len(set(computed)) == n - len(finished)
    assert set(computed) == {p.name for p in set(done) - set(finished)}
    return ref, out


# ---------------------------------------------------------------- 1. sweep()


def _sweep_job(out: Path, log: Path, delay: float, resume: bool) -> None:
    from interp_steer import build_vector
    from interp_steer.eval.sweep import sweep
    from interp_steer.testing import SENTIMENT_PAIRS, tiny_model

    _delay_sweep_cells(log, delay)
    model = tiny_model("llama")
    vectors = {
        f"v{i}": build_vector(model, SENTIMENT_PAIRS, hook, progress=False)
        for i, hook in enumerate(HOOKS)
    }
    sweep(
        model,
        vectors,
        [2.0, 6.0],  # + the unsteered 0: 2 vectors x 3 strengths, one cell each
        PROMPTS,
        success=_success,
        samples_per_prompt=2,
        max_new_tokens=6,
        seed=3,
        embed=_embed,
        out=out,
        resume=resume,
        alphas_per_cell=1,
        progress=False,
    )


def test_sweep_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path, children):
    out = tmp_path / "sweep"
    store = tmp_path / "sweep.cells"
    ref, got = _kill_and_resume(children, _sweep_job, out, store, "*.jsonl", k=2, n=6)
    _check_sweep_outputs(ref, got, cells=6)


# ---------------------------------------------------------------- 2. the CLI


def _cli(argv: list[str], stdout: Path) -> None:
    """``interp-steer ARGV`` with the tiny model for every --model and a cheap embedder for
    MiniLM (loading sentence-transformers costs more than the whole run)."""
    import interp_steer
    import interp_steer.eval.classifiers
    from interp_steer import cli
    from interp_steer.testing import tiny_model

    interp_steer.load_model = lambda *a, **k: tiny_model("llama")
    interp_steer.eval.classifiers.MiniLM = _CheapMiniLM
    with open(stdout, "w") as f, contextlib.redirect_stdout(f):
        cli.main(argv)


def _cli_build(vectors: list[Path], pairs: Path) -> None:
    for i, v in enumerate(vectors):
        hook, method = HOOKS[i % 2], ("mean_diff", "pca")[i // 2]
        argv = ["build", "--data", str(pairs), "--hook", hook, "--method", method]
        _cli([*argv, "-o", str(v)], v.with_suffix(".txt"))


def _cli_sweep_job(vectors: list[Path], out: Path, log: Path, delay: float, resume: bool):
    _delay_sweep_cells(log, delay)
    argv = ["sweep", "--alphas", "2,6", "--samples", "2", "--max-new-tokens", "6"]
    argv += ["--success", "contains:e,the", "--seed", "3", "--out", str(out)]
    argv += [a for v in vectors for a in ("--vector", str(v))]
    argv += [a for p in PROMPTS for a in ("--prompt", p)]
    _cli(argv + (["--resume"] if resume else []), out.with_suffix(".stdout"))


def test_cli_sweep_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, children):
    from interp_steer.testing import SENTIMENT_PAIRS

    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(SENTIMENT_PAIRS))
    # 4 vectors; the CLI packs a vector's 3 strengths (12 samples) into one cell: 4 cells
    vectors = [tmp_path / f"vec{i}.safetensors" for i in range(4)]
    children.run(_cli_build, vectors, pairs)

    def job(out, log, delay, resume):
        _cli_sweep_job(vectors, out, log, delay, resume)

    out = tmp_path / "cli"
    store = tmp_path / "cli.cells"
    ref, got = _kill_and_resume(children, job, out, store, "*.jsonl", k=2, n=4)
    _check_sweep_outputs(ref, got, cells=4)
    # what the command prints: the summary table
    printed = got.with_suffix(".stdout").read_text()
    assert printed == ref.with_suffix(".stdout").read_text() and "vec3" in printed


# ---------------------------------------------------------------- 3. an analysis


def _window_job(out: Path, log: Path, delay: float, resume: bool) -> None:
    """The steering-window analysis on a tiny model, as tests/test_analyses.py runs it. It
    always resumes from the cells under ``out`` (``resume`` is not a switch it has)."""
    import analyses.steering_window as sw
    from interp_steer.testing import TINY_WINDOW, tiny_model

    real = sw.cell

    def cell(path, compute, allow_compute=True):
        def delayed():
            time.sleep(delay)
            result = compute()
            _log_computed(log, Path(path).name)
            return result

        return real(path, delayed, allow_compute)

    sw.cell = sw.cells.cell = cell  # the screen's cell and the facts' cells
    cfg = sw.Config.quick_config(**TINY_WINDOW)
    sw.run(cfg, out, models={"tiny": tiny_model("llama", n_ctx=512)})


# what legitimately differs between a resumed and an uninterrupted run: wall time, and the
# code version (``+dirty`` flips while anyone edits the checkout) that wrote the summary, the
# figure and each cell
WINDOW_VOLATILE = {
    "seconds",
    "_seconds",
    "interp_steer",
    "_commit",
    "target_cell_commit",
    "capability_cell_commit",
}


@pytest.mark.filterwarnings("ignore")
def test_analysis_killed_mid_run_resumes_to_the_uninterrupted_summary(tmp_path, children):
    """steering_window's cells: screen, then per read (last, answer) a target curve, and a
    capability curve for the last-token read (the answer read's target never wins on a random
    model): 4 cells, killed after 2."""
    out = tmp_path / "window"
    store = tmp_path / "window" / ".cells"
    ref, got = _kill_and_resume(children, _window_job, out, store, "*/*/*.json", k=2, n=4)
    ref_cells = sorted((ref / ".cells").glob("*/*/*.json"))
    assert len(ref_cells) == 4
    for p in ref_cells:
        mine = got / p.relative_to(ref)
        assert _json_without(mine, WINDOW_VOLATILE) == _json_without(p, WINDOW_VOLATILE), p.name
    for name in ("steering_window_summary_quick.json", "steering_window_quick.json"):
        assert _json_without(got / name, WINDOW_VOLATILE) == _json_without(
            ref / name, WINDOW_VOLATILE
        ), name
    summary = json.loads((got / "steering_window_summary_quick.json").read_text())
    assert "caracara" in summary["models"]["tiny"]["questions"]


# ---------------------------------------------------------------- 4. figures --resume


def _figures_job(run_dir: Path, log: Path, resume: bool) -> None:
    """``interp-steer figures --quick --only steering_window --only synthetic_data`` in
    ``run_dir`` (it writes to ./figures): the figures store's cells are whole analyses, here
    real ones on the tiny model (steering_window's quick config, synthetic_data's shrunk)."""
    import analyses.steering_window as sw
    import analyses.synthetic_data as sd
    from interp_steer import cli
    from interp_steer.testing import tiny_model

    for mod in (sw, sd):
        mod.load_model = lambda *a, **k: tiny_model("llama", n_ctx=512)
    sd.MiniLM = _CheapMiniLM
    # synthetic_data's quick grid, smaller still (its figures and bootstraps cost ~15 s here)
    real_quick = sd.Config.quick_config
    small = {"n_prompts": 4, "max_new_tokens": 6, "n_boot": 100}
    sd.Config.quick_config = staticmethod(lambda **kw: real_quick(**{**small, **kw}))
    real = cli._run_analysis

    def analysis(name, quick, seed):
        real(name, quick, seed)
        _log_computed(log, f"{name}.jsonl")

    cli._run_analysis = analysis
    os.chdir(run_dir)
    argv = ["figures", "--quick", "--only", "steering_window", "--only", "synthetic_data"]
    _cli(argv + (["--resume"] if resume else []), run_dir / "stdout.txt")


@pytest.mark.filterwarnings("ignore")
def test_cli_figures_resume_skips_the_finished_analysis(tmp_path, children):
    """Killed inside synthetic_data (once its first sweep cell is written), after
    steering_window finished; ``figures --resume`` runs synthetic_data only, which resumes
    its own sweep cells. No uninterrupted reference here (another ~10 s); test 3 compares an
    analysis's numbers with an uninterrupted run's."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    figs = run_dir / "figures"
    store = figs / ".runs" / "figures_quick_seed0"

    def inner_parts():
        return list(figs.glob(".cells/synthetic_data_*/*.cells/*.jsonl"))

    killed = children.start(_figures_job, run_dir, tmp_path / "killed.log", False)
    children.kill_when(killed, lambda: len(inner_parts()) > 0, "a synthetic_data sweep cell")
    assert _computed(tmp_path / "killed.log") == ["steering_window.jsonl"]
    assert [p.name for p in store.glob("*.jsonl")] == ["steering_window.jsonl"]
    assert not (figs / "synthetic_data_quick_summary.json").exists(), "the kill came too late"
    # steering_window's cells, outputs and figures-store part; synthetic_data's finished cells
    window = [
        p for p in figs.rglob("*") if p.is_file() and "steering_window" in str(p.relative_to(figs))
    ]
    assert len(window) >= 5
    finished = _snapshot(window + inner_parts())

    log = tmp_path / "resumed.log"
    children.run(_figures_job, run_dir, log, True)
    assert _computed(log) == ["synthetic_data.jsonl"]  # steering_window was not rerun
    assert _snapshot(finished) == finished  # nor any finished cell of synthetic_data
    assert sorted(p.name for p in store.glob("*.jsonl")) == [
        "steering_window.jsonl",
        "synthetic_data.jsonl",
    ]
    summary = json.loads((figs / "synthetic_data_quick_summary.json").read_text())
    assert set(summary["concepts"]) == {"scam", "harassment"}
    printed = (run_dir / "stdout.txt").read_text()  # each analysis's seconds, from its part
    assert "steering_window:" in printed and "synthetic_data:" in printed
