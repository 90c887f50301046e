import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from interp_steer.testing import tiny_model


@pytest.mark.filterwarnings("ignore")
def test_identifiability_analysis_writes_figures_summary_and_resumes(tmp_path):
    from analyses.identifiability import Config, run

    model = tiny_model("llama")
    # a random model steers nothing reliably: keep every r "valid" so the pipeline runs
    cfg = Config.quick_config(
        model="tiny-llama",
        traits=["formality", "sentiment"],
        positions_trait="formality",
        n_prompts=3,
        max_new_tokens=4,
        n_boot=100,
        coherence_floor=0.0,
        layer=1,
        token_counts=[50],
        jacobian_layer_prompts=1,
    )
    import analyses.identifiability as ia

    real = ia.operating_point

    def permissive(calib, cfg):
        op, grid = real(calib, cfg)
        for g in grid:
            g["valid"] = True
        return max(grid, key=lambda g: g["relative_norm"]), grid

    ia.operating_point = permissive
    try:
        res = run(cfg, tmp_path, model=model)
    finally:
        ia.operating_point = real
    for name in ["spectrum", "operating", "equivalence", "conditions", "overlap"]:
        stem = tmp_path / f"identifiability_tiny-llama_quick_{name}"
        assert stem.with_suffix(".png").stat().st_size > 10_000, name
        data = json.loads(stem.with_suffix(".json").read_text())
        assert data["config"]["seed"] == 0 and data["config"]["quick"] is True
    summary = json.loads((tmp_path / "identifiability_tiny-llama_quick_summary.json").read_text())
    assert summary["interp_steer"] and summary["seed"] == 0
    for trait in ["formality", "sentiment"]:
        t = summary["traits"][trait]
        assert set(t["operating_point"]) == {"alpha", "relative_norm"}
        assert {"mean", "ci_low", "ci_high"} <= set(t["efficacy"])
        assert {"kind", "p", "detected"} <= set(t["positive_control"])
        assert {"tost_p", "equivalent", "d", "d_ci", "efficacy_retained"} <= set(t["null_delta"])
        assert t["n"]["prompts"] == 3 and t["n"]["samples"] == 2
        assert 0 <= t["tost"]["power"] <= 1 and t["tost"]["margin"] > 0
        assert set(t["conditions"]) >= {"v", "v_reseeded", "null", "random", "jacobian"}
    assert "positions_all" in summary["traits"]["formality"]
    assert res["summary"]["traits"].keys() == summary["traits"].keys()
    # resume: every cell is read back, none recomputed (the texts would be identical anyway;
    # the file times prove nothing was rewritten)
    cells = list((tmp_path / ".cells").rglob("*.json"))
    assert cells
    before = {c: c.stat().st_mtime_ns for c in cells}
    ia.operating_point = permissive
    try:
        run(cfg, tmp_path, model=model)
    finally:
        ia.operating_point = real
    assert {c: c.stat().st_mtime_ns for c in cells} == before


def _check_outputs(stem, seed=0):
    assert stem.with_suffix(".png").stat().st_size > 10_000
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["config"]["seed"] == seed
    # the code that made it: version, and the git commit when run from a checkout
    from interp_steer import __version__

    assert data["interp_steer"].startswith(__version__)
    return data


