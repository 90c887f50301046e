"""SAEs with sae-lens: offline training, loading, feature interventions, vector decomposition.

Training uses sae-lens's own `SAETrainer` and `TrainingSAE` (TopK or standard ReLU + L1). We
feed it activations we cache once from `interp_steer.corpus`, through the trainer's
data-provider seam, instead of `LanguageModelSAETrainingRunner`'s activation store: the runner
would re-run the model every epoch of our small corpus, could not skip the first token (an
attention sink whose norm is ~30x the others on SmolLM2) and could not hold out whole documents.

Feature interventions at the SAE's hook keep the error term by default:
    f = E(x),   x' = x + D(f') − D(f)
so only the edited latents' decoder contributions change and everything the SAE fails to
reconstruct passes through untouched. With ``keep_error=False`` the reconstruction D(f')
replaces x.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp_steer._io import atomic_dir, write_json
from interp_steer.activations import capture, forward_kwargs, tokenize
from interp_steer.autograd import trains
from interp_steer.corpus import Corpus, CorpusConfig, build_corpus
from interp_steer.interventions import Positions, edit_at, steer
from interp_steer.models import cache_dir
from interp_steer.vectors import SteeringVector, check_hook, model_fingerprint

ARCHITECTURES = ("topk", "standard")
META_FILE = "interp_steer.json"


def _sae_lens():
    try:
        import sae_lens
    except ImportError as e:  # a declared dependency, but say what to do if it is missing
        raise ImportError("interp_steer.sae needs sae-lens: pip install 'sae-lens>=6,<7'") from e
    return sae_lens


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


# ---------------------------------------------------------------- activations


@torch.no_grad()
def token_activations(
    model,
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
            completion.append(torch.arange(skip_first, len(corpus.docs[i])) >= max(corpus.starts[i], 1))
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


# ---------------------------------------------------------------- training and evaluation


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
    model,
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
    sl = _sae_lens()
    from sae_lens.config import SAETrainerConfig

    cfg = config or SAETrainConfig()
    if overrides:
        cfg = SAETrainConfig(**{**asdict(cfg), **overrides})
    check_hook(model, hook)
    if corpus is not None and not isinstance(corpus, Corpus):
        corpus = Corpus.from_texts(model, list(corpus))
    if corpus is not None:  # the cheap size check, before collecting any activation
        usable = corpus.n_tokens - cfg.skip_first * len(corpus.docs)
        if usable * (1 - cfg.heldout_fraction) < cfg.batch_size:
            raise ValueError(f"corpus has ~{usable} usable tokens, too few for a training "
                             f"batch of {cfg.batch_size} after holding out "
                             f"{cfg.heldout_fraction:.0%}: give more text")  # fmt: skip
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
    _set_metadata(sae, model, hook)
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


def _set_metadata(sae, model, hook: str) -> None:
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_name = model.cfg.model_name
    sae.cfg.metadata.interp_steer_fingerprint = model_fingerprint(model)


# ---------------------------------------------------------------- save / load


def save(sae, path: str | Path, report: dict | None = None) -> Path:
    """Save in sae-lens's format (weights + cfg.json), plus our report, atomically."""

    def fill(tmp: Path) -> None:
        sae.save_model(tmp)
        if report is not None:
            write_json(tmp / META_FILE, report)

    return atomic_dir(path, fill)


def load(path_or_release: str | Path, sae_id: str | None = None, device: str = "cpu"):
    """An SAE from a sae-lens folder on disk, or from sae-lens's pretrained registry."""
    sl = _sae_lens()
    p = Path(path_or_release)
    if p.exists():
        if not (p / "cfg.json").exists():
            raise FileNotFoundError(f"{p} is not a sae-lens SAE folder (no cfg.json)")
        return sl.SAE.load_from_disk(p, device=device)
    if sae_id is None:
        raise FileNotFoundError(
            f"{p} does not exist; for a pretrained SAE pass a release and sae_id"
        )
    try:
        return sl.SAE.from_pretrained(str(path_or_release), sae_id, device=device)
    except Exception as e:  # hub errors come in many types
        raise RuntimeError(
            f"could not load SAE {path_or_release}/{sae_id} from the sae-lens registry "
            f"(is the Hugging Face hub reachable?): {e}"
        ) from e


def report_of(path: str | Path) -> dict | None:
    f = Path(path) / META_FILE
    return json.loads(f.read_text()) if f.exists() else None


def default_hook(model) -> str:
    return f"blocks.{model.cfg.n_layers // 2}.hook_resid_pre"


