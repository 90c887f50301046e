"""Offline SAE training with sae-lens.

Training uses sae-lens's own `SAETrainer` and `TrainingSAE` (TopK or standard ReLU + L1). We
feed it activations we cache once from `interp_steer.sae.corpus.chat`, through the trainer's
data-provider seam, instead of `LanguageModelSAETrainingRunner`'s activation store: the runner
would re-run the model every epoch of our small corpus, could not skip the first token (an
attention sink whose norm is ~30x the others on SmolLM2) and could not hold out whole documents.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp_steer._io import atomic_path
from interp_steer.activations import capture, forward_kwargs, pad_left
from interp_steer.autograd import trains
from interp_steer.interventions import edit_at, positions_context
from interp_steer.models import cache_dir
from interp_steer.sae.corpus import (
    GenericCorpusConfig,
    build_generic_corpus,
    generic_eval_corpora,
)
from interp_steer.sae.corpus.chat import Corpus
from interp_steer.sae.features import import_sae_lens, set_metadata
from interp_steer.vectors import check_hook, model_fingerprint

ARCHITECTURES = ("topk", "standard")


@dataclass(frozen=True)
class SAETrainConfig:
    """What `train` fits. ``d_sae`` defaults to ``expansion`` x d_model.

    ``k`` belongs to ``"topk"`` (default 64) and ``l1_coefficient`` to ``"standard"`` (default
    5.0); setting the other architecture's parameter raises.
    """

    architecture: str = "topk"  # "topk" or "standard" (ReLU + L1)
    expansion: int = 4
    d_sae: int | None = None
    k: int | None = None  # topk: active latents per token (the L0 bar is <= 64); default 64
    l1_coefficient: float | None = None  # standard: default 5.0
    lr: float = 1e-3
    training_tokens: int = 6_000_000  # ~3 passes over the generic corpus
    batch_size: int = 2048
    heldout_fraction: float = 0.1
    skip_first: int = 1  # leading tokens per document left out (attention sink)
    seed: int = 0

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}")
        other = {"topk": "l1_coefficient", "standard": "k"}[self.architecture]
        if getattr(self, other) is not None:
            raise ValueError(
                f"{other} is not a parameter of the {self.architecture!r} architecture"
            )
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
    """Every token's activation at ``hook`` (float32, CPU), in document order, and whether it is
    a completion token."""
    acts: list = [None] * len(corpus.docs)
    completion: list = [None] * len(corpus.docs)
    # Sorting by length keeps padding (wasted compute) small.
    order = sorted(range(len(corpus.docs)), key=lambda i: len(corpus.docs[i]))
    docs = [corpus.docs[i] for i in order]
    batches = capture(model, docs, hook, batch_size, skip_first, progress)
    for j, (_, cap, keep) in zip(range(0, len(order), batch_size), batches):
        a = cap[hook].float().cpu()
        for r, i in enumerate(order[j : j + batch_size]):
            acts[i] = a[r][keep[r].cpu()]
            completion[i] = torch.arange(skip_first, len(corpus.docs[i])) >= max(
                corpus.starts[i], 1
            )
    if not acts or sum(len(a) for a in acts) == 0:
        raise ValueError("the corpus has no tokens after skipping the first of each document")
    return torch.cat(acts), torch.cat(completion)


# float16's largest finite value is 65504; a part with any larger activation is kept in float32
FLOAT16_SAFE = 60000.0


def cached_token_activations(
    model: HookedTransformer,
    corpus: Corpus,
    hook: str,
    skip_first: int = 1,
    docs_per_part: int = 1024,
    progress: bool = True,
) -> tuple[Float[Tensor, "n d"], Tensor]:
    """`token_activations`, cached on disk in float16 (float32 for a part whose activations
    exceed float16's range) parts of ``docs_per_part`` documents
    (keyed by the model, hook, rule and the corpus's tokens), so a retrain skips the forward
    passes and a killed capture resumes at its last finished part. An unreadable part is
    recomputed, with a warning."""
    blob = hashlib.sha256()
    for d in corpus.docs:
        blob.update(np.asarray(d, np.int64).tobytes() + b"|")
    blob.update(f"{model_fingerprint(model)}|{hook}|{skip_first}|{corpus.starts}".encode())
    root = cache_dir() / "sae_acts" / blob.hexdigest()[:16]
    acts, completion = [], []
    n_parts = -(-len(corpus.docs) // docs_per_part)
    for k in tqdm(range(n_parts), desc=f"activations at {hook}", disable=not progress):
        path = root / f"part{k:04d}.npz"
        try:
            with np.load(path) as z:
                a, c = torch.from_numpy(z["acts"]), torch.from_numpy(z["completion"])
            if not torch.isfinite(a).all():  # e.g. written by a version that overflowed float16
                raise ValueError("it holds non-finite activations")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            if path.exists():
                warnings.warn(
                    f"activation cache {path} is unreadable ({e}); recomputing it", stacklevel=2
                )
            lo, hi = k * docs_per_part, (k + 1) * docs_per_part
            part = Corpus(corpus.docs[lo:hi], corpus.starts[lo:hi], corpus.config)
            a, c = token_activations(model, part, hook, skip_first=skip_first, progress=False)
            # float16 halves the cache, but its range ends at 65504: Gemma-3's residual stream
            # has outlier dimensions beyond that, which it would store as inf
            if a.abs().max() < FLOAT16_SAFE:
                a = a.half()
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, acts=a.numpy(), completion=c.numpy())
        acts.append(a)
        completion.append(c)
    return torch.cat(acts).float(), torch.cat(completion)


@torch.no_grad()
def ce_loss_recovered(
    model: HookedTransformer,
    sae,
    corpus: Corpus,
    hook: str,
    skip_first: int = 1,
    max_docs: int = 32,
    batch_size: int = 8,
) -> dict:
    """Next-token CE with the SAE's reconstruction spliced in at ``hook`` (every position but
    the first ``skip_first``, which the SAE never saw), against the clean model and against
    zero-ablating those positions: recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean),
    sae-lens's definition."""
    docs = corpus.docs[:max_docs]
    width = max(len(d) for d in docs)
    positions = list(range(skip_first, width))

    def ce(edit) -> float:
        total, count = 0.0, 0
        for i in range(0, len(docs), batch_size):
            batch = pad_left(model, docs[i : i + batch_size])
            ctx = edit_at(model, hook, edit, positions) if edit is not None else nullcontext()
            # positions count in each row's unpadded sequence: without the layout, a column
            # index would put a shorter document's first token (the sink) among the edits
            with positions_context(model, batch.pad, batch.lengths), ctx:
                logits = model(batch.tokens, **forward_kwargs(batch))
            logp = logits[:, :-1].float().log_softmax(-1)
            nll = -logp.gather(-1, batch.tokens[:, 1:, None])[..., 0]
            mask = batch.mask[:, 1:] & batch.mask[:, :-1]
            total += float(nll[mask].sum())
            count += int(mask.sum())
        return total / count

    def splice(x: Tensor) -> Tensor:
        return sae.decode(sae.encode(x.to(sae.W_dec.dtype))).to(x.dtype)

    clean, spliced, zero = ce(None), ce(splice), ce(torch.zeros_like)
    return {
        "ce_clean": clean,
        "ce_sae": spliced,
        "ce_zero_ablation": zero,
        "ce_loss_recovered": (zero - spliced) / (zero - clean) if zero != clean else float("nan"),
        "n_docs": len(docs),
    }


