"""Coherence validated on what steered models actually write.

`metrics.coherence` (fluency under a model × a repetition factor) was tuned on hand-written
text and fails on model text: it calls most fluent word salad and every echo of the question
coherent. This measure is a logistic head on cheap features of the text, fit on the train
split of the blind-labelled model-text set (``interp_steer/data/modeltext/``), chosen on its
dev split and reported on its test split by ``python -m analyses.measure_validation``, which
writes the head to ``data/coherence_head.json`` together with those numbers.

Features, per (prompt, text): the mean token log-prob of the text under SmolLM2 given the
chat-formatted prompt (clipped to [−15, 0]), the repetition factor, the share of the text's
word 3-grams copied from the prompt (echo), the MiniLM cosine between prompt and text, and
the text's shape (non-ASCII share, letter share, mean word length, log word count).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np

HEAD_FILE = "coherence_head.json"
FEATURES = (
    "logp",
    "repetition",
    "echo",
    "relevance",
    "non_ascii",
    "letters",
    "word_length",
    "log_words",
)


def _words(t: str) -> list[str]:
    return re.findall(r"[a-z']+", t.lower())


def echo_fraction(prompt: str | None, text: str) -> float:
    """Share of the text's word 3-grams (words, for texts under 3 words) found in the prompt."""
    if not prompt:
        return 0.0
    w, p = _words(text), _words(prompt)
    n = 3 if len(w) >= 3 else 1
    grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return 0.0
    pg = {tuple(p[i : i + n]) for i in range(len(p) - n + 1)}
    return float(np.mean([g in pg for g in grams]))


def surface(text: str) -> list[float]:
    """Non-ASCII share, letter share, mean word length, log(1 + number of words)."""
    n = max(len(text), 1)
    w = _words(text)
    return [
        sum(ord(c) > 127 for c in text) / n,
        sum(c.isalpha() for c in text) / n,
        float(np.mean([len(x) for x in w])) if w else 0.0,
        float(np.log1p(len(w))),
    ]


def feature_matrix(
    logp: Sequence[float],
    repetition: Sequence[float],
    relevance: Sequence[float],
    prompts: Sequence[str | None],
    texts: Sequence[str],
) -> np.ndarray:
    """[n, len(FEATURES)] from the model-dependent parts (log-prob, repetition, relevance)
    and the texts; a NaN log-prob (an empty text) counts as −15."""
    cols = [
        np.nan_to_num(np.asarray(logp, float), nan=-15.0).clip(-15, 0),
        np.asarray(repetition, float),
        np.array([echo_fraction(p, t) for p, t in zip(prompts, texts)]),
        np.asarray(relevance, float),
    ]
    cols += list(np.array([surface(t) for t in texts]).T)
    return np.stack(cols, 1)


@dataclass(frozen=True)
class CoherenceHead:
    """A standardised logistic regression on `FEATURES`: P(coherent)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    provenance: dict

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        if x.ndim != 2 or x.shape[1] != len(self.coef):
            raise ValueError(f"features must be [n, {len(self.coef)}], got {x.shape}")
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return 1 / (1 + np.exp(-(z @ np.array(self.coef) + self.intercept)))

    @classmethod
    def from_pipeline(cls, pipe, provenance: dict) -> CoherenceHead:
        """From a fitted sklearn ``make_pipeline(StandardScaler(), LogisticRegression*)``."""
        scaler, lr = pipe[0], pipe[-1]
        return cls(
            tuple(map(float, scaler.mean_)),
            tuple(map(float, scaler.scale_)),
            tuple(map(float, lr.coef_[0])),
            float(lr.intercept_[0]),
            provenance,
        )

    def to_json(self) -> dict:
        return {"features": list(FEATURES), **asdict(self)}

    @classmethod
    def load(cls) -> CoherenceHead:
        """The shipped head (``data/coherence_head.json``)."""
        path = resources.files("interp_steer.data").joinpath(HEAD_FILE)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"no {HEAD_FILE} in interp_steer/data: run `python -m analyses.measure_validation`"
            ) from e
        if d.get("features") != list(FEATURES):
            raise ValueError(f"{HEAD_FILE} was fit on features {d.get('features')}, not {FEATURES}")
        d.pop("features")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class ModelTextCoherence:
    """The validated coherence measure: ``(prompts, texts) -> P(coherent)`` in [0, 1].

    Args:
        fluency_model: the model whose log-probs are a feature; the head was fit with
            SmolLM2-135M-Instruct (the default), whatever model wrote the texts.
        embed: a MiniLM embedder (`interp_steer.eval.classifiers.MiniLM`); built when needed.
    """

    name = "model-text coherence head"

    def __init__(self, fluency_model=None, embed=None):
        self.head = CoherenceHead.load()
        self._model, self._embed = fluency_model, embed

    def features(self, prompts: Sequence[str | None], texts: Sequence[str]) -> np.ndarray:
        from interp_steer.eval import metrics
        from interp_steer.eval.classifiers import MiniLM
        from interp_steer.models import chat, load_model

        prompts, texts = list(prompts), list(texts)
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts")
        if self._model is None:
            self._model = load_model()
        if self._embed is None:
            self._embed = MiniLM()
        heads = [chat(self._model, p) if p else "" for p in prompts]
        logp = np.full(len(texts), np.nan)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if keep:
            ppl = metrics.perplexity(
                self._model, [heads[i] for i in keep], [texts[i] for i in keep]
            )
            logp[keep] = -np.log(ppl)
        t = np.asarray(self._embed([x or " " for x in texts]))
        p = np.asarray(self._embed([q or x or " " for q, x in zip(prompts, texts)]))
        rel = (t * p).sum(1) / (np.linalg.norm(t, axis=1) * np.linalg.norm(p, axis=1) + 1e-9)
        return feature_matrix(logp, metrics.repetition_factor(texts), rel, prompts, texts)

    def __call__(self, prompts: Sequence[str | None], texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        return self.head(self.features(prompts, texts))


def coherence_measure(model, kind) -> tuple[Callable | None, str]:
    """``"model-text"``: the head validated on blind-labelled model text (its log-prob feature
    is read under SmolLM2, reused when it is the audited model); ``"fluency"``:
    `metrics.coherence` under the model (fast, but passes fluent salad and echoes);
    or a callable (prompts, texts) -> [0, 1]."""
    from interp_steer.models import DEFAULT_MODEL

    if kind == "model-text":
        own = model.cfg.model_name.lower().startswith("smollm2-135m")
        fn = ModelTextCoherence(fluency_model=model if own else None)
        return fn, f"{fn.name} ({DEFAULT_MODEL} log-probs)"
    if kind == "fluency":
        return None, "metrics.coherence (fluency x repetition; not validated on model text)"
    if callable(kind):
        return kind, getattr(kind, "name", type(kind).__name__)
    raise ValueError(f"coherence must be 'model-text', 'fluency' or a callable, got {kind!r}")
