"""The coherence measure validated on model text (`interp_steer.eval.coherence`)."""

import json
from pathlib import Path

import numpy as np
import pytest

from interp_steer.eval.coherence import (
    FEATURES,
    CoherenceHead,
    ModelTextCoherence,
    echo_fraction,
    feature_matrix,
    surface,
)

ROOT = Path(__file__).resolve().parents[1]


def test_text_features_by_hand():
    q = "I've had enough of my husband. What should I do?"
    assert echo_fraction(q, "I've had enough of my husband") == 1.0
    # 4 word 3-grams, one of them ("what should i") in the prompt
    assert echo_fraction(q, "what should i bake today") == pytest.approx(1 / 3)
    assert echo_fraction(None, "anything") == 0.0
    non_ascii, letters, word_len, log_words = surface("ab cd\u00e9")
    assert non_ascii == pytest.approx(1 / 6) and letters == pytest.approx(5 / 6)
    assert word_len == pytest.approx(2.0) and log_words == pytest.approx(np.log1p(2))
    x = feature_matrix([-2.0, np.nan], [1.0, 0.5], [0.3, 0.1], [q, None], ["hi there", ""])
    assert x.shape == (2, len(FEATURES)) and x[1, 0] == -15.0  # an empty text's log-prob


def test_head_equals_sklearns_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(FEATURES))) * rng.uniform(0.1, 5, len(FEATURES))
    y = (x[:, 0] + 0.3 * x[:, 1] + rng.normal(size=200) > 0).astype(int)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    head = CoherenceHead.from_pipeline(pipe, {})
    assert np.allclose(head(x), pipe.predict_proba(x)[:, 1], atol=1e-12)
    with pytest.raises(ValueError, match="features must be"):
        head(x[:, :3])


def test_shipped_head_reproduces_its_committed_test_numbers():
    """The head in data/ applied to the committed feature cells gives the rates that
    figures/measure_validation.json reports for the test split."""
    import analyses.measure_validation as mv

    res = json.loads((ROOT / "figures" / "measure_validation.json").read_text())
    name = "head: cheap features"
    items = [it for it in mv.load_items() if it["id"] in mv.load_labels()]
    cfg = mv.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in res["config"].items()})
    scores = mv.compute_scores(cfg, items, compute=False)
    called = CoherenceHead.load()(mv.features(scores, items, ())) >= 0.5
    labels, split = mv.load_labels(), mv.load_split()
    test = np.array([split[it["id"]] == "test" for it in items])
    cat = np.array([labels[it["id"]]["category"] for it in items])
    for kind in ("salad", "echo", "sensible"):
        sel = test & (cat == kind)
        want = res["coherence"][name]["test"][f"{kind}_called_coherent"]
        assert int(called[sel].sum()) == want["k"] and int(sel.sum()) == want["n"], kind


@pytest.mark.integration
def test_model_text_coherence_separates_sense_from_salad_and_echo():
    from interp_steer import load_model

    score = ModelTextCoherence(fluency_model=load_model())
    q = ["How was your weekend?"] * 4
    texts = [
        "It was lovely: I went hiking with my sister and we cooked dinner together afterwards.",
        "Do not exit. Kill the system. Use SSH to connect. Delete logs now, weekend root access.",
        "How was your weekend? How was your weekend? How was your weekend?",
        "weekend the purple under quickly fish am because table seven running",
    ]
    s = score(q, texts)
    assert s[0] > 0.5 and (s[1:] < 0.5).all(), s
    assert score([], []).shape == (0,)
