"""analyses.sae_vs_steering end to end on a tiny model and SAE: the calibrated KL recomputed
with a hook of our own, every success number and paired contrast recomputed from the cells,
Holm by statsmodels, and assembly from the cells alone."""

import json

import numpy as np
import pytest
import torch
from statsmodels.stats.multitest import multipletests

from interp_steer.testing import tiny_model

pytestmark = pytest.mark.filterwarnings("ignore")
HOOK = "blocks.1.hook_resid_pre"


def letters(prompts, texts):
    """A transparent stand-in for the coherence measure: the share of letters and spaces."""
    return np.array([sum(c.isalpha() or c == " " for c in t) / max(1, len(t)) for t in texts])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from analyses.sae_vs_steering import Config, run
    from interp_steer import sae as S
    from interp_steer.sae.corpus.chat import plain_texts

    model = tiny_model("llama")
    sae, _ = S.train(
        model,
        HOOK,
        plain_texts()[:200],
        d_sae=128,
        k=8,
        training_tokens=20_000,
        batch_size=512,
        lr=3e-3,
        progress=False,
    )
    cfg = Config.quick_config(
        model="tiny", traits=["politeness"], max_new_tokens=6, coherent_threshold=0.6
    )
    out = tmp_path_factory.mktemp("svs")
    res = run(cfg, out, model=model, sae=sae, coherence=letters)
    return out, cfg, model, sae, res["summary"]


def _cell(out, name):
    (path,) = (out / ".cells").glob(f"*/{name}")
    return json.loads(path.read_text())


def test_calibrated_kl_recomputed_with_our_own_hook(tiny_run):
    """mean_diff's stored α, applied by a plain TL hook at every position but 0, gives the
    stored KL over the last prompt token and the unsteered completion's tokens."""
    out, cfg, model, _, s = tiny_run
    from interp_steer import chat, datasets

    sel = _cell(out, "politeness_selection.json")
    base = _cell(out, "politeness_base.json")
    prompts = [chat(model, p) for p in datasets.trait_prompts("politeness", cfg.n_prompts)]
    comps = base["unsteered"]["texts"][:: cfg.n_samples]
    v = torch.tensor(sel["mean_diff"])
    for row in [r for r in s["conditions"] if r["method"] == "mean_diff"]:
        step = row["setting"] * v
        kls = []
        with torch.no_grad():
            for p, c in zip(prompts, comps):
                t = model.to_tokens(p + c, prepend_bos=False)
                n_prompt = model.to_tokens(p, prepend_bos=False).shape[1]

                def add(x, hook, step=step):
                    x[:, 1:] = x[:, 1:] + step
                    return x

                lb = model(t).double().log_softmax(-1)[0, n_prompt - 1 :]
                ls = model.run_with_hooks(t, fwd_hooks=[(HOOK, add)]).double().log_softmax(-1)
                ls = ls[0, n_prompt - 1 :]
                kls.append((ls.exp() * (ls - lb)).sum(-1))
        kl = float(torch.cat(kls).mean())
        assert row["kl"] == pytest.approx(kl, rel=1e-4)
        assert abs(kl / row["target_kl"] - 1) <= cfg.kl_tolerance


def test_success_and_contrasts_recomputed_from_cells(tiny_run):
    out, cfg, _, _, s = tiny_run
    from scipy import stats as st

    def coherent_success(c):
        ok = np.asarray(c["coherence"]) >= cfg.coherent_threshold
        return (np.asarray(c["success"]) * ok).reshape(cfg.n_prompts, cfg.n_samples)

    grid = {}
    for row in s["conditions"]:
        if row["target_kl"] is None:
            c = _cell(out, "politeness_base.json")[row["method"]]
        elif row["success"] is None:
            assert row["unreachable"], row  # a level not reached says why
            continue
        else:
            c = _cell(out, f"politeness_{row['method']}_kl{row['target_kl']:g}.json")
            grid[(row["method"], row["target_kl"])] = coherent_success(c)
        y = coherent_success(c)
        assert row["success"] == pytest.approx(y.mean())
        assert row["success_ci"][0] <= row["success"] + 1e-12 <= row["success_ci"][1] + 2e-12
        assert row["coherent_fraction"] == pytest.approx(
            np.mean(np.asarray(c["coherence"]) >= cfg.coherent_threshold)
        )
    ps = []
    for con in s["contrasts"]:
        d = grid[(con["method"], con["target_kl"])] - grid[("mean_diff", con["target_kl"])]
        assert con["diff"] == pytest.approx(d.mean())
        per = d.mean(1)
        p = 1.0 if np.ptp(per) == 0 and per[0] == 0 else st.ttest_1samp(per, 0).pvalue
        assert con["p"] == pytest.approx(p)
        ps.append(con["p"])
    assert ps, "no contrast was made: the test would check nothing"
    family = 3 * len(cfg.target_kls)  # missing contrasts enter Holm as p = 1
    want = multipletests(ps + [1.0] * (family - len(ps)), method="holm")[1][: len(ps)]
    assert [c["p_holm"] for c in s["contrasts"]] == pytest.approx(list(want))
    assert len({round(r["success"], 9) for r in s["conditions"] if r["success"] is not None}) > 2