def _split_docs(corpus: Corpus, frac: float, seed: int) -> tuple[Corpus, Corpus]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(corpus.docs), generator=g).tolist()
    n_held = max(1, round(frac * len(perm)))
    if n_held >= len(perm):
        raise ValueError("corpus too small to hold out documents; give more texts")

    def sub(ids):
        genres = [corpus.genres[i] for i in ids] if corpus.genres else None
        docs, starts = [corpus.docs[i] for i in ids], [corpus.starts[i] for i in ids]
        return Corpus(docs, starts, corpus.config, genres)

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
    heldout: dict[str, Corpus] | None = None,
    generic_eval: bool | None = None,
    corpus_config: GenericCorpusConfig | None = None,
    **overrides,
):
    """Train an SAE on ``model``'s activations at ``hook`` with sae-lens. Returns (SAE, report).

    ``corpus``: a `Corpus`, a list of texts, or None for the generic corpus built with
    ``corpus_config`` (`interp_steer.sae.corpus`; default: code, docs, prose, books, chat),
    its per-genre held-out split, its activations cached on disk). ``heldout``: {genre: Corpus} to evaluate on; without it,
    ``heldout_fraction`` of the documents are held out. Keyword overrides replace
    `SAETrainConfig` fields. The report has explained variance, L0 and dead fraction on the
    held-out split (pooled and per genre) and, with ``generic_eval`` (default: when the generic
    corpus is used), on the hand-written generic texts (data/generic_eval.json) with the CE
    loss recovered; the times, the config and the corpus (its manifest under
    ``report["corpus"]["manifest"]`` for the generic corpus).
    """
    sl = import_sae_lens()
    from sae_lens.config import SAETrainerConfig  # sae-lens takes ~2 s to import: only here

    cfg = config or SAETrainConfig()
    if overrides:
        cfg = SAETrainConfig(**{**asdict(cfg), **overrides})
    check_hook(model, hook)
    if corpus is not None and corpus_config is not None:
        raise ValueError("pass corpus or corpus_config (for the generic corpus), not both")
    if corpus is not None and not isinstance(corpus, Corpus):
        corpus = Corpus.from_texts(model, list(corpus))
    if corpus is not None:  # the cheap size check, before collecting any activation
        usable = corpus.n_tokens - cfg.skip_first * len(corpus.docs)
        kept = 1 if heldout is not None else 1 - cfg.heldout_fraction
        if usable * kept < cfg.batch_size:
            raise ValueError(
                f"corpus has ~{usable} usable tokens, too few for a training "
                f"batch of {cfg.batch_size} after holding out "
                f"{1 - kept:.0%}: give more text"
            )
    manifest = None
    if corpus is None:
        corpus, heldout, manifest = build_generic_corpus(model, corpus_config, progress)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    if heldout is None:
        train_docs, held_docs = _split_docs(corpus, cfg.heldout_fraction, cfg.seed)
        heldout = {"all": held_docs}
    else:
        train_docs = corpus
    acts = partial(
        cached_token_activations if manifest is not None else token_activations,
        model,
        hook=hook,
        skip_first=cfg.skip_first,
        progress=progress,
    )
    x_train, _ = acts(train_docs)
    held_x = {g: acts(c) for g, c in heldout.items() if c.docs}
    for name, x in [("training", x_train)] + [(f"held-out {g}", x) for g, (x, _) in held_x.items()]:
        if not torch.isfinite(x).all():  # sae-lens would train on them to an all-NaN SAE
            raise ValueError(f"the {name} activations at {hook} hold inf or NaN values")
    if len(x_train) < cfg.batch_size:
        raise ValueError(f"{len(x_train)} training tokens < one batch of {cfg.batch_size}")
    t_acts = time.time() - t0

    d_in = x_train.shape[1]
    d_sae = cfg.d_sae or cfg.expansion * d_in
    common = dict(d_in=d_in, d_sae=d_sae, normalize_activations="expected_average_only_in")
    if cfg.architecture == "topk":
        resolved = {"k": 64 if cfg.k is None else cfg.k}
        sae_cfg = sl.TopKTrainingSAEConfig(**resolved, **common)
    else:
        resolved = {"l1_coefficient": 5.0 if cfg.l1_coefficient is None else cfg.l1_coefficient}
        sae_cfg = sl.StandardTrainingSAEConfig(**resolved, **common)
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
    x_all = torch.cat([x for x, _ in held_x.values()])
    completion = torch.cat([c for _, c in held_x.values()])
    report = {
        "model": model_fingerprint(model),
        "hook": hook,
        "d_sae": d_sae,
        "config": {**asdict(cfg), **resolved},
        "corpus": _corpus_summary(corpus, heldout, manifest),
        "train_tokens_unique": len(x_train),
        "passes": steps * cfg.batch_size / len(x_train),
        "heldout": evaluate(sae, x_all),
        "heldout_completion_only": evaluate(sae, x_all[completion]) if completion.any() else None,
        "heldout_by_genre": {g: evaluate(sae, x) for g, (x, _) in held_x.items()},
        "seconds_activations": t_acts,
        "seconds_training": t_train,
        "sae_lens_version": sl.__version__,
    }
    if generic_eval or (generic_eval is None and manifest is not None):
        report["generic_eval"] = generic_evaluation(model, sae, hook, cfg.skip_first)
    return sae, report


def generic_evaluation(model: HookedTransformer, sae, hook: str, skip_first: int = 1) -> dict:
    """Explained variance, L0, dead fraction and CE loss recovered per genre of the
    hand-written generic texts (news, science, chat, code, fiction; never in any corpus)."""
    out = {}
    for genre, corpus in generic_eval_corpora(model).items():
        x, _ = token_activations(model, corpus, hook, skip_first=skip_first, progress=False)
        out[genre] = {**evaluate(sae, x), **ce_loss_recovered(model, sae, corpus, hook, skip_first)}
    return out


def _corpus_summary(corpus: Corpus, heldout: dict[str, Corpus], manifest: dict | None) -> dict:
    out = {
        "n_docs": len(corpus.docs),
        "n_tokens": corpus.n_tokens,
        "heldout_tokens": {g: c.n_tokens for g, c in heldout.items()},
    }
    if manifest is not None:  # `interp_steer.sae.save` also writes it as corpus_manifest.json
        out["manifest"] = manifest
    else:
        out.update(corpus.config)
    return out