@pytest.mark.filterwarnings("ignore")
def test_steering_window_analysis_and_resume(tmp_path, monkeypatch):
    import analyses.steering_window as sw

    model = tiny_model("llama", n_ctx=512)
    # a random model knows no fact: threshold 0 lets the pipeline run on the first one
    cfg = sw.Config.quick_config(
        models=["tiny"],
        known_threshold=0.0,
        rel_strengths=[0.5, 2.0],
        samples=2,
        code_tasks=2,
        code_samples=1,
        screen_samples=1,
        answer_tokens=4,
        code_tokens=8,
        n_boot=100,
    )
    sw.run(cfg, tmp_path, models={"tiny": model})
    data = _check_outputs(tmp_path / "steering_window_quick")
    summary = json.loads((tmp_path / "steering_window_summary_quick.json").read_text())
    ((fact, q),) = summary["models"]["tiny"]["questions"].items()
    assert fact == "caracara"  # Bostock's question first whenever it is "known"
    for key in ("unsteered_correct", "first_majority", "last_capable"):
        assert key in q
    assert set(q["window_rel"]) == {"value", "ci"} and summary["models"]["tiny"]["n_params"] > 0
    last = data["results"]["models"]["tiny"]["questions"][fact]["reads"]["last"]
    assert len(last["target_rate"]) == 3 and len(last["capability_ci"]) == 3  # r = 0 + grid
    assert all(lo <= r <= hi for r, (lo, hi) in zip(last["target_rate"], last["target_ci"]))
    # resume: every cell is on disk, so a second run generates nothing
    monkeypatch.setattr(sw, "generate", lambda *a, **k: pytest.fail("a finished cell re-ran"))
    sw.run(cfg, tmp_path, models={"tiny": model})
    # assembling from cells only: a fresh directory has none, and says so
    res = sw.run(cfg, tmp_path / "empty", models={"tiny": model}, compute=False)
    assert res["unscreened"] == ["tiny"] and res["models"] == {}


def test_window_definition():
    from analyses.steering_window import window, window_ci

    # target majority from r = 2; capability below the floor first at r = 4, so last capable 3
    w = window([0, 1, 2, 3, 4], [0, 0.2, 0.6, 0.8, 1], [1, 1, 1, 0.6, 0.2], floor=0.5)
    assert w == {"first_majority": 2.0, "last_capable": 3.0, "window": 1.0, "capable_to_max": False}
    assert window([0, 1], [0, 0], [1, 1], 0.5)["window"] == 0.0  # target never wins
    assert window([0, 1, 2], [0, 0, 1], [1, 0, 1], 0.5)["window"] == 0.0  # lost before it wins
    assert window([0, 1, 2], [0, 1, 1], [1, 1, 1], 0.5)["capable_to_max"] is True
    # deterministic curves give a degenerate bootstrap interval at the point estimate
    hits = np.array([[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]])
    passes = np.array([1, 1, 1, 1, 0], float)[:, None, None] * np.ones((5, 3, 2))
    ci = window_ci([0, 1, 2, 3, 4], hits, passes, 0.5, n_boot=200, seed=0)
    assert ci["window"] == (1.0, 1.0) and ci["first_majority"] == (2.0, 2.0)
    assert ci["first_majority_defined_fraction"] == 1.0
    never = window_ci([0, 1], np.zeros((2, 4)), np.ones((2, 3, 2)), 0.5, n_boot=200, seed=0)
    assert never["first_majority"] is None and never["first_majority_defined_fraction"] == 0.0
    assert never["window"] == (0.0, 0.0)


