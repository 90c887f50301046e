"""Offline SAE training with sae-lens.

Training uses sae-lens's own `SAETrainer` and `TrainingSAE` (TopK or standard ReLU + L1). We
feed it activations we cache once from `interp_steer.corpus`, through the trainer's
data-provider seam, instead of `LanguageModelSAETrainingRunner`'s activation store: the runner
would re-run the model every epoch of our small corpus, could not skip the first token (an
attention sink whose norm is ~30x the others on SmolLM2) and could not hold out whole documents.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from interp_steer.activations import capture
from interp_steer.autograd import trains
from interp_steer.corpus import Corpus, build_corpus
from interp_steer.sae.features import import_sae_lens, set_metadata
from interp_steer.vectors import check_hook, model_fingerprint

ARCHITECTURES = ("topk", "standard")


@dataclass(frozen=True)
class SAETrainConfig:
    """What `train` fits. ``d_sae`` defaults to ``expansion`` x d_model."""

    architecture: str = "topk"  # "topk" or "standard" (ReLU + L1)
    expansion: int = 4
    d_sae: int | None = None
    k: int = 64  # topk: active latents per token (the L0 bar is <= 64)
    l1_coefficient: float = 5.0  # standard
    lr: float = 1e-3
    training_tokens: int = 2_000_000
    batch_size: int = 2048
    heldout_fraction: float = 0.1
    skip_first: int = 1  # leading tokens per document left out (attention sink)
    seed: int = 0

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}")
        if self.training_tokens < self.batch_size:
            raise ValueError("training_tokens must be at least one batch")


@torch.no_grad()
def token_activations(
    model: HookedTransformer,
    corpus: Corpus,
    hook: str,
    batch_size: int = 32,
    skip_first: int = 1,
    progress: bool = True,
) -> tuple[Float[Tensor, "n d"], Tensor]:
    """Every token's activation at ``hook`` (float32, CPU) and whether it is a completion token."""
    acts, completion = [], []
    # Sorting by length keeps padding (wasted compute) small.
    order = sorted(range(len(corpus.docs)), key=lambda i: len(corpus.docs[i]))
    docs = [corpus.docs[i] for i in order]
    batches = capture(model, docs, hook, batch_size, skip_first, progress)
    for j, (_, cap, keep) in zip(range(0, len(order), batch_size), batches):
        a = cap[hook].float().cpu()
        for r, i in enumerate(order[j : j + batch_size]):
            acts.append(a[r][keep[r].cpu()])
            completion.append(
                torch.arange(skip_first, len(corpus.docs[i])) >= max(corpus.starts[i], 1)
            )
    if not acts or sum(len(a) for a in acts) == 0:
        raise ValueError("the corpus has no tokens after skipping the first of each document")
    return torch.cat(acts), torch.cat(completion)


def _split_docs(corpus: Corpus, frac: float, seed: int) -> tuple[Corpus, Corpus]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(corpus.docs), generator=g).tolist()
    n_held = max(1, round(frac * len(perm)))
    if n_held >= len(perm):
        raise ValueError("corpus too small to hold out documents; give more texts")

    def sub(ids):
        return Corpus([corpus.docs[i] for i in ids], [corpus.starts[i] for i in ids], corpus.config)

    return sub(perm[n_held:]), sub(perm[:n_held])


