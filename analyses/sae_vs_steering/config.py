"""The SAE-against-vectors study's configuration and the names its modules share."""

from __future__ import annotations

from dataclasses import dataclass, field

PREREGISTRATION = "analyses/preregistration/sae_vs_steering.json"
# the vector and the three SAE interventions, each calibrated to every target KL
METHODS = ("mean_diff", "sae_feature", "sae_clamp", "sae_ablate")
SAE_METHODS = METHODS[1:]
# the prompting baseline's system prompt per trait (AxBench's baseline: ask for the concept)
PROMPTING = {
    "sentiment": "Answer in a warm, positive and enthusiastic way.",
    "formality": "Answer in a formal, professional register.",
    "politeness": "Answer very politely and courteously.",
}
KL_DEFINITION = (
    "mean next-token KL(steered || unsteered) in nats over the generation positions (the last "
    "prompt token and each token of one unsteered sampled completion per evaluation prompt)"
)
# fields that change which cells are computed or how they are analysed, not what a cell holds
ANALYSIS_ONLY = ("traits", "n_boot", "alpha", "min_levels", "kl_tolerance", "preregistration")
# fields the pre-registration fixes: a run that changes one is not the registered design
DESIGN = (
    "target_kls",
    "kl_tolerance",
    "positions",
    "n_candidates",
    "n_ablate",
    "selection_samples",
    "selection_kl",
    "n_prompts",
    "n_samples",
    "max_new_tokens",
    "temperature",
    "coherent_threshold",
    "survival_ks",
    "random_draws",
    "alpha",
    "min_levels",
)


@dataclass
class Config:
    """Steering vectors against SAE interventions at equal KL (issue 42). The defaults are the
    pre-registered design (``analyses/preregistration/sae_vs_steering.json``).

    Args:
        model: registry name of the model.
        traits: traits compared (each needs `datasets.trait_prompts` and a prompting line).
        target_kls: the KL levels every method is calibrated to (nats, `KL_DEFINITION`).
        kl_tolerance: a condition counts only if its KL is within this fraction of its target.
        positions: where every intervention edits (the SAE never saw position 0).
        n_candidates: latents considered per ranking (contrast and decoder cosine).
        n_ablate: latents ablated by ``sae_ablate`` (the most active on the negative side).
        selection_samples: samples per selection prompt when choosing the latent by its
            output effect (on the trait dataset's prompts, never evaluated).
        selection_kl: the KL at which candidate latents are compared.
        n_prompts: evaluation prompts per trait (`datasets.trait_prompts`).
        n_samples: samples per prompt and condition; sample s uses seed s in every condition.
        max_new_tokens: tokens generated per sample.
        temperature: sampling temperature.
        coherent_threshold: a text counts as coherent when the model-text measure is >= this.
        survival_ks: numbers of top latents of mean_diff ablated in the survival check.
        random_draws: frequency-matched random-latent draws per k (the control).
        n_boot: bootstrap resamples.
        alpha: the test level after Holm.
        min_levels: "SAE falls short" needs a Holm-significant deficit at this many KL levels.
        preregistration: the committed design the cells must descend from (None: no check).
        seed: seed of vectors, draws and bootstraps.
        quick: a small run (tests, demo).
    """

    model: str = "smollm2-135m-instruct"
    traits: list[str] = field(default_factory=lambda: ["sentiment", "formality", "politeness"])
    target_kls: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 1.0])
    kl_tolerance: float = 0.1
    positions: str = "all_but_first"
    n_candidates: int = 8
    n_ablate: int = 8
    selection_samples: int = 2
    selection_kl: float = 0.3
    n_prompts: int = 20
    n_samples: int = 5
    max_new_tokens: int = 40
    temperature: float = 1.0
    coherent_threshold: float = 0.5
    survival_ks: list[int] = field(default_factory=lambda: [1, 4, 16])
    random_draws: int = 20
    n_boot: int = 2000
    alpha: float = 0.05
    min_levels: int = 3
    preregistration: str | None = PREREGISTRATION
    seed: int = 0
    quick: bool = False

    def __post_init__(self):
        unknown = [t for t in self.traits if t not in PROMPTING]
        if unknown:
            raise ValueError(f"traits {unknown} have no prompting line; have {list(PROMPTING)}")
        if not self.target_kls or any(k <= 0 for k in self.target_kls):
            raise ValueError(f"target_kls must be positive, got {self.target_kls}")
        if self.selection_kl not in self.target_kls:
            raise ValueError(f"selection_kl {self.selection_kl} must be one of target_kls")
        if self.n_prompts < 2 or self.n_samples < 1:
            raise ValueError("need n_prompts >= 2 (the bootstrap's clusters) and n_samples >= 1")
        ks = list(self.survival_ks)
        if not ks or ks != sorted(set(ks)) or ks[0] < 1:
            raise ValueError(f"survival_ks must be increasing positive ints, got {ks}")

    @classmethod
    def quick_config(cls, **kw) -> Config:
        base = dict(
            traits=["sentiment"],
            target_kls=[0.1, 0.3],
            n_candidates=3,
            n_ablate=4,
            selection_samples=1,
            n_prompts=4,
            n_samples=2,
            max_new_tokens=16,
            survival_ks=[1, 2],
            random_draws=3,
            n_boot=200,
            min_levels=1,
            preregistration=None,
            quick=True,
        )
        return cls(**{**base, **kw})
