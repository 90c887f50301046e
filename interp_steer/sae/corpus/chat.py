"""An offline training corpus for SAEs: chat prompts plus the model's own completions.

No text corpus can be downloaded here, and web text would be the wrong distribution anyway for
an instruct model that we steer in chat: the SAE should see the activations that steering
touches. So the corpus is

- 512 chat prompts (64 topics x 8 task templates, listed below), each answered by the model
  itself with temperature 0.8 / top-p 0.95 sampling (interp_steer's KV-cached `generate`),
- plus every text of the shipped contrastive datasets and prompt sets, as plain text.

The tokenized corpus is cached (JSON of token ids) under the model cache, keyed by model
fingerprint and corpus config. Its weakness: it is small (~70k tokens by default) and written
largely by the model itself, so rare concepts are under-represented.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from transformer_lens import HookedTransformer

from interp_steer._io import write_json
from interp_steer.activations import encode
from interp_steer.models import cache_dir
from interp_steer.vectors import model_fingerprint

TOPICS = [
    "the ocean",
    "volcanoes",
    "honeybees",
    "the Roman Empire",
    "black holes",
    "chess",
    "bread baking",
    "climate change",
    "the human heart",
    "electric cars",
    "jazz music",
    "the moon landing",
    "photosynthesis",
    "the stock market",
    "vaccines",
    "coffee",
    "the Great Wall of China",
    "machine learning",
    "dinosaurs",
    "rainforests",
    "the internet",
    "gardening",
    "marathon running",
    "ancient Egypt",
    "earthquakes",
    "penguins",
    "democracy",
    "the printing press",
    "solar power",
    "sleep",
    "friendship",
    "recycling",
    "mountains",
    "the French Revolution",
    "origami",
    "tea ceremonies",
    "bicycles",
    "antibiotics",
    "video games",
    "the water cycle",
    "wolves",
    "poetry",
    "public libraries",
    "trains",
    "the periodic table",
    "meditation",
    "deserts",
    "social media",
    "space telescopes",
    "weddings",
    "job interviews",
    "budgeting",
    "learning a language",
    "pizza",
    "hurricanes",
    "the violin",
    "museums",
    "owls",
    "falcons",
    "Australia",
    "the solar system",
    "Python programming",
    "customer service",
    "first aid",
]

TEMPLATES = [
    "Tell me about {t}.",
    "Explain {t} to a ten-year-old.",
    "Write a short story involving {t}.",
    "What are three surprising facts about {t}?",
    "Write a short poem about {t}.",
    "What are the pros and cons of {t}?",
    "Write a friendly email to a colleague about {t}.",
    "I'm feeling unsure about {t}. Can you give me some advice?",
]


def chat_prompts() -> list[str]:
    return [tmpl.format(t=t) for t in TOPICS for tmpl in TEMPLATES]


def plain_texts() -> list[str]:
    """Every text of the shipped datasets and prompt sets."""
    from interp_steer import datasets

    out: list[str] = []
    for name in datasets.available():
        ds = datasets.load(name)
        out += [t for pair in (*ds.train, *ds.test) for t in pair] + ds.prompts
    for prompts in datasets.prompt_sets().values():
        out += prompts
    return out


@dataclass(frozen=True)
class CorpusConfig:
    n_prompts: int = 512
    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 64
    seed: int = 0


@dataclass
class Corpus:
    """Tokenized documents; ``starts[i]`` is where document i's completion begins (0: plain).

    ``genres[i]``, when given, names document i's genre (the generic corpus of
    `interp_steer.sae.corpus` sets it; the chat corpus leaves it None)."""

    docs: list[list[int]]
    starts: list[int]
    config: dict
    genres: list[str] | None = None

    def __post_init__(self):
        if not self.docs:
            raise ValueError("empty corpus: no documents")
        if len(self.docs) != len(self.starts):
            raise ValueError("docs and starts differ in length")
        if self.genres is not None and len(self.genres) != len(self.docs):
            raise ValueError("docs and genres differ in length")

    @property
    def n_tokens(self) -> int:
        return sum(len(d) for d in self.docs)

    def of_genre(self, genre: str) -> Corpus:
        """The documents of one genre (a ValueError if the corpus has no genre labels or none
        of ``genre``)."""
        if self.genres is None:
            raise ValueError("this corpus has no genre labels")
        ids = [i for i, g in enumerate(self.genres) if g == genre]
        if not ids:
            raise ValueError(f"no {genre!r} documents; genres here: {sorted(set(self.genres))}")
        return Corpus(
            [self.docs[i] for i in ids],
            [self.starts[i] for i in ids],
            {**self.config, "genre": genre},
            [genre] * len(ids),
        )

    @classmethod
    def from_texts(cls, model, texts: list[str]) -> Corpus:
        """A corpus of plain texts (no completions)."""
        docs = [encode(model, t) for t in texts]
        return cls(docs, [0] * len(docs), {"source": "texts", "n_texts": len(texts)})


def cache_path(model: HookedTransformer, cfg: CorpusConfig) -> Path:
    """Where `build_corpus` caches the chat corpus for ``model`` and ``cfg`` (may not exist)."""
    blob = json.dumps(asdict(cfg), sort_keys=True) + model_fingerprint(model)
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    name = model.cfg.model_name.replace("/", "_")
    return cache_dir() / "corpus" / f"{name}-{key}.json"


def build_corpus(
    model: HookedTransformer, cfg: CorpusConfig | None = None, progress: bool = True
) -> Corpus:
    """The default SAE corpus for ``model`` (cached; generating it takes ~5 min on SmolLM2)."""
    from interp_steer.generation import generate
    from interp_steer.models import chat

    cfg = cfg or CorpusConfig()
    path = cache_path(model, cfg)
    if path.exists():
        try:
            raw = json.loads(path.read_text())
            corpus = Corpus(raw["docs"], raw["starts"], raw["config"])
            if len(corpus.docs) != len(corpus.starts) or not corpus.docs:
                raise ValueError("docs and starts disagree")
            return corpus
        except (ValueError, KeyError, TypeError) as e:  # half-written or foreign: rebuild
            warnings.warn(f"corpus cache {path} is unreadable ({e}); rebuilding it", stacklevel=2)
            path.unlink()
    prompts = chat_prompts()
    random.Random(cfg.seed).shuffle(prompts)
    prompts = prompts[: cfg.n_prompts]
    if progress:
        print(f"interp_steer: generating the SAE corpus ({len(prompts)} completions)...")
    completions = generate(
        model,
        prompts,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        progress=progress,
    )
    docs, starts = [], []
    for p, c in zip(prompts, completions):
        framed = chat(model, p)
        head = encode(model, framed)
        full = encode(model, framed + c)
        docs.append(full)
        starts.append(len(head))
    for t in plain_texts():
        docs.append(encode(model, t))
        starts.append(0)
    meta = {**asdict(cfg), "source": "chat prompts + own completions + shipped texts"}
    corpus = Corpus(docs, starts, meta)
    write_json(path, {"docs": docs, "starts": starts, "config": meta})
    return corpus
