import sys
from functools import partial

import numpy as np
import pandas as pd
import pytest

from interp_steer import build_vector
from interp_steer.eval.sweep import sweep
from interp_steer.runs.executor import Cell, ResultStore, run_grid
from interp_steer.testing import SENTIMENT_PAIRS, tiny_model

HOOK = "blocks.1.hook_resid_pre"
PAIRS = SENTIMENT_PAIRS[:3]


def square(_model, cell):
    return [{"x": cell.args["x"], "y": cell.args["x"] ** 2}]


def _sweep(llama, **kw):
    v = build_vector(llama, PAIRS, HOOK, progress=False)
    return sweep(
        llama,
        {"v": v, "neg": -v},
        [1.0, 2.0, 4.0],
        ["hi", "yo"],
        success=lambda ts: np.array([float("a" in t) for t in ts]),
        samples_per_prompt=2,
        max_new_tokens=6,
        embed=lambda ts: np.stack([np.r_[len(t), 1.0] / np.hypot(len(t), 1.0) for t in ts]),
        progress=False,
        **kw,
    )


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(a[c], b[c], rtol=1e-5, atol=1e-7, err_msg=c)
        else:
            assert a[c].tolist() == b[c].tolist(), c


def test_sweep_rows_do_not_depend_on_how_the_grid_is_cut(llama):
    whole, s_whole = _sweep(llama, alphas_per_cell=4)
    cut, s_cut = _sweep(llama, alphas_per_cell=1)
    _same(s_whole, s_cut)
    _same(whole, cut)


def test_ray_sweep_equals_local_and_resumes(llama, tmp_path):
    pytest.importorskip("ray", reason="the [scale] extra is not installed")
    import ray

    local, s_local = _sweep(llama, alphas_per_cell=1)
    try:
        # as run_grid starts its own instance: workers at niceness 0, or the other xdist
        # worker starves them (Ray's default niceness is 15)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _system_config={"worker_niceness": 0},
        )
        remote, s_remote = _sweep(
            llama,
            alphas_per_cell=1,
            executor="ray",
            workers=2,
            load=partial(tiny_model, "llama"),  # each worker builds its own copy
            out=tmp_path / "sw",
        )
    finally:
        ray.shutdown()
    _same(s_local, s_remote)
    _same(local, remote)
    parts = sorted(p.name for p in (tmp_path / "sw.cells").glob("*.jsonl"))
    assert parts == [f"{n}_a{i:03d}.jsonl" for n in ("neg", "v") for i in range(4)]
    # resume: every cell is on disk, so nothing is recomputed (a model-less run would fail)
    again, s_again = _sweep(llama, alphas_per_cell=1, out=tmp_path / "sw", resume=True)
    _same(s_local, s_again)


def test_resume_skips_finished_cells_and_recomputes_a_corrupt_one(tmp_path):
    cells = [Cell(f"c{i}", {"x": i}) for i in range(4)]
    store = ResultStore(tmp_path / "st", {"grid": "squares"})
    calls = []

    def flaky(model, cell):
        calls.append(cell.id)
        if cell.id == "c2":
            raise RuntimeError("killed")
        return square(model, cell)

    with pytest.raises(RuntimeError, match="killed"):
        run_grid(cells, flaky, store=store, progress=False)
    assert sorted(p.stem for p in store.root.glob("c*.jsonl")) == ["c0", "c1"]
    (store.root / "c1.jsonl").write_text('{"x": 1, "y"')  # half-written
    calls.clear()
    with pytest.warns(UserWarning, match="c1.jsonl is unreadable"):
        out = run_grid(cells, square_logged(calls), store=store, resume=True, progress=False)
    assert calls == ["c1", "c2", "c3"]
    assert [r[0]["y"] for r in out] == [0, 1, 4, 9]


def square_logged(calls):
    def work(model, cell):
        calls.append(cell.id)
        return square(model, cell)

    return work


def test_store_refuses_another_config_and_bad_input(tmp_path):
    ResultStore(tmp_path / "st", {"a": 1})
    with pytest.raises(ValueError, match="another config"):
        ResultStore(tmp_path / "st", {"a": 2})
    with pytest.raises(ValueError, match=r"config.b is only in this run"):
        ResultStore(tmp_path / "st", {"a": 1, "b": 0})


def test_store_accepts_float_noise_and_refuses_real_changes(tmp_path):
    """A store written on another CPU (floats equal to ~1e-7) resumes; a changed strength,
    vector component, length or string does not."""
    v = [0.5, -1.25, 3.0, 1e-9]
    cfg = {"alphas": (32.620819091796875, 65.24), "vectors": {"m": {"hook": "h", "d": v}}}
    ResultStore(tmp_path / "st", cfg)
    noisy = {
        "alphas": [32.6208251953125, 65.24],
        "vectors": {"m": {"hook": "h", "d": v[:3] + [3e-9]}},
    }
    ResultStore(tmp_path / "st", noisy)  # relative 2e-7 on alpha; the tiny entry is noise
    for bad, where in [
        ({**cfg, "alphas": (32.7, 65.24)}, "alphas"),
        ({**cfg, "vectors": {"m": {"hook": "h", "d": [0.5, -1.2, 3.0, 0.0]}}}, "vectors.m.d"),
        ({**cfg, "vectors": {"m": {"hook": "h", "d": v[:3]}}}, "entries"),
        ({**cfg, "vectors": {"m": {"hook": "g", "d": v}}}, "hook"),
    ]:
        with pytest.raises(ValueError, match=where):
            ResultStore(tmp_path / "st", bad)
    with pytest.raises(ValueError, match="cell id"):
        Cell("a/b")
    with pytest.raises(ValueError, match="unique"):
        run_grid([Cell("a"), Cell("a")], square, progress=False)
    with pytest.raises(ValueError, match="executor must be one of"):
        run_grid([Cell("a", {"x": 1})], square, executor="dask", progress=False)
    with pytest.raises(ValueError, match="needs a results store"):
        run_grid([Cell("a", {"x": 1})], square, resume=True, progress=False)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"interp_steer\[scale\]"):
        run_grid([Cell("a", {"x": 1})], square, executor="ray", progress=False)
