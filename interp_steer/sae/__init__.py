"""SAEs with sae-lens: offline training, loading, feature interventions, vector decomposition.

- `training`: `train` an SAE on a model's activations with sae-lens, `evaluate` it.
- `io`: `save` / `load` in sae-lens's folder format, `load_default` (shipped, or trained once and cached), `ship`.
- `features`: `ablate_features`, `clamp_features`, `edit_features` at the SAE's hook (error
  term kept), `feature_vector`.
- `decompose`: `decompose` a steering vector into latents, `contrast_features`,
  `effect_survival`.
"""

from interp_steer.sae.corpus.chat import Corpus
from interp_steer.sae.decompose import (
    contrast_features,
    decompose,
    effect_survival,
    error_share,
    firing_rates,
    matched_random_latents,
)
from interp_steer.sae.features import (
    ablate_features,
    check_sae,
    clamp_features,
    edit_features,
    feature_means,
    feature_vector,
    import_sae_lens,
    sae_hook,
    set_metadata,
)
from interp_steer.sae.io import (
    default_hook,
    default_path,
    load,
    load_default,
    report_of,
    save,
    ship,
    shipped_path,
)
from interp_steer.sae.training import (
    ARCHITECTURES,
    SAETrainConfig,
    ce_loss_recovered,
    evaluate,
    token_activations,
    train,
)

__all__ = [
    "ARCHITECTURES",
    "Corpus",
    "SAETrainConfig",
    "ablate_features",
    "check_sae",
    "ce_loss_recovered",
    "clamp_features",
    "contrast_features",
    "decompose",
    "default_hook",
    "default_path",
    "edit_features",
    "effect_survival",
    "error_share",
    "firing_rates",
    "matched_random_latents",
    "evaluate",
    "feature_means",
    "feature_vector",
    "import_sae_lens",
    "load",
    "load_default",
    "ship",
    "shipped_path",
    "report_of",
    "sae_hook",
    "save",
    "set_metadata",
    "token_activations",
    "train",
]
