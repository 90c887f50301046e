"""The identifiability study's configuration and the names it shares across its modules."""

from __future__ import annotations

from dataclasses import dataclass, field

PREREGISTRATION = "analyses/preregistration/identifiability.json"
# δ sources of the grid, in the pre-registration's order (which also fixes figure colours)
SOURCES = ("covariance_null", "random_orthogonal", "jacobian_null", "jacobian_signal")
PRIMARY = ("covariance_null", 1.0, 1.0)  # source, ‖δ‖/‖v‖, multiple of the operating α
RULE_PARAMS = {
    "relative": {"tol": 1e-3},
    "energy": {"energy": 0.99},
    "participation": {},
    "noise_floor": {},
}
NORM_DEFINITION = (
    "typical norm = median per-token L2 norm at the hook over the covariance corpus "
    "(chat-formatted prompts), position 0 excluded; r = |alpha| * ||v|| / typical norm"
)
# fields that change only which cells are computed or how they are analysed, not what a
# cell holds (cells are per trait, strength and size)
ANALYSIS_ONLY = (
    "traits",
    "sizes",
    "strengths",
    "n_boot",
    "margin",
    "broken_ratio",
    "control_p",
    "control_gap",
    "min_power",
    "conditions_traits",
    "preregistration",
)
# fields (with their defaults) added after the rerun's first cells: see run()
ADDED_LATER = {"corpus_prompts": None}


@dataclass
class Config:
    """The identifiability study (seed 001). The defaults are the pre-registered design
    (``analyses/preregistration/identifiability.json``) except ``strengths``, where only the
    operating α is run so far (the docs state the subset).

    Args:
        model: registry name of the model.
        traits: traits studied, in order.
        layer: the hook's block (default n_layers // 2, the paper's).
        positions: where α·v is added.
        rel_strengths: r values tried when choosing the operating point.
        selection_prompts: the trait dataset's prompts that choose the operating point
            (never evaluated).
        calib_samples: samples per selection prompt and r.
        coherence_floor: the operating point keeps coherence >= this × unsteered.
        n_prompts: evaluation prompts per trait (`datasets.trait_prompts`).
        n_samples: samples per evaluation prompt and condition.
        n_draws: δ draws per source and size; sample s of prompt p uses draw
            (p·n_samples + s) mod n_draws, so prompts and draws are crossed.
        sizes: ‖δ‖ / ‖v‖ values, run in this order.
        sources: δ sources (see `SOURCES`).
        strengths: multiples of the operating α.
        margin: retained in [1 − margin, 1 + margin] is equivalence (pre-registered).
        broken_ratio: v + δ whose coherence is below this × v's is "broken".
        control_p, control_gap: the positive control needs p below control_p and retention
            this far apart.
        min_power: the negative control's TOST power needed before any verdict.
        covariance_tokens: generated tokens whose activations give the covariance.
        corpus_prompts: how many of the corpus prompts generate them (None: all 204).
        null_rule: the covariance null-space rule (`interp_steer.identifiability.RULES`).
        jacobian_prompts: prompts (with generated continuations) of the Jacobian null space.
        jacobian_k: the Jacobian-signal δ lies in its top-k right singular directions.
        jacobian_tol: singular values below this × the largest span the Jacobian null space
            (0.05, the paper's public code).
        conditions_traits: logit-level conditions for the first n traits.
        preregistration: the committed pre-registration the cells must follow (None: no check,
            for quick runs and tests).
    """

    model: str = "smollm2-135m-instruct"
    traits: list[str] = field(
        default_factory=lambda: [
            "formality",
            "politeness",
            "sentiment",
            "agreeableness",
            "truthfulness",
        ]
    )
    layer: int | None = None
    positions: str = "last_and_generated"
    rel_strengths: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.4, 0.8])
    selection_prompts: int = 20
    calib_samples: int = 2
    coherence_floor: float = 0.8
    n_prompts: dict[str, int] = field(
        default_factory=lambda: {
            "sentiment": 240,
            "formality": 150,
            "politeness": 100,
            "agreeableness": 100,
            "truthfulness": 100,
        }
    )
    n_samples: int = 2
    n_draws: int = 10
    sizes: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.1])
    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    strengths: list[float] = field(default_factory=lambda: [1.0])
    margin: float = 0.2
    broken_ratio: float = 0.9
    control_p: float = 0.01
    control_gap: float = 0.3
    min_power: float = 0.8
    max_new_tokens: int = 40
    temperature: float = 0.8
    covariance_tokens: int = 50_000
    corpus_prompts: int | None = None
    null_rule: str = "energy"
    jacobian_prompts: int = 20
    jacobian_k: int = 4
    jacobian_tol: float = 0.05
    conditions_traits: int = 2
    k_span: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 50])
    n_individual: int = 50
    jacobian_layer_prompts: int = 2
    n_boot: int = 2000
    seed: int = 0
    preregistration: str | None = PREREGISTRATION
    quick: bool = False

    def __post_init__(self):
        unknown = set(self.sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown δ sources {sorted(unknown)}; known: {SOURCES}")
        missing = [t for t in self.traits if t not in self.n_prompts]
        if missing:
            raise ValueError(f"n_prompts has no count for {missing}")
        if self.n_draws < 2 or self.n_samples < 1:
            raise ValueError("n_draws must be >= 2 and n_samples >= 1")

    @classmethod
    def quick_config(cls, **kw) -> Config:
        """Minutes on 2 cores: every stage on one trait, few prompts and draws, no
        pre-registration check. Sentiment at r = 0.4 (the full study's SmolLM2 operating
        point), 48 prompts and 40 tokens, so that its positive control is detected."""
        quick = dict(
            traits=["sentiment"],
            rel_strengths=[0.4],
            selection_prompts=20,
            n_prompts={"sentiment": 48},
            n_draws=3,
            sizes=[1.0],
            max_new_tokens=40,
            covariance_tokens=1500,
            corpus_prompts=48,
            jacobian_prompts=2,
            conditions_traits=1,
            k_span=[1, 5],
            n_individual=5,
            jacobian_layer_prompts=1,
            n_boot=200,
            preregistration=None,
            quick=True,
        )
        return cls(**{**quick, **kw})
