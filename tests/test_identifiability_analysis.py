"""analyses.identifiability end to end on a tiny model: every headline number recomputed from
the cells by a few independent lines, resume, assembly from cells, and the refusal to assemble
cells computed before the pre-registration."""

import functools
import json
import warnings

import numpy as np
import pytest
from scipy import stats as st

from interp_steer.testing import git, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore")


def _cfg(**kw):
    from analyses.identifiability import Config

    # tiny llama seed 1, politeness at layer 1 over the 20 selection prompts: r = 1 raises the
    # probe's score with a CI above 0 and keeps coherence; the random model's text gets
    # VADER 0 at every r, so sentiment has no operating point
    return Config.quick_config(
        model="tiny-llama",
        traits=["politeness", "sentiment"],
        n_prompts={"politeness": 6, "sentiment": 6},
        sizes=[1.0, 0.25],  # two sizes: the largest first, then the smaller
        rel_strengths=[0.001, 0.3, 1.0, 3.0],
        selection_prompts=20,
        max_new_tokens=6,
        n_boot=100,
        coherence_floor=0.98,
        layer=1,
        covariance_tokens=600,
        jacobian_prompts=3,
        jacobian_tol=0.5,  # a random model's Jacobian has no null space at the paper's 5%
        k_span=[1],
        n_individual=2,
        **kw,
    )


def _ci_of_mean(x, n_boot, seed):
    """scipy's bootstrap of the mean over prompts (BCa; percentile where BCa is undefined)."""
    from scipy.stats import bootstrap

    for method in ("BCa", "percentile"):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = bootstrap(
                (np.asarray(x, float),),
                np.mean,
                n_resamples=n_boot,
                method=method,
                vectorized=False,
                random_state=np.random.default_rng(seed),
            ).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import analyses.identifiability as ia
    from interp_steer.eval import metrics

    out = tmp_path_factory.mktemp("ident")
    model = tiny_model("llama", seed=1)
    cfg = _cfg()
    ia.for_trait = functools.cache(ia.for_trait)  # the probes train once for every run below

    def coherence(prompts, texts):
        return metrics.coherence(model, texts)

    res = ia.run(cfg, out, model=model, coherence=coherence)
    return out, cfg, model, coherence, res


def _cells(out):
    (cells,) = (out / ".cells").iterdir()
    return cells


def test_summary_recomputes_from_the_cells(tiny_run):
    from statsmodels.stats.multitest import multipletests

    out, cfg, _, _, res = tiny_run
    summary = json.loads((out / "identifiability_tiny-llama_quick_summary.json").read_text())
    assert summary["grid"] == json.loads(json.dumps(res["summary"]["grid"]))
    cells = _cells(out)
    # the operating point: the largest efficacy among r with a CI above 0 and coherence kept
    for trait in cfg.traits:
        calib = json.loads((cells / f"{trait}_calibration.json").read_text())
        sc, coh = np.array(calib["scores"]), np.array(calib["coherence"])  # [r, prompt, sample]
        grid = []
        for i in range(1, len(calib["alphas"])):
            diff = sc[i].mean(1) - sc[0].mean(1)
            lo, _ = _ci_of_mean(diff, cfg.n_boot, cfg.seed)
            grid.append((diff.mean(), lo, coh[i].mean() / coh[0].mean(), calib["r"][i]))
        for g, (e, lo, ratio, r) in zip(summary["traits"][trait]["calibration"], grid):
            assert g["r"] == r and g["efficacy"] == pytest.approx(e, abs=1e-12)
            assert g["efficacy_ci"][0] == pytest.approx(lo, abs=1e-9)
            assert g["valid"] == (lo > 0 and ratio >= cfg.coherence_floor)
        valid = [g for g in grid if g[1] > 0 and g[2] >= cfg.coherence_floor]
        best = max(valid, key=lambda g: g[0])[3] if valid else None
        op = summary["traits"][trait]["operating_point"]
        assert (op and op["r"]) == best
    t = summary["traits"]["politeness"]
    assert t["operating_point"]["r"] == 1.0
    assert summary["traits"]["sentiment"]["operating_point"] is None
    assert summary["preregistration"] is None and summary["cell_commits"]
    assert summary["n_prompts"] == {"politeness": 6}
    base = json.loads((cells / "politeness_s1_base.json").read_text())
    s = np.array(base["scores"]).mean(2)  # [unsteered, v, v_reseeded] x prompt
    eff = (s[1] - s[0]).mean()
    margin = cfg.margin * abs(eff)
    assert t["efficacy"]["mean"] == pytest.approx(eff)
    rows = [r for r in summary["grid"] if r["trait"] == "politeness"]
    assert len(rows) == len(cfg.sizes) * len(cfg.sources)
    for size in cfg.sizes:
        g = json.loads((cells / f"politeness_s1_d{size:g}.json").read_text())
        draw = np.array(g["draw"])
        # prompts and draws are crossed: (p * S + s) mod D
        assert draw.tolist() == [
            [(p * cfg.n_samples + k) % cfg.n_draws for k in range(cfg.n_samples)] for p in range(6)
        ]
        for i, src in enumerate(g["sources"]):
            (row,) = [r for r in rows if r["source"] == src and r["size"] == size]
            test = np.array(g["scores"][i]).mean(1)
            assert row["retained"] == pytest.approx((test - s[0]).mean() / eff)
            d = test - s[1]
            se = d.std(ddof=1) / np.sqrt(len(d))
            p = max(
                st.t.sf((d.mean() + margin) / se, len(d) - 1),
                st.t.cdf((d.mean() - margin) / se, len(d) - 1),
            )
            assert row["tost_p"] == pytest.approx(p, rel=1e-6)
            coh = np.mean(g["coherence"][i]) / np.mean(base["coherence"][1])
            assert row["coherence_ratio"] == pytest.approx(coh)
            assert set(row) >= {"trait", "source", "size", "r", "retained_ci", "verdict"}
    # Holm across traits within a family (one studied trait: adjusted = raw) and the rule
    for row in rows:
        assert row["tost_p_holm"] == pytest.approx(
            multipletests([row["tost_p"]], method="holm")[1][0]
        )
        neg_ok = summary["controls"]["negative"]["politeness"]["passed"]
        pos = json.loads((out / "identifiability_tiny-llama_quick_summary.json").read_text())
        pos = pos["traits"]["politeness"]["positive"].get(str(row["size"]), {})
        pos_ok = pos.get("detected", False)
        if row["coherence_ratio"] < cfg.broken_ratio:
            assert row["verdict"] == "broken"
        elif not (neg_ok and pos_ok):
            assert row["verdict"] == "inconclusive"
    for name in ["spectrum", "operating", "grid", "conditions", "overlap"]:
        stem = out / f"identifiability_tiny-llama_quick_{name}"
        assert stem.with_suffix(".png").stat().st_size > 10_000, name


