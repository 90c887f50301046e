"""Turning documents into chunks: normalising and hashing text (de-duplication, the held-out
split), token windows, the rejection rules for near-empty or boilerplate chunks, and the
per-genre builder (`CorpusBuilder`) that fills each genre's train and held-out budgets."""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp_steer.sae.corpus.chat import build_corpus
from interp_steer.sae.corpus.config import (
    SELF_DISTRIBUTION,
    SPLITS,
    GenericCorpusConfig,
    GenreSpec,
)
from interp_steer.sae.corpus.sources import (
    Candidate,
    drop_licence_paragraphs,
    licence_score,
    load_document,
)


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def _digest(text: str) -> bytes:
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).digest()


def _heldout_score(seed: int, source: str) -> float:
    h = hashlib.sha256(f"{seed}:{source}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _windows(offsets: list[tuple[int, int]], text: str, width: int) -> list[tuple[int, int]]:
    """Token windows [s, e) of at most ``width`` tokens; a cut falls after the last token that
    holds a newline in the window's second half, when there is one."""
    n, s, out = len(offsets), 0, []
    while s < n:
        e = min(s + width, n)
        if e < n:
            for j in range(e, s + width // 2, -1):
                a, b = offsets[j - 1]
                if text.find("\n", a, b) >= 0:
                    e = j
                    break
        out.append((s, e))
        s = e
    return out


_LETTER = re.compile(r"[^\W\d_]")
_CHARS_PER_CAP_TOKEN = 12


def _reject(text: str, ids: list[int], cfg: GenericCorpusConfig) -> str | None:
    """Why a chunk is dropped (None: kept)."""
    if len(ids) < cfg.min_chunk_tokens:
        return "short"
    words = text.split()
    chars = sum(len(w) for w in words)
    if not chars:
        return "empty"
    if len(_LETTER.findall(text)) < cfg.min_letter_fraction * chars:
        return "few_letters"
    if len(set(ids)) < cfg.min_unique_fraction * len(ids):
        return "repetitive"
    if max((len(w) for w in words if "://" not in w), default=0) > cfg.max_run_chars:
        return "long_run"
    if licence_score(text) >= 2:
        return "licence"
    return None


def _tokenizer(model: HookedTransformer) -> Callable[[list[str]], list[tuple[list, list]]]:
    tok = model.tokenizer
    if tok is None or not getattr(tok, "is_fast", False):
        raise ValueError("the generic corpus needs the model's fast (Rust) tokenizer")

    def run(texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        enc = tok(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,  # no "longer than the model's maximum" warning: we chunk
        )
        return list(zip(enc["input_ids"], enc["offset_mapping"]))

    return run


@dataclass
class BuiltGenre:
    """One genre's build state and result."""

    name: str
    spec: GenreSpec
    chunks: dict[str, list[list[int]]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    starts: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    documents: list[dict] = field(default_factory=list)
    sources: dict[str, dict] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    candidates: int = 0
    visited: int = 0

    def tokens(self, split: str) -> int:
        return sum(len(c) for c in self.chunks[split])

    def add(self, cand_source, package, version, split, chunks, starts) -> None:
        self.chunks[split] += chunks
        self.starts[split] += starts
        n = sum(len(c) for c in chunks)
        self.documents.append(
            {"source": cand_source, "split": split, "chunks": len(chunks), "tokens": n}
        )
        s = self.sources.setdefault(package, {"version": version, "files": 0, "tokens": 0})
        s["files"] += 1
        s["tokens"] += n


class CorpusBuilder:
    def __init__(self, model: HookedTransformer, cfg: GenericCorpusConfig, progress: bool):
        self.model, self.cfg, self.progress = model, cfg, progress
        tok = model.tokenizer
        self.bos = (
            [tok.bos_token_id]
            if model.cfg.default_prepend_bos and tok.bos_token_id is not None
            else []
        )
        self.seen_docs: set[bytes] = set()
        self.seen_chunks: set[bytes] = set()

    def budgets(self, spec: GenreSpec) -> dict[str, int]:
        held = round(spec.cap * self.cfg.heldout_fraction)
        return {"train": spec.cap - held, "heldout": held}

    def heldout_sources(self, cands: list[Candidate]) -> set[str]:
        frac = self.cfg.heldout_fraction
        scores = {c.source: _heldout_score(self.cfg.seed, c.source) for c in cands}
        held = {s for s, v in scores.items() if v < frac}
        if not held and scores and frac > 0:  # a small genre still holds one document out
            held = {min(scores, key=scores.get)}
        return held

    def fill(self, genre: str, cands: list[Candidate], versions: dict[str, str]) -> BuiltGenre:
        """Visit ``cands`` in a seeded shuffle until both splits' budgets are spent.

        Each document's fate depends only on the state when it is processed (budgets left,
        package use, hashes seen), which only grows; the checks made before a batch is read
        (to skip reading what cannot be used) therefore never change the result."""
        cfg, spec = self.cfg, self.cfg.specs[genre]
        g = BuiltGenre(genre, spec, candidates=len(cands))
        order = list(cands)
        random.Random(f"{cfg.seed}:{genre}").shuffle(order)
        held = self.heldout_sources(order)
        room = self.budgets(spec)
        pkg_cap = math.ceil(spec.package_fraction * spec.cap)
        pkg_used: Counter = Counter()
        least = cfg.min_chunk_tokens + len(self.bos)  # a budget below this is spent
        width = cfg.max_doc_tokens - len(self.bos)
        tokenize = _tokenizer(self.model)

        def blocked(c: Candidate, split: str) -> str | None:
            if room[split] < least:
                return "full"
            if pkg_cap - pkg_used[c.package] < least:
                return "package_cap"
            return None

        bar = tqdm(total=len(order), desc=f"corpus: {genre}", disable=not self.progress)
        batch_size = 32
        for b in range(0, len(order), batch_size):
            if all(v < least for v in room.values()):
                break
            batch = order[b : b + batch_size]
            g.visited = min(b + batch_size, len(order))
            bar.update(len(batch))
            loaded = []
            for c in batch:
                split = "heldout" if c.source in held else "train"
                why = blocked(c, split)
                if why is None:
                    text = load_document(c)
                    if text and genre in ("docs", "prose"):
                        text, n = drop_licence_paragraphs(text)
                        g.dropped["licence_paragraph"] += n
                    if not text or not text.strip():
                        why = "no_text"
                    else:
                        h = _digest(text)
                        why = "duplicate_document" if h in self.seen_docs else None
                if why == "full":
                    continue
                if why:
                    g.dropped[why] += 1
                    continue
                text = self._excerpt(text, spec.doc_cap, f"{genre}:{c.source}")
                loaded.append((c, split, h, text))
            if not loaded:
                continue
            for (c, split, h, text), (ids, offsets) in zip(
                loaded, tokenize([t for *_, t in loaded])
            ):
                why = blocked(c, split) or ("duplicate_document" if h in self.seen_docs else None)
                if why == "full":
                    continue
                if why:
                    g.dropped[why] += 1
                    continue
                self.seen_docs.add(h)
                kept, local = [], set()
                for s, e in _windows(offsets, text, width):
                    chunk_text = text[offsets[s][0] : offsets[e - 1][1]]
                    why = _reject(chunk_text, ids[s:e], cfg)
                    d = _digest(chunk_text)
                    if why is None and (d in self.seen_chunks or d in local):
                        why = "duplicate_chunk"
                    if why:
                        g.dropped[why] += 1
                        continue
                    local.add(d)
                    kept.append((self.bos + list(ids[s:e]), d))
                chosen = self._cap_document(kept, spec.doc_cap, f"{genre}:{c.source}")
                budget = min(room[split], pkg_cap - pkg_used[c.package])
                take, used = [], 0
                for chunk, d in chosen:
                    if used + len(chunk) > budget:
                        break
                    take.append(chunk)
                    used += len(chunk)
                    self.seen_chunks.add(d)
                if take:
                    version = versions.get(c.package, "?")
                    g.add(c.source, c.package, version, split, take, [0] * len(take))
                    room[split] -= used
                    pkg_used[c.package] += used
        bar.close()
        return g

    def _excerpt(self, text: str, doc_cap: int, key: str) -> str:
        """A long document's seeded excerpt, from a line start, of ~4x what ``doc_cap``
        lets it contribute (at >= 3 characters a token): tokenizing whole files would
        cost 20x more for the same corpus."""
        n = doc_cap * _CHARS_PER_CAP_TOKEN
        if len(text) <= n:
            return text
        a = random.Random(f"{self.cfg.seed}:{key}").randrange(len(text) - n + 1)
        nl = text.rfind("\n", 0, a)
        a = nl + 1 if nl >= 0 else 0
        return text[a : a + n]

    def _cap_document(self, kept: list, doc_cap: int, key: str) -> list:
        if sum(len(c) for c, _ in kept) <= doc_cap:
            return kept
        idx = list(range(len(kept)))
        random.Random(f"{self.cfg.seed}:{key}").shuffle(idx)
        chosen, n = [], 0
        for i in idx:
            if n + len(kept[i][0]) <= doc_cap:
                chosen.append(i)
                n += len(kept[i][0])
        return [kept[i] for i in sorted(chosen)]

    def fill_chat(self) -> BuiltGenre:
        """The chat corpus's documents, truncated to ``max_doc_tokens``; no length or letter
        filters (short prompts are the point), only de-duplication."""
        cfg, spec = self.cfg, self.cfg.specs["chat"]
        chat = build_corpus(self.model, cfg.chat, progress=self.progress)
        tok = self.model.tokenizer
        g = BuiltGenre("chat", spec, candidates=len(chat.docs))
        texts = [tok.decode(d) for d in chat.docs]
        sources = [f"chat:{_digest(t).hex()[:16]}" for t in texts]
        order = list(range(len(chat.docs)))
        random.Random(f"{cfg.seed}:chat").shuffle(order)
        held = self.heldout_sources([Candidate(sources[i], "", "chat", Path()) for i in order])
        room = self.budgets(spec)
        version = importlib.metadata.version("interp_steer")
        for i in tqdm(order, desc="corpus: chat", disable=not self.progress):
            g.visited += 1
            split = "heldout" if sources[i] in held else "train"
            doc = chat.docs[i][: min(cfg.max_doc_tokens, spec.doc_cap)]
            d = _digest(texts[i])
            if not texts[i].strip():
                g.dropped["empty"] += 1
            elif d in self.seen_docs or d in self.seen_chunks:
                g.dropped["duplicate_document"] += 1
            elif len(doc) <= room[split]:
                self.seen_docs.add(d)
                start = min(chat.starts[i], len(doc))
                g.add(sources[i], SELF_DISTRIBUTION, version, split, [doc], [start])
                room[split] -= len(doc)
        return g
