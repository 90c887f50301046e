"""Contrastive datasets shipped with the package (written for this project).

Each has >= 48 (positive, negative) pairs with a fixed held-out split (every 4th pair) and a
list of open prompts for generation. Regenerate with ``python tools/make_datasets.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

Pair = tuple[str, str]


@dataclass(frozen=True)
class ContrastiveDataset:
    name: str
    description: str
    train: list[Pair]
    test: list[Pair]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.train) + len(self.test)


_NOT_CONTRASTIVE = {
    "prompt_sets",
    "capability",
    "facts",
    "trait_eval",
    "misalignment_labels",
    "em_judge_audit",  # blind labels of EM answers (analyses/judge_audit), test only
    "safety_concepts",
    "generic_eval",  # SAE generalisation texts (interp_steer.sae.corpus)
    "coherence_head",  # the model-text coherence measure (interp_steer.eval.coherence)
    "trait_prompts",  # evaluation prompts per trait (analyses/identifiability)
}


def read_data(name: str) -> dict:
    """A shipped data file (``interp_steer/data/<name>.json``) as parsed JSON."""
    path = files("interp_steer.data").joinpath(f"{name}.json")
    if not path.is_file():
        raise ValueError(f"no shipped data file {name!r}.json")
    return json.loads(path.read_text())


def available() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in files("interp_steer.data").iterdir()
        if p.name.endswith(".json") and p.name[:-5] not in _NOT_CONTRASTIVE
    )


def prompt_sets() -> dict[str, list[str]]:
    """Open prompt distributions for shift checks: general, medical, legal, creative (topic);
    email, tweet, academic (genre); safety."""
    raw = json.loads(files("interp_steer.data").joinpath("prompt_sets.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def trait_prompts(trait: str, n: int | None = None) -> list[str]:
    """The first ``n`` evaluation prompts for a trait (all when None): written apart from the
    trait dataset's prompts and pairs, so that a study can choose its operating point on
    ``load(trait).prompts`` and test on these."""
    raw = read_data("trait_prompts")
    if trait not in raw or trait.startswith("_"):
        raise ValueError(
            f"no evaluation prompts for {trait!r}; shipped: {[k for k in raw if not k.startswith('_')]}"
        )
    if n is not None and not 1 <= n <= len(raw[trait]):
        raise ValueError(f"{trait} has {len(raw[trait])} evaluation prompts, asked for {n}")
    return list(raw[trait][:n])


def load(name: str) -> ContrastiveDataset:
    """Load a shipped dataset by name (see `available()`)."""
    if name not in available():
        raise ValueError(f"unknown dataset {name!r}; shipped: {available()}")
    raw = json.loads(files("interp_steer.data").joinpath(f"{name}.json").read_text())
    return ContrastiveDataset(
        name=raw["name"],
        description=raw["description"],
        train=[tuple(p) for p in raw["train"]],
        test=[tuple(p) for p in raw["test"]],
        prompts=list(raw["prompts"]),
    )


def contrastive_pairs(data) -> tuple[list[tuple], str]:
    """(pairs, label) from a shipped dataset name, a `ContrastiveDataset`, or a list of
    (positive, negative) or (prompt, positive, negative) texts."""
    if isinstance(data, str):
        return list(load(data).train), f"{data}:train"
    if isinstance(data, ContrastiveDataset):
        return list(data.train), f"{data.name}:train"
    if isinstance(data, dict) or not isinstance(data, Sequence):
        raise TypeError(
            "data must be a dataset name, a ContrastiveDataset or a list of (positive, "
            f"negative) pairs, got {type(data).__name__}"
        )
    pairs = list(data)
    if not pairs:
        raise ValueError("empty data: no contrastive pairs given")
    ok = all(
        isinstance(p, Sequence)
        and not isinstance(p, str)
        and len(p) in (2, 3)
        and all(isinstance(t, str) and t for t in p)
        for p in pairs
    )
    if not ok or len({len(p) for p in pairs}) != 1:
        raise ValueError(
            "data pairs must all be (positive, negative) or all (prompt, positive, "
            "negative) non-empty strings"
        )
    return pairs, f"custom:{len(pairs)} pairs"


# Surface features that a contrastive set can separate its poles by without any concept: a
# vector (or an SAE latent chosen by contrast) then encodes the cue, not the trait.
SURFACE_CUES = {
    "ends_with_period": lambda t: float(t.rstrip().endswith(".")),
    "ends_with_punctuation": lambda t: float(t.rstrip()[-1:] in ".!?"),
    "exclamations": lambda t: float(t.count("!")),
    "starts_capitalised": lambda t: float(t.lstrip()[:1].isupper()),
    "uppercase_fraction": lambda t: (
        sum(c.isupper() for c in t) / max(1, sum(c.isalpha() for c in t))
    ),
    "n_words": lambda t: float(len(t.split())),
}


def strip_surface_cues(data) -> list[tuple]:
    """The pairs of ``data`` with the cues a text can lose without changing its meaning
    removed from both sides: final punctuation, exclamation marks, and a lower-case first
    letter (capitalised). Length and inner casing stay: check them with `surface_cues`."""

    def strip(t: str) -> str:
        t = t.replace("!", "").strip().rstrip(".?;:, …").strip()
        return t[:1].upper() + t[1:]

    pairs, _ = contrastive_pairs(data)
    out = [(*p[:-2], strip(p[-2]), strip(p[-1])) for p in pairs]
    empty = [p[-2:] for p, q in zip(pairs, out) if not q[-1] or not q[-2]]
    if empty:
        raise ValueError(f"{len(empty)} texts are only surface cues, e.g. {empty[0]!r}")
    return out


def surface_cues(data, threshold: float = 0.75) -> dict[str, dict]:
    """How well each surface cue alone separates the positive from the negative texts.

    Args:
        data: anything `contrastive_pairs` accepts.
        threshold: a cue whose AUROC (or 1 − AUROC) reaches this is flagged a confound.

    Returns:
        Per cue: ``auroc`` (positive texts scored above negative ones; 0.5 = no signal),
        ``positive_mean``, ``negative_mean`` and ``confound``.
    """
    from interp_steer.eval.stats import auc

    pairs, _ = contrastive_pairs(data)
    pos, neg = [p[-2] for p in pairs], [p[-1] for p in pairs]
    y = [1] * len(pos) + [0] * len(neg)
    out = {}
    for name, fn in SURFACE_CUES.items():
        score = [fn(t) for t in pos + neg]
        a = float(auc(np.asarray(y), np.asarray(score)))
        out[name] = {
            "auroc": a,
            "positive_mean": float(np.mean(score[: len(pos)])),
            "negative_mean": float(np.mean(score[len(pos) :])),
            "confound": bool(max(a, 1 - a) >= threshold),
        }
    return out