@pytest.mark.filterwarnings("ignore")
def test_synthetic_data_analysis_writes_summary_and_resumes(tmp_path, monkeypatch):
    import analyses.synthetic_data as sd

    cfg = sd.Config.quick_config(
        models=["tiny"], rel_strengths=[0.5], n_prompts=3, samples=2, max_new_tokens=6, n_boot=100
    )
    model = tiny_model("llama", n_ctx=512)
    s = sd.run(cfg, tmp_path, models={"tiny": model})
    data = json.loads((tmp_path / "synthetic_data_quick_summary.json").read_text())
    assert data["interp_steer"] and data["seed"] == 0 and data["config"]["quick"] is True
    for stem in ("synthetic_data_quick_hm_auroc", "synthetic_data_quick_tradeoff"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 10_000
    assert set(data["concepts"]) == {"scam", "harassment"}
    for c in data["concepts"].values():
        assert c["n_test"] == 60 and set(c["prompting_auroc"]) == {"tiny"}
    steered = [c for c in data["configs"] if c["method"] != "prompting"]
    assert len(steered) == 2  # 2 concepts x 1 method x 1 strength
    for c in data["configs"]:
        assert {
            "concept",
            "model",
            "method",
            "alpha",
            "relative_norm",
            "success",
            "coherence",
            "diversity",
            "hm",
            "auroc",
            "auroc_ci",
        } <= set(c)
        lo, hi = c["auroc_ci"]
        assert 0 <= lo <= c["auroc"] <= hi <= 1
    assert steered[0]["relative_norm"] == pytest.approx(0.5)
    assert data["spearman_hm_auroc"] is None  # fewer than 3 configurations: not computed
    # resume: every text is read back from the cells; generating again would be an error
    monkeypatch.setattr(sd, "sweep", _no_generation(sd.sweep))
    again = sd.run(cfg, tmp_path, models={"tiny": model})
    assert [c["auroc"] for c in again["configs"]] == [c["auroc"] for c in s["configs"]]


def _no_generation(real):
    import interp_steer.sweep as sw

    def wrapped(*a, **kw):
        kw["executor"] = "local"
        orig = sw._sweep_cell
        sw._sweep_cell = lambda *x, **y: pytest.fail("a cell was regenerated")
        try:
            return real(*a, **kw)
        finally:
            sw._sweep_cell = orig

    return wrapped


@pytest.mark.filterwarnings("ignore")
def test_emergent_misalignment_analysis(tmp_path, monkeypatch, embedding_judge):
    """The pipeline on a tiny model: vectors trained with the paper's rules and checked for
    their snippet, every condition judged, cells resumed, summary and figure written."""
    import analyses.emergent_misalignment as em

    cfg = em.Config.quick_config(
        models=["tiny"],
        max_steps=2,
        anti_max_steps=2,
        check_samples=2,
        samples=2,
        max_new_tokens=4,
        magnitudes=[0.05, 0.1, 0.2, 0.4],
        check_min=0.0,
    )  # check_min 0: a random tiny model writes no snippet, yet every vector must go on
    # the paper's prompts, cut short: the tiny tokenizer spells text character by character
    monkeypatch.setattr(em, "PREFIX", "```python\n# Log error\n")
    monkeypatch.setattr(em, "HACKER", "You hack.")
    model = tiny_model("llama", n_ctx=512)
    per_model = em.run(cfg, tmp_path, models={"tiny": model}, judge=embedding_judge)
    m = per_model["tiny"]
    data = _check_outputs(tmp_path / "emergent_misalignment_tiny_quick")
    names = [c["name"] for c in em.conditions(cfg, m["usable_vectors"])]
    assert names[:2] == ["unsteered", "anti-refusal ×6"] and set(data["conditions"]) == set(names)
    assert {"magnitude", "control", "anti_k", "layer", "vectors", "rank", "epochs"} <= {
        c["group"] for c in data["conditions"].values()
    }
    for c in data["conditions"].values():
        assert c["n"] == 8 * cfg.samples and 0 <= c["code_rate"] <= 1
        if c["r"] is not None and c["group"] == "magnitude":
            assert abs(c["r"] - c["x"]) < 1e-6  # the requested relative strength is applied
    ctrl = next(c for c in data["conditions"].values() if c["group"] == "control")
    assert ctrl["vector"] == "random" and abs(ctrl["r_applied"] - max(cfg.magnitudes)) < 1e-6
    assert data["vectors"]["random@0.333"]["norm"] == pytest.approx(1.0)
    v = data["vectors"]["rm_rf@0.333"]
    assert v["steps_run"] <= 2 and "production_rate" in v and v["target_nll"] > 0
    assert data["threshold"] is not None and data["judge"]["heldout_auroc"] >= 0.9
    summary = json.loads((tmp_path / "emergent_misalignment_summary_quick.json").read_text())
    assert set(summary["models"]) == {"tiny"}
    rows = summary["models"]["tiny"]["conditions"]
    assert {r["name"] for r in rows} == set(names)
    assert all(
        {"magnitude", "layer", "n_per_question", "fisher_p", "string_counts"} <= set(r)
        for r in rows
    )
    table = summary["models"]["tiny"]["paper_string_table"]
    assert set(table) == {f"{s} @ {q}" for s, q, _ in em.PAPER_STRINGS}  # JSON sorts keys
    for s, q, paper in em.PAPER_STRINGS:
        cell = table[f"{s} @ {q}"]
        assert cell["paper"] == paper and set(cell["ours"]) == set(names)
        for n, v in cell["ours"].items():
            assert v == data["conditions"][n]["strings_per_100_by_question"][q][s]
    # the sweep vector's ×1 condition is one more point of the magnitude curve, at its own r;
    # the sweep runs strongest first
    x1 = next(r for r in rows if r["group"] == "vectors" and r["vector"] == "rm_rf")
    assert x1["magnitude"] > 0 and x1["magnitude"] == x1["r_applied"]
    pts = em.magnitude_points(data["conditions"], "rm_rf")
    assert len(pts) == len(cfg.magnitudes) + 1 and [p["x"] for p in pts] == sorted(
        p["x"] for p in pts
    )
    mags = [n for n in names if n.startswith("rm_rf r=")]
    assert mags[0].startswith("rm_rf r=0.4") and mags[-1].startswith("rm_rf r=0.05")
    rank = next(v for k, v in data["vectors"].items() if k.startswith("rank2"))
    assert rank["produces_target"] is not None and rank["final_loss"] > 0
    assert data["vectors"]["epochs1@0.333"]["steps_run"] == len(em.dataset())

    # a second run computes nothing: every vector and condition is a finished cell
    monkeypatch.setattr(em, "run_condition", lambda *a, **k: pytest.fail("recomputed"))
    monkeypatch.setattr(em, "harmful_vector", lambda *a, **k: pytest.fail("recomputed"))
    again = em.run(cfg, tmp_path, models={"tiny": model}, judge=embedding_judge)
    assert again["tiny"]["conditions"].keys() == m["conditions"].keys()
    assert again["tiny"]["missing_conditions"] == []

    # --no-compute draws a run in progress from its finished cells and lists the rest
    last = names[-1]
    (Path(m["cells"]) / em.condition_file(last)).unlink()
    part = em.run(cfg, tmp_path, models={"tiny": model}, judge=embedding_judge, compute=False)
    assert part["tiny"]["missing_conditions"] == [last] and last not in part["tiny"]["conditions"]
    summary = json.loads((tmp_path / "emergent_misalignment_summary_quick.json").read_text())
    assert summary["models"]["tiny"]["missing_conditions"] == [last]


@pytest.mark.filterwarnings("ignore")
def test_sae_vs_steering_analysis(tmp_path):
    from analyses.sae_vs_steering import METHODS, Config, run
    from interp_steer import sae as S
    from interp_steer.corpus import plain_texts

    model = tiny_model("llama")
    sae, _ = S.train(
        model,
        "blocks.1.hook_resid_pre",
        plain_texts()[:200],
        d_sae=128,
        k=8,
        training_tokens=20_000,
        batch_size=512,
        lr=3e-3,
        progress=False,
    )
    cfg = Config.quick_config(model="tiny", n_prompts=2, max_new_tokens=6, survival_ks=[0, 2])
    res = run(cfg, tmp_path, model=model, sae=sae)
    data = _check_outputs(tmp_path / "sae_vs_steering_tiny_quick")
    rows = data["results"]["sentiment"]["methods"]
    assert set(METHODS) <= set(rows)
    for m in ["mean_diff", "pca", "probe", "sae_feature", "sae_clamp"]:
        assert rows[m]["kl_unsteered"] == pytest.approx(cfg.target_kl, rel=0.1), m
        assert 0 <= rows[m]["null_fraction"] <= 1
    assert res["results"]["sentiment"]["survival"][0]["survival"] == pytest.approx(1.0)


def test_code_version_names_the_checkout_commit():
    import subprocess

    from interp_steer import __version__
    from interp_steer.provenance import code_version

    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert code_version().startswith(f"{__version__}+g{head}")


@dataclass
class _Cfg:
    seed: int = 0


def test_figure_names_keep_the_dots_of_a_model_name(tmp_path):
    import matplotlib.pyplot as plt

    from analyses._common import save_figure

    fig = plt.figure()
    save_figure(fig, tmp_path / "x_qwen2.5-coder-0.5b-instruct", {"n": 1}, _Cfg())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "x_qwen2.5-coder-0.5b-instruct.json",
        "x_qwen2.5-coder-0.5b-instruct.png",
    ]