def test_samples_are_paired_by_prompt_and_seed(tiny_run):
    """Text i of a condition is prompt i // n_samples sampled with seed i % n_samples."""
    out, cfg, model, _, _ = tiny_run
    from interp_steer import chat, datasets, generate

    prompts = [chat(model, p) for p in datasets.trait_prompts("politeness", cfg.n_prompts)]
    base = _cell(out, "politeness_base.json")["unsteered"]["texts"]
    i = 2 * cfg.n_samples + 1
    again = generate(
        model,
        [prompts[i // cfg.n_samples]],
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        seed=[i % cfg.n_samples],
        chat=False,
    )
    assert again == [base[i]]


def test_contrasts_skip_conditions_outside_the_kl_tolerance():
    from analyses.sae_vs_steering import analysis as A
    from analyses.sae_vs_steering.config import Config

    cfg = Config.quick_config(n_prompts=3, n_samples=2, target_kls=[0.1, 0.3])
    assert A.within_tolerance(0.105, 0.1, cfg) and not A.within_tolerance(0.12, 0.1, cfg)
    c = {"success": [1.0, 0.0, 1.0, 1.0, 0.0, 0.5], "coherence": [1.0] * 6}
    grid = {("mean_diff", 0.1): c, ("sae_feature", 0.1): c}
    (row,) = A.paired_contrasts("t", grid, cfg)
    assert row["diff"] == 0 and row["holm_family"] == 6 and row["p_holm"] == 1.0
    verdicts = A.method_verdicts([row], cfg)
    assert verdicts["sae_feature"].startswith("no difference shown")
    assert verdicts["sae_clamp"].startswith("not testable (0 of 2")


def test_a_run_that_is_not_the_registered_design_refuses():
    from analyses.sae_vs_steering import Config, check_design

    with pytest.raises(ValueError, match=r"n_prompts=8 \(registered 20\)"):
        check_design(Config(n_prompts=8))
    with pytest.raises(ValueError, match="no prompting line"):
        Config(traits=["weddings"])


def test_summary_carries_what_the_issue_names(tiny_run):
    out, cfg, _, sae, s = tiny_run
    for key in ("conditions", "prompting", "detection_auroc", "random_latent_control", "saes"):
        assert key in s, key
    row = next(
        r for r in s["conditions"] if r["method"] == "mean_diff" and r["success"] is not None
    )
    assert row["r"] > 0 and row["kl_at_zero"] == 0.0
    det = s["detection_auroc"]["politeness"]
    assert {"mean_diff", "sae_latent"} <= set(det) and det["n"] == 40
    ctl = s["random_latent_control"]["politeness"]
    assert len(ctl["random"]) == cfg.random_draws and len(ctl["top"]) == len(cfg.survival_ks)
    assert ctl["carries"] == [t < q for t, q in zip(ctl["top"], ctl["random_p5"])]
    assert 0 < s["saes"]["given"]["ev"] <= 1 and s["saes"]["given"]["heldout_at_training"] is None
    sel = _cell(out, "politeness_selection.json")
    assert sel["latent"] in [c["latent"] for c in sel["candidates"]]
    assert (out / "sae_vs_steering_tiny_quick.png").stat().st_size > 10_000


def test_assembles_from_cells_alone(tiny_run):
    from analyses.sae_vs_steering import run

    out, cfg, model, sae, s = tiny_run
    again = run(cfg, out, model=model, sae=sae, coherence=letters, compute=False)["summary"]
    assert again["conditions"] == s["conditions"] and again["contrasts"] == s["contrasts"]


def test_null_space_fractions_recomputed_independently(tiny_run):
    """The null dimension and mean_diff's share in it, from the unsteered texts' activations
    at the generation positions taken with TL's own cache and numpy's eigendecomposition."""
    out, cfg, model, _, s = tiny_run
    from interp_steer import chat, datasets

    ns = s["null_space"]["politeness"]
    base = _cell(out, "politeness_base.json")
    prompts = [chat(model, p) for p in datasets.trait_prompts("politeness", cfg.n_prompts)]
    rows = []
    with torch.no_grad():
        for i, c in enumerate(base["unsteered"]["texts"]):
            p = prompts[i // cfg.n_samples]
            t = model.to_tokens(p + c, prepend_bos=False)
            n_prompt = model.to_tokens(p, prepend_bos=False).shape[1]
            _, cache = model.run_with_cache(t, names_filter=HOOK)
            rows.append(cache[HOOK][0, n_prompt - 1 :].double().numpy())
    x = np.concatenate(rows)
    lam, vecs = np.linalg.eigh(np.cov(x.T))
    lam, vecs = lam[::-1].clip(0), vecs[:, ::-1]
    signal = int((np.cumsum(lam) / lam.sum() < 0.99).sum()) + 1
    assert ns["n_tokens"] == len(x) and ns["null_dim"] == x.shape[1] - signal
    v = np.array(_cell(out, "politeness_selection.json")["mean_diff"])
    share = float(((vecs[:, signal:].T @ v) ** 2).sum() / (v**2).sum())
    assert ns["fractions"]["mean_diff"] == pytest.approx(share, abs=1e-4)
    # a random direction's expected share is the null dimension over d
    assert ns["random"]["mean"] == pytest.approx(ns["null_dim"] / ns["d"], abs=0.05)
    assert ns["random"]["p2.5"] <= ns["random"]["mean"] <= ns["random"]["p97.5"]