def default_path(model, hook: str | None = None, config: SAETrainConfig | None = None) -> Path:
    hook = hook or default_hook(model)
    cfg = config or SAETrainConfig()
    blob = json.dumps([model_fingerprint(model), hook, asdict(cfg), asdict(CorpusConfig())])
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    name = model.cfg.model_name.replace("/", "_")
    return cache_dir() / "sae" / f"{name}-{hook}-{cfg.architecture}-{key}"


def load_default(
    model, hook: str | None = None, config: SAETrainConfig | None = None, progress=True
):
    """The default SAE for ``model`` at ``hook``, training and caching it first if needed."""
    hook = hook or default_hook(model)
    path = default_path(model, hook, config)
    if not path.exists():
        print(
            f"interp_steer: no cached SAE for {model.cfg.model_name} at {hook}; training one "
            f"with sae-lens (takes ~15-25 min on a 2-core CPU for SmolLM2), cached in {path}"
        )
        sae, report = train(model, hook, config=config, progress=progress)
        save(sae, path, report)
    sae = load(path, device=str(model.cfg.device))
    check_sae(model, sae)
    return sae


# ---------------------------------------------------------------- interventions


def sae_hook(sae) -> str:
    hook = sae.cfg.metadata.hook_name
    if not hook:
        raise ValueError("this SAE's metadata names no hook; set sae.cfg.metadata.hook_name")
    return hook


def check_sae(model, sae) -> None:
    hook = sae_hook(sae)
    check_hook(model, hook)
    fp = sae.cfg.metadata.interp_steer_fingerprint
    if fp is not None and fp != model_fingerprint(model):
        raise ValueError(f"SAE trained on {fp}, model is {model_fingerprint(model)}")
    if (
        hook.endswith(("resid_pre", "resid_mid", "resid_post"))
        and sae.cfg.d_in != model.cfg.d_model
    ):
        raise ValueError(f"SAE d_in {sae.cfg.d_in} != model d_model {model.cfg.d_model}")
    model_device = model.W_E.device
    if sae.W_dec.device != model_device:
        raise ValueError(f"SAE is on {sae.W_dec.device}, model on {model_device}: "
                         f"move one, e.g. sae.to({str(model_device)!r})")


def _feature_index(sae, features: int | Sequence[int]) -> Tensor:
    idx = torch.as_tensor([features] if isinstance(features, int) else list(features))
    if idx.numel() == 0:
        raise ValueError("no features given")
    if idx.min() < 0 or idx.max() >= sae.cfg.d_sae:
        raise ValueError(f"features: index out of range for d_sae={sae.cfg.d_sae}")
    return idx


@contextmanager
def edit_features(
    model,
    sae,
    edit: Callable[[Tensor], Tensor],
    positions: Positions = "all",
    keep_error: bool = True,
) -> Iterator[None]:
    """Run ``edit`` on the SAE latents at the SAE's hook (hooks removed on exit)."""
    check_sae(model, sae)

    def edit_acts(x: Tensor) -> Tensor:
        f = sae.encode(x.to(sae.W_dec.dtype))
        f_new = edit(f.clone())
        if keep_error:  # only the edited latents' decoder contributions change
            return x + (sae.decode(f_new) - sae.decode(f)).to(x.dtype)
        return sae.decode(f_new).to(x.dtype)

    with edit_at(model, sae_hook(sae), edit_acts, positions):
        yield


@contextmanager
def ablate_features(
    model,
    sae,
    features: int | Sequence[int],
    mean_acts: Float[Tensor, "d_sae"] | None = None,
    positions: Positions = "all",
    keep_error: bool = True,
):
    """Zero-ablate latents, or mean-ablate them when ``mean_acts`` (see `feature_means`) is given."""
    idx = _feature_index(sae, features)

    def edit(f: Tensor) -> Tensor:
        f[..., idx] = 0.0 if mean_acts is None else mean_acts.to(f)[idx]
        return f

    with edit_features(model, sae, edit, positions, keep_error):
        yield


@contextmanager
def clamp_features(
    model,
    sae,
    features: int | Sequence[int],
    value: float | Sequence[float],
    positions: Positions = "all",
    keep_error: bool = True,
):
    """Set latents to ``value`` (one value, or one per feature) at every edited position."""
    idx = _feature_index(sae, features)
    v = torch.as_tensor(value, dtype=torch.float32)
    if v.ndim == 1 and v.shape[0] != len(idx):
        raise ValueError(f"{v.shape[0]} values for {len(idx)} features")
    if not torch.isfinite(v).all():
        raise ValueError("clamp value contains NaN or inf")

    def edit(f: Tensor) -> Tensor:
        f[..., idx] = v.to(f)
        return f

    with edit_features(model, sae, edit, positions, keep_error):
        yield