def test_negative_control_is_variance_matched(tiny_run):
    """v against v with independent seeds, with the test's prompts and samples per prompt;
    its TOST is the paired TOST of those per-prompt means at the trait's margin."""
    out, cfg, _, _, res = tiny_run
    cells = _cells(out)
    base = json.loads((cells / "politeness_s1_base.json").read_text())
    g = json.loads((cells / "politeness_s1_d1.json").read_text())
    sc = np.array(base["scores"])
    assert sc.shape[1:] == np.array(g["scores"][0]).shape  # same prompts x samples
    v_texts, neg_texts = base["texts"][1], base["texts"][2]
    differ = np.mean([a != b for p, q in zip(v_texts, neg_texts) for a, b in zip(p, q)])
    assert differ > 0.5  # independent sampling noise, not a copy of v
    s = sc.mean(2)
    margin = cfg.margin * abs((s[1] - s[0]).mean())
    d = s[2] - s[1]
    se = d.std(ddof=1) / np.sqrt(len(d))
    p = max(
        st.t.sf((d.mean() + margin) / se, len(d) - 1),
        st.t.cdf((d.mean() - margin) / se, len(d) - 1),
    )
    neg = res["summary"]["controls"]["negative"]["politeness"]
    assert neg["tost_p"] == pytest.approx(p, rel=1e-6)
    assert neg["passed"] == (p < 0.05 and neg["power"] >= cfg.min_power)


def test_resume_rewrites_no_cell(tiny_run):
    import analyses.identifiability as ia

    out, cfg, model, coherence, res = tiny_run
    cells = list(_cells(out).glob("*.json"))
    before = {c: c.stat().st_mtime_ns for c in cells}
    again = ia.run(cfg, out, model=model, coherence=coherence)
    assert {c: c.stat().st_mtime_ns for c in cells} == before
    assert again["summary"]["grid"] == json.loads(json.dumps(res["summary"]["grid"]))


def test_results_refuse_cells_from_before_the_preregistration(tiny_run, tmp_path):
    import shutil

    import analyses.identifiability as ia

    out, cfg, model, coherence, _ = tiny_run
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    git(repo, "commit", "-q", "-m", "code")
    early = git(repo, "rev-parse", "HEAD")
    (repo / "prereg.json").write_text('{"margin": [0.8, 1.2]}\n')
    git(repo, "add", "prereg.json")
    git(repo, "commit", "-q", "-m", "pre-register")
    registered = git(repo, "rev-parse", "HEAD")
    (repo / "code.py").write_text("x = 2\n")
    git(repo, "commit", "-qam", "the study's code")
    late = git(repo, "rev-parse", "HEAD")
    copy = tmp_path / "out"
    shutil.copytree(out / ".cells", copy / ".cells")
    cell_dir = _cells(copy)

    def stamp(commit):
        for c in cell_dir.glob("*.json"):
            d = json.loads(c.read_text())
            d["_commit"] = f"0.1.0+g{commit[:12]}"
            c.write_text(json.dumps(d))

    cfg_pre = _cfg(preregistration=str(repo / "prereg.json"))
    stamp(late)
    # assembled from the cells alone (compute=False): the same grid, and the registration
    res = ia.run(cfg_pre, copy, model=model, coherence=coherence, compute=False)
    assert res["summary"]["grid"] == json.loads(json.dumps(tiny_run[4]["summary"]["grid"]))
    assert res["summary"]["preregistration"]["commit"] == registered
    assert res["summary"]["preregistration"]["margin"] == [0.8, 1.2]
    stamp(early)
    with pytest.raises(ValueError, match="does not come after"):
        ia.run(cfg_pre, copy, model=model, coherence=coherence, compute=False)
