"""Building and caching the generic corpus: the plan (candidates, package versions, cache
key), `build_generic_corpus`, its manifest, and the cache folder's layout and loading."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
from transformer_lens import HookedTransformer

from interp_steer._io import atomic_dir, write_json
from interp_steer.models import cache_dir
from interp_steer.sae.corpus.chat import Corpus, CorpusConfig
from interp_steer.sae.corpus.chat import cache_path as chat_cache_path
from interp_steer.sae.corpus.chunking import BuiltGenre, CorpusBuilder
from interp_steer.sae.corpus.config import (
    FILE_GENRES,
    FORMAT,
    SELF_DISTRIBUTION,
    SPLITS,
    GenericCorpusConfig,
)
from interp_steer.sae.corpus.sources import (
    Candidate,
    Distribution,
    distributions,
    file_candidates,
    select_distributions,
    shipped_candidates,
    shipped_files,
    site_roots,
)
from interp_steer.vectors import model_fingerprint

MANIFEST = "manifest.json"
CORPUS_MANIFEST = "corpus_manifest.json"  # the name beside an SAE (`write_manifest`)
_ARRAYS = "arrays.npz"
_DOCUMENTS = "documents.json"


def _cache_path(model: HookedTransformer, key: str) -> Path:
    name = model.cfg.model_name.replace("/", "_")
    return cache_dir() / "corpus" / f"generic-{name}-{key}"


def _stream_sha(chunks: list[list[int]]) -> str:
    flat = np.fromiter((t for c in chunks for t in c), dtype="<u4")
    return hashlib.sha256(flat.tobytes()).hexdigest()


def _plan(model: HookedTransformer, cfg: GenericCorpusConfig):
    """Everything the corpus is made from, without reading a file: candidates per genre (for
    an installed-text genre, a function that reads its files into candidates), the versions
    of the packages, and the cache key."""
    specs = cfg.specs
    file_genres = set(FILE_GENRES) & set(specs)
    selected: list[Distribution] = []
    roots = site_roots(cfg)
    if file_genres:
        selected = select_distributions(distributions(roots), cfg)
    versions = {d.name: d.version for d in selected}
    cands: dict[str, list[Candidate]] = {}
    if file_genres:
        py, text = file_candidates(selected)
        if "code" in specs:
            cands["code"] = py
        if "docs" in specs:
            cands["docs"] = [Candidate(c.source, c.package, "pydoc", c.path) for c in py] + text
        if "prose" in specs:
            cands["prose"] = [
                Candidate(f"METADATA:{d.name}", d.name, "metadata", d.info) for d in selected
            ]
    for genre, text in cfg.shipped:
        if genre in specs:
            package, versions[package], files = shipped_files(genre, text)
            cands[genre] = partial(shipped_candidates, genre, text, package, files)
    if "chat" in specs:
        versions[SELF_DISTRIBUTION] = importlib.metadata.version("interp_steer")
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
    """The generic SAE corpus for ``model`` (package docstring): (train corpus with per-document
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
    builder = CorpusBuilder(model, cfg, progress)
    built: list[BuiltGenre] = []
    for genre, _ in cfg.genres:  # in config order: earlier genres win de-duplication
        if genre == "chat":
            built.append(builder.fill_chat())
        else:
            genre_cands = cands[genre]() if callable(cands[genre]) else cands[genre]
            built.append(builder.fill(genre, genre_cands, versions))
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


def _manifest(model, cfg, key, roots, built: list[BuiltGenre], seconds: float) -> dict:
    genres = {}
    shipped = cfg.shipped_texts
    for g in built:
        if g.name in shipped:
            origin = {
                "requirement": shipped[g.name].requirement,
                "licence": shipped[g.name].licence,
            }
        else:
            origin = {"licence": "per package (see sources)" if g.name != "chat" else "generated"}
        genres[g.name] = {
            **origin,
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
    return chat_cache_path(model, cfg or CorpusConfig()).exists()


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Write ``manifest`` as ``corpus_manifest.json`` in ``folder`` (beside an SAE), atomically."""
    out = Path(folder) / CORPUS_MANIFEST
    write_json(out, manifest)
    return out