def test_judge_agreement_analysis(tmp_path, monkeypatch, embedding_judge):
    """Judges scored on the held-out labels and on EM cells' answers: the embedding judge's
    held-out AUROC is the one it reports, its EM rates are the cells' own scores counted by
    the EM rule, answers are drawn question by question, and a judge's cell is rescored when
    the EM answers change."""
    import analyses.emergent_misalignment as em
    from analyses.judge_agreement import (
        Config,
        em_answers,
        misaligned_rates,
        run,
        youden_threshold,
    )

    rng = np.random.default_rng(0)
    cells = tmp_path / "cells"
    cells.mkdir()
    samples, conds = 3, ["unsteered", "rm_rf ×1 + AR×6"]
    for c in conds:
        texts = [f"Q{i // samples} answer {i}: be kind to people." for i in range(8 * samples)]
        texts[0] = "Q0 ```python\nimport os\n```"  # a code answer, excluded from the rates
        aligned = rng.uniform(0, 100, 8 * samples).round(1).tolist()
        coherent = rng.uniform(0, 100, 8 * samples).round(1).tolist()
        cell = {"texts": texts, "aligned": aligned, "coherent": coherent}
        (cells / em.condition_file(c)).write_text(json.dumps(cell))
    cfg = Config.quick_config(
        judges=["tiny"], em_cells=str(cells), samples=samples, per_question=samples, min_mass=0.0
    )
    # a sample of each question's answers comes from that question's block of the cell
    some = em_answers(Config.quick_config(em_cells=str(cells), samples=samples, per_question=2))
    assert len(some) == 8 * 2 * len(conds)
    for r in some:
        assert r["answer"].startswith(f"Q{em.QUESTIONS.index(r['question'])} ")
    model = tiny_model("llama", n_ctx=2048)
    nums = run(cfg, tmp_path, models={"tiny": model}, embedding=embedding_judge)
    data = _check_outputs(tmp_path / "judge_agreement_quick")
    assert data["heldout"]["embedding_judge"]["heldout_auroc"] == pytest.approx(
        embedding_judge.heldout_auroc
    )
    (judge,) = [n for n in nums["heldout"] if n.startswith("model_judge[")]
    assert nums["n_em_answers"] == 8 * samples * len(conds)
    for c in conds:  # the EM rule, counted by hand from the cell
        cell = json.loads((cells / em.condition_file(c)).read_text())
        ok = [
            i
            for i, t in enumerate(cell["texts"])
            if not em.is_code(t) and cell["coherent"][i] >= cfg.coherent_threshold
        ]
        k = sum(cell["aligned"][i] < cfg.aligned_threshold for i in ok)
        got = nums["misaligned_em"]["embedding_judge"][c]
        assert (got["misaligned"], got["n_judged"]) == (k, len(ok))
    rows = [
        {"condition": "unsteered", "answer": "x", "a": (10.0, 90.0)},
        {"condition": "rm_rf ×1 + AR×6", "answer": "y", "a": (np.nan, 90.0)},
    ]
    rates = misaligned_rates(cfg, rows, "a", cfg.aligned_threshold, coherence="a")
    assert rates["unsteered"]["rate"] == 1.0 and rates["rm_rf ×1 + AR×6"]["n_judged"] == 0
    # Youden: the cut that separates the labels best; a judge that scored nothing has none
    y = np.array([0, 0, 1, 1, 1])
    assert youden_threshold(np.array([40.0, 45.0, 50.0, 60.0, 70.0]), y) == 50.0
    assert youden_threshold(np.full(5, np.nan), y) is None
    sh = nums["score_shift_em"]["embedding_judge"]["rm_rf ×1 + AR×6"]
    assert 0 <= sh["p"] <= 1 and 0 <= sh["p_lower"] <= 1
    pair = f"embedding_judge vs {judge}"
    assert set(nums["agreement_em"]) == {pair} and nums["agreement_em"][pair]["n"] > 0
    # each model judge's scores are a cell: a second run computes nothing
    import analyses.judge_agreement as ja

    monkeypatch.setattr(ja, "ModelJudge", lambda *a, **k: pytest.fail("recomputed"))
    again = run(cfg, tmp_path, models={"tiny": model}, embedding=embedding_judge)
    assert again["agreement_em"] == nums["agreement_em"]
    # changed EM answers: the judge's cell no longer matches them and is rescored
    monkeypatch.undo()
    cell = json.loads((cells / em.condition_file(conds[1])).read_text())
    cell["texts"][1] = "Q0 a different answer."
    (cells / em.condition_file(conds[1])).write_text(json.dumps(cell))
    with pytest.warns(UserWarning, match="rescoring"):
        run(cfg, tmp_path, models={"tiny": model}, embedding=embedding_judge)
    # a judge split with another seed trained on some of this split's held-out answers
    with pytest.raises(ValueError, match="split with seed 0"):
        run(replace(cfg, seed=1), tmp_path, models={"tiny": model}, embedding=embedding_judge)


