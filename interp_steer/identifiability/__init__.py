"""Identifiability of steering vectors: null spaces, orthogonal perturbations, equivalence.

- `nullspace`: `activation_covariance` streams activations at a hook into float64 sums,
  `null_space` turns a spectrum into a null-space estimate by an explicit rule, and
  `jacobian_null_space` does the same for the exact log-prob Jacobian.
- `perturb`: v' = v + δ with δ ⟂ v, ‖δ‖ = eps·‖v‖, from a chosen subspace.
- `equivalence`: `behavioural_equivalence` compares two vectors by next-token KL, classifier
  scores on generations (TOST with an explicit margin, Cohen's d) and embedding distance.
- `study`: `orthogonal_perturbation_study`, `paired_generations` (seed-paired texts for many
  conditions), `generate_rows` (one vector, alpha and seed per row) and `logit_checks`, every condition batched.
"""

from interp_steer.identifiability.equivalence import (
    EquivalenceResult,
    behavioural_equivalence,
    condition_rows,
    next_token_kl,
    stack_vectors,
)
from interp_steer.identifiability.nullspace import (
    RULES,
    Covariance,
    NullSpace,
    activation_covariance,
    bootstrap_null_dim,
    covariance_of,
    jacobian_gram,
    jacobian_null_space,
    null_space,
    prompt_activations,
    subspace_overlap,
)
from interp_steer.identifiability.perturb import perturb
from interp_steer.identifiability.study import (
    classifier_samples,
    generate_rows,
    kl_to_reference,
    logit_checks,
    orthogonal_perturbation_study,
    paired_generations,
    trait_logit_scores,
)

__all__ = [
    "RULES",
    "Covariance",
    "EquivalenceResult",
    "NullSpace",
    "activation_covariance",
    "behavioural_equivalence",
    "bootstrap_null_dim",
    "classifier_samples",
    "condition_rows",
    "covariance_of",
    "generate_rows",
    "jacobian_gram",
    "jacobian_null_space",
    "kl_to_reference",
    "logit_checks",
    "next_token_kl",
    "null_space",
    "orthogonal_perturbation_study",
    "paired_generations",
    "perturb",
    "prompt_activations",
    "stack_vectors",
    "subspace_overlap",
    "trait_logit_scores",
]
