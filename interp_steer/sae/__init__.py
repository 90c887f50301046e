"""SAEs with sae-lens: offline training, loading, feature interventions, vector decomposition.

- `training`: `train` an SAE on a model's activations with sae-lens, `evaluate` it.
- `io`: `save` / `load` in sae-lens's folder format, `load_default` (trained once, cached).
- `features`: `ablate_features`, `clamp_features`, `edit_features` at the SAE's hook (error
  term kept), `feature_vector`.
- `decompose`: `decompose` a steering vector into latents, `contrast_features`,
  `effect_survival`.
"""

from interp_steer.sae.corpus.chat import Corpus
from interp_steer.sae.decompose import contrast_features, decompose, effect_survival
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
from interp_steer.sae.io import default_hook, default_path, load, load_default, report_of, save
from interp_steer.sae.training import (
    ARCHITECTURES,
    SAETrainConfig,
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
    "clamp_features",
    "contrast_features",
    "decompose",
    "default_hook",
    "default_path",
    "edit_features",
    "effect_survival",
    "evaluate",
    "feature_means",
    "feature_vector",
    "import_sae_lens",
    "load",
    "load_default",
    "report_of",
    "sae_hook",
    "save",
    "set_metadata",
    "token_activations",
    "train",
]