def _batches(acts: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless shuffled epochs over cached activations (sae-lens's DataProvider protocol)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(acts), generator=g)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            yield acts[perm[i : i + batch_size]]


@torch.no_grad()
def evaluate(sae, acts: Float[Tensor, "n d"], batch_size: int = 4096) -> dict:
    """Explained variance, mean L0, MSE, and latents that never fire on ``acts``."""
    mean = acts.mean(0)
    sse = tot = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for i in range(0, len(acts), batch_size):
        x = acts[i : i + batch_size].to(sae.W_dec.device, sae.W_dec.dtype)
        f = sae.encode(x)
        xh = sae.decode(f)
        sse += (x - xh).pow(2).sum().item()
        tot += (x - mean.to(x)).pow(2).sum().item()
        l0 += (f > 0).sum().item()
        fired |= (f > 0).any(0).cpu()
    return {
        "explained_variance": 1 - sse / tot,
        "l0": l0 / len(acts),
        "mse": sse / acts.numel(),
        "dead_fraction": 1 - fired.float().mean().item(),
        "n_tokens": len(acts),
    }


@trains
def train(
    model: HookedTransformer,
    hook: str,
    corpus: Corpus | Sequence[str] | None = None,
    config: SAETrainConfig | None = None,
    progress: bool = True,
    **overrides,
):
    """Train an SAE on ``model``'s activations at ``hook`` with sae-lens. Returns (SAE, report).

    ``corpus``: a `Corpus`, a list of texts, or None for the default chat corpus
    (`interp_steer.corpus`). Keyword overrides replace `SAETrainConfig` fields. The report has
    held-out explained variance, L0, dead fraction, training time and the config.
    """
    sl = import_sae_lens()
    from sae_lens.config import SAETrainerConfig  # sae-lens takes ~2 s to import: only here

    cfg = config or SAETrainConfig()
    if overrides:
        cfg = SAETrainConfig(**{**asdict(cfg), **overrides})
    check_hook(model, hook)
    if corpus is not None and not isinstance(corpus, Corpus):
        corpus = Corpus.from_texts(model, list(corpus))
    if corpus is not None:  # the cheap size check, before collecting any activation
        usable = corpus.n_tokens - cfg.skip_first * len(corpus.docs)
        if usable * (1 - cfg.heldout_fraction) < cfg.batch_size:
            raise ValueError(
                f"corpus has ~{usable} usable tokens, too few for a training "
                f"batch of {cfg.batch_size} after holding out "
                f"{cfg.heldout_fraction:.0%}: give more text"
            )
    if corpus is None:
        corpus = build_corpus(model, progress=progress)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    train_docs, held_docs = _split_docs(corpus, cfg.heldout_fraction, cfg.seed)
    x_train, _ = token_activations(
        model, train_docs, hook, skip_first=cfg.skip_first, progress=progress
    )
    x_held, held_completion = token_activations(
        model, held_docs, hook, skip_first=cfg.skip_first, progress=progress
    )
    if len(x_train) < cfg.batch_size:
        raise ValueError(f"{len(x_train)} training tokens < one batch of {cfg.batch_size}")
    t_acts = time.time() - t0

    d_in = x_train.shape[1]
    d_sae = cfg.d_sae or cfg.expansion * d_in
    common = dict(d_in=d_in, d_sae=d_sae, normalize_activations="expected_average_only_in")
    if cfg.architecture == "topk":
        sae_cfg = sl.TopKTrainingSAEConfig(k=cfg.k, **common)
    else:
        sae_cfg = sl.StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common)
    training_sae = sl.TrainingSAE.from_dict(sae_cfg.to_dict())
    steps = cfg.training_tokens // cfg.batch_size
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * cfg.batch_size,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_warm_up_steps=min(50, steps // 10),
        lr_decay_steps=steps // 5,  # decay to lr/10 over the last fifth
        lr_end=cfg.lr / 10,
        device="cpu",
        dead_feature_window=max(1, steps // 4),
        feature_sampling_window=max(1, steps // 4),
        n_batches_for_norm_estimate=min(50, max(1, len(x_train) // cfg.batch_size)),
    )
    trainer = sl.SAETrainer(
        cfg=trainer_cfg, sae=training_sae, data_provider=_batches(x_train, cfg.batch_size, cfg.seed)
    )
    if not progress:
        trainer._update_pbar = lambda *a, **k: None  # noqa: E731 (sae-lens always draws one)
    trained = trainer.fit()
    t_train = time.time() - t0 - t_acts

    with tempfile.TemporaryDirectory() as tmp:
        trained.save_inference_model(tmp)
        # the inference class, as a user would load it, on the model's device (training ran
        # on the CPU, where the cached activations live)
        sae = sl.SAE.load_from_disk(tmp, device=str(model.W_E.device))
    set_metadata(sae, model, hook)
    held = evaluate(sae, x_held)
    report = {
        "model": model_fingerprint(model),
        "hook": hook,
        "d_sae": d_sae,
        "config": asdict(cfg),
        "corpus": {**corpus.config, "n_docs": len(corpus.docs), "n_tokens": corpus.n_tokens},
        "train_tokens_unique": len(x_train),
        "heldout": held,
        "heldout_completion_only": evaluate(sae, x_held[held_completion]),
        "seconds_activations": t_acts,
        "seconds_training": t_train,
        "sae_lens_version": sl.__version__,
    }
    return sae, report
