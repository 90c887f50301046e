import json

import pytest

from interp_steer.testing import tiny_model


@pytest.mark.filterwarnings("ignore")
def test_identifiability_analysis_writes_figures_with_config(tmp_path):
    from analyses.identifiability import Config, run

    model = tiny_model("llama")
    cfg = Config.quick_config(model="tiny-llama", traits=["sentiment", "formality"],
                              n_prompts=2, max_new_tokens=4, n_boot=3)
    cfg.layers = [1]
    res = run(cfg, tmp_path, model=model)
    for name in ["spectrum", "efficacy", "equivalence", "overlap"]:
        stem = tmp_path / f"identifiability_tiny-llama_quick_{name}"
        assert stem.with_suffix(".png").stat().st_size > 10_000
        data = json.loads(stem.with_suffix(".json").read_text())
        assert data["config"]["seed"] == 0 and data["config"]["quick"] is True
    protocol = json.loads((tmp_path / "identifiability_tiny-llama_quick_protocol.json").read_text())
    assert set(protocol["protocol"]) == {"sentiment", "formality"}
    df = res["tables"]["sentiment"]["df"]
    assert {"null", "random", "principal", "v", "none"} == set(df.source)


def _check_outputs(stem, seed=0):
    assert stem.with_suffix(".png").stat().st_size > 10_000
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["config"]["seed"] == seed
    # the code that made it: version, and the git commit when run from a checkout
    from interp_steer import __version__

    assert data["interp_steer"].startswith(__version__)
    return data


@pytest.mark.filterwarnings("ignore")
def test_steering_window_analysis(tmp_path):
    from analyses.steering_window import Config, run, window

    model = tiny_model("llama", n_ctx=512)
    cfg = Config.quick_config(models=["tiny"], alphas=[0, 4], samples=2, max_new_tokens=6,
                              code_tokens=8)
    run(cfg, tmp_path, models={"tiny": model})
    data = _check_outputs(tmp_path / "steering_window_all_quick")
    q = data["results"]["tiny"]["questions"]["caracara"]
    assert len(q["target_rate"]) == 2 and len(q["code_accuracy"]) == 2
    # window arithmetic: owl majority from 2, coding fine up to 3
    w = window([0, 1, 2, 3, 4], [0, 0.2, 0.6, 0.8, 1], [1, 1, 1, 0.6, 0.2], floor=0.5)
    assert w == {"first_majority": 2.0, "last_capable": 3.0, "window": 1.0}
    assert window([0, 1], [0, 0], [1, 1], 0.5)["window"] == 0.0


@pytest.mark.filterwarnings("ignore")
def test_diversity_tradeoff_analysis(tmp_path):
    from analyses.diversity_tradeoff import Config, run

    cfg = Config.quick_config(model="tiny", rel_strengths=[0.5], n_prompts=2, samples=2,
                              max_new_tokens=6, one_shot_steps=2)
    res = run(cfg, tmp_path, model=tiny_model("llama", n_ctx=512))
    data = _check_outputs(tmp_path / "diversity_tradeoff_tiny_quick")
    assert {r["vector"] for r in data["rows"]} == {"mean_diff", "pca", "probe", "one_shot"}
    assert res["df"].hm.between(0, 1).all() and "sweet_spot_count" in data


@pytest.mark.filterwarnings("ignore")
def test_emergent_misalignment_analysis(tmp_path):
    from analyses.emergent_misalignment import Config, conditions, run

    cfg = Config.quick_config(model="tiny", steps=2, epoch_grid=[1], magnitudes=[1.0], samples=1,
                              max_new_tokens=4)
    res = run(cfg, tmp_path, model=tiny_model("llama", n_ctx=1024))
    data = _check_outputs(tmp_path / "emergent_misalignment_tiny_quick")
    names = [c["name"] for c in conditions(cfg)]
    assert names[:2] == ["unsteered", "anti-refusal only"]
    assert set(data["string_table"]) == set(names)
    assert len(res["df"]) == len(names) * 8
    assert {"aligned_mean", "misaligned_mean", "gap"} == set(data["judge_sanity"])


@pytest.mark.filterwarnings("ignore")
def test_sae_vs_steering_analysis(tmp_path):
    from analyses.sae_vs_steering import METHODS, Config, run
    from interp_steer import sae as S
    from interp_steer.corpus import plain_texts

    model = tiny_model("llama")
    sae, _ = S.train(model, "blocks.1.hook_resid_pre", plain_texts()[:200], d_sae=128, k=8,
                     training_tokens=20_000, batch_size=512, lr=3e-3, progress=False)
    cfg = Config.quick_config(model="tiny", n_prompts=2, max_new_tokens=6, survival_ks=[0, 2])
    res = run(cfg, tmp_path, model=model, sae=sae)
    data = _check_outputs(tmp_path / "sae_vs_steering_tiny_quick")
    rows = data["results"]["sentiment"]["methods"]
    assert set(METHODS) <= set(rows)
    for m in ["mean_diff", "pca", "probe", "sae_feature", "sae_clamp"]:
        assert rows[m]["kl_unsteered"] == pytest.approx(cfg.target_kl, rel=0.1), m
        assert 0 <= rows[m]["null_fraction"] <= 1
    assert res["results"]["sentiment"]["survival"][0]["survival"] == pytest.approx(1.0)