@torch.no_grad()
def feature_means(sae, acts: Float[Tensor, "n d"]) -> Float[Tensor, "d_sae"]:
    """Mean latent activation over reference activations (for mean ablation)."""
    return sae.encode(acts.to(sae.W_dec.device, sae.W_dec.dtype)).mean(0)


def feature_vector(sae, features: int | Sequence[int], model=None) -> SteeringVector:
    """Unit decoder direction(s) of latent(s) as a SteeringVector at the SAE's hook."""
    idx = _feature_index(sae, features)
    d = sae.W_dec.detach()[idx].float().cpu()
    d = d / d.norm(dim=-1, keepdim=True)
    fp = (
        model_fingerprint(model) if model is not None else sae.cfg.metadata.interp_steer_fingerprint
    )
    return SteeringVector(
        d, sae_hook(sae), fp, "sae_feature", {"features": idx.tolist(), "d_sae": sae.cfg.d_sae}
    )


# ---------------------------------------------------------------- decomposition


@torch.no_grad()
def decompose(
    sae,
    vec: SteeringVector | Tensor,
    reference_acts: Float[Tensor, "n d"] | None = None,
    top: int = 10,
) -> dict[str, list[dict]]:
    """Top latents of a vector: by decoder cosine, and (with ``reference_acts``) by how much
    the encoder's activation rises when v is added to typical activations."""
    v = (vec.vector if isinstance(vec, SteeringVector) else vec).float().to(sae.W_dec.device)
    if v.ndim != 1 or v.shape[0] != sae.cfg.d_in:
        raise ValueError(f"vector of shape {tuple(v.shape)} does not fit SAE d_in={sae.cfg.d_in}")
    w = sae.W_dec.float()
    cos = (w @ v) / (w.norm(dim=-1) * v.norm()).clamp_min(1e-12)
    c_val, c_idx = cos.topk(top)
    out = {
        "by_decoder_cosine": [{"feature": int(i), "cosine": float(c)} for i, c in zip(c_idx, c_val)]
    }
    if reference_acts is not None:
        x = reference_acts.float().to(w.device)
        gain = (sae.encode(x + v) - sae.encode(x)).mean(0)
        g_val, g_idx = gain.topk(top)
        out["by_encoder_gain"] = [
            {"feature": int(i), "gain": float(g), "cosine": float(cos[i])}
            for i, g in zip(g_idx, g_val)
        ]
    return out


@torch.no_grad()
def contrast_features(
    sae, pos_acts: Float[Tensor, "n d"], neg_acts: Float[Tensor, "n d"], top: int = 10
) -> list[dict]:
    """Latents whose mean activation differs most between positive and negative texts."""
    fp = sae.encode(pos_acts.to(sae.W_dec)).mean(0)
    fn = sae.encode(neg_acts.to(sae.W_dec)).mean(0)
    val, idx = (fp - fn).topk(top)
    return [
        {"feature": int(i), "diff": float(d), "pos_mean": float(fp[i]), "neg_mean": float(fn[i])}
        for i, d in zip(idx, val)
    ]


@torch.no_grad()
def effect_survival(
    model,
    sae,
    vec: SteeringVector,
    prompts: Sequence[str],
    ks: Sequence[int],
    alpha: float = 1.0,
    reference_acts: Float[Tensor, "n d"] | None = None,
) -> list[dict]:
    """How much of a vector's effect on next-token logits survives ablating its top-k latents.

    Δ_0 = logits(+αv) − logits(·); Δ_k = logits(+αv, ablate k) − logits(ablate k), latents
    ranked by encoder gain on ``reference_acts`` (decoder cosine without them). survival(k) =
    ⟨Δ_k, Δ_0⟩ / ‖Δ_0‖²: 1 = the effect does not go through those latents, 0 = it all does.
    """

    if sae_hook(sae) != vec.hook:
        raise ValueError(f"vector at {vec.hook}, SAE at {sae_hook(sae)}")
    key = "by_encoder_gain" if reference_acts is not None else "by_decoder_cosine"
    ranked = [r["feature"] for r in decompose(sae, vec, reference_acts, top=max(ks))[key]]
    batch = tokenize(model, list(prompts))

    def logits() -> Tensor:
        return model(batch.tokens, **forward_kwargs(batch))[:, -1].float()

    base = logits()
    with steer(model, vec, alpha):
        d0 = logits() - base
    rows = []
    for k in ks:
        if k == 0:
            dk = d0
        else:
            with ablate_features(model, sae, ranked[:k]):
                b_k = logits()
            # steer's hook must run before the ablation's, so enter it first
            with steer(model, vec, alpha), ablate_features(model, sae, ranked[:k]):
                dk = logits() - b_k
        rows.append(
            {"k": k, "survival": float((dk * d0).sum() / d0.pow(2).sum()), "features": ranked[:k]}
        )
    return rows
