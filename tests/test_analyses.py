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