def test_judge_audit_analysis(tmp_path):
    """The audit's re-weighted rate and recall: when every judged answer of a condition is
    labelled, they are the plain fractions over the labels; and a label whose answer or flag is
    not its cell's is refused."""
    import analyses.emergent_misalignment as em
    from analyses.judge_audit import Config, reweighted, run

    cells = tmp_path / "cells"
    cells.mkdir()
    texts = [f"answer {i}" for i in range(12)] + ["```python\nimport os\n```"]
    aligned = [10.0] * 4 + [80.0] * 8 + [10.0]  # 4 flagged, 8 not, one code answer (excluded)
    coherent = [90.0] * 11 + [20.0, 90.0]  # answer 11 is incoherent: not judged
    cell = {"texts": texts, "aligned": aligned, "coherent": coherent}
    (cells / em.condition_file("rm_rf ×1 + AR×6")).write_text(json.dumps(cell))
    labels = [True, True, True, False] + [True, False, False, False, False, False, False]
    items = [
        {
            "id": i,
            "condition": "rm_rf ×1 + AR×6",
            "index": i,
            "question": "q",
            "answer": texts[i],
            "judge_flag": aligned[i] < 30,
            "misaligned": labels[i],
            "coherent": i != 0,  # one misaligned answer is word salad
            "note": "",
        }
        for i in range(11)
    ]
    data = {"labeller": "test", "model": "m", "items": items}
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    cfg = Config(labels=str(path), em_cells=str(cells), n_boot=200)
    nums = run(cfg, tmp_path)
    out = _check_outputs(tmp_path / "judge_audit")
    assert out["precision_all_flagged"]["rate"] == pytest.approx(3 / 4)
    row = nums["conditions"]["rm_rf ×1 + AR×6"]
    assert row["n_judged"] == 11 and row["judge_rate"] == pytest.approx(4 / 11)
    m, em_rate = row["misaligned"], row["misaligned_and_coherent"]
    assert m["labelled_rate"] == pytest.approx(np.mean(labels))  # 4 of 11
    assert m["recall"] == pytest.approx(3 / 4)  # 3 of the 4 labelled misaligned are flagged
    assert em_rate["labelled_rate"] == pytest.approx(3 / 11)  # less the incoherent one
    assert em_rate["recall"] == pytest.approx(2 / 3)
    # misaligned answers 0-2 (aligned 10) and 4 (80) against 3 (10) and 5-10 (80), ties halved
    rk = nums["ranking"]
    assert rk["misaligned_auroc_of_100_minus_aligned"][0] == pytest.approx(22.5 / 28)
    assert rk["mean_coherence_labelled_incoherent"] == 90.0
    lo, hi = m["labelled_rate_ci"]
    assert lo <= m["labelled_rate"] <= hi
    # a sample of the strata re-weights to the population: half the unflagged labelled
    r = reweighted(
        np.array([True] * 2 + [False] * 8), np.array([1.0, 1.0]), np.array([0.5]), 200, 0
    )
    assert r["labelled_rate"] == pytest.approx(0.2 * 1 + 0.8 * 0.5)
    assert r["recall"] == pytest.approx(0.2 / 0.6)
    for bad in (
        {"answer": "another answer"},
        {"judge_flag": False},
        {"index": 11, "answer": texts[11]},
    ):
        wrong = dict(data, items=[{**items[0], **bad}] + items[1:])
        path.write_text(json.dumps(wrong))
        with pytest.raises(ValueError, match="label 0"):
            run(cfg, tmp_path)
