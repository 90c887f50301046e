"""Every public function gives the same answer under every autograd mode a caller may leave on.

Each case runs with grad enabled, after ``torch.set_grad_enabled(False)``, inside
``torch.no_grad()`` and inside ``torch.inference_mode()`` on a tiny random model; results
must agree within 1e-6, tensors must carry no graph, and the mode must be restored after.
`test_every_public_function_is_covered` keeps the table complete as the API grows.
"""

import inspect
from importlib import import_module

import numpy as np
import pandas as pd
import pytest
import torch

import interp_steer
from interp_steer import identifiability as idf
from interp_steer import interventions as iv
from interp_steer import metrics, stats
from interp_steer import sae as S
from interp_steer import sweep as sw
from interp_steer.activations import (
    aggregate,
    capture,
    check_batch_size,
    check_texts,
    encode,
    forward_kwargs,
    get_activations,
    pad_left,
    token_activations,
    tokenize,
)
from interp_steer.corpus import plain_texts
from interp_steer.generation import (
    check_sampling,
    decode,
    format_prompts,
    generate,
    generate_tokens,
    last_logits,
    row_seeds,
)
from interp_steer.methods.one_shot import completion_logprob
from interp_steer.testing import AUTOGRAD_MODES as MODES
from interp_steer.testing import SENTIMENT_PAIRS, tiny_model
from interp_steer.vectors import SteeringVector, check_hook, model_fingerprint

HOOK = "blocks.1.hook_resid_pre"
PAIRS = SENTIMENT_PAIRS[:3]
PROMPTS = ["Tell me a story.", "Hi there"]


def _score(texts):  # a deterministic stand-in classifier
    return np.array([len(t) % 7 / 7 for t in texts], float)


def _tiny_sae(model):
    kw = dict(d_sae=32, k=4, training_tokens=2048, batch_size=256, progress=False)
    return S.train(model, HOOK, plain_texts()[:40], **kw)


class Ctx:
    """What the cases share, built once with grad enabled."""

    def __init__(self, tmp):
        torch.manual_seed(0)
        self.model = tiny_model("llama")
        self.vec = interp_steer.build_vector(self.model, PAIRS, HOOK, progress=False)
        self.other = interp_steer.build_vector(self.model, PAIRS[::-1], HOOK, progress=False)
        self.acts = idf.prompt_activations(self.model, PROMPTS * 3, HOOK, progress=False)
        self.ns = idf.null_space(idf.covariance_of(self.acts), "relative", tol=1e-3)
        self.sae, self.report = _tiny_sae(self.model)
        self.x = token_activations(self.model, PROMPTS, HOOK)
        self.tmp = tmp


def _gen(c, **kw):
    return generate(c.model, PROMPTS, c.vec, [0.0, 1.0], max_new_tokens=4, **kw)


def _save_load_vec(c):
    path = c.tmp / "v.safetensors"
    c.vec.save(path)
    return SteeringVector.load(path).directions


def _save_load_sae(c):
    path = S.save(c.sae, c.tmp / "sae", c.report)
    return S.load(path).W_dec.detach()  # an nn.Parameter: requires_grad by nature


def _under(c, make, fn):
    with make():
        return fn()


CASES = {
    # interp_steer.__all__
    "build_vector": lambda c: (
        interp_steer.build_vector(c.model, PAIRS, HOOK, progress=False).directions
    ),
    "build_vector[pca]": lambda c: interp_steer.build_vector(
        c.model, PAIRS, HOOK, method="pca", progress=False
    ).directions.abs(),
    "build_vector[probe]": lambda c: (
        interp_steer.build_vector(c.model, PAIRS, HOOK, method="probe", progress=False).directions
    ),
    "build_vector[one_shot]": lambda c: (
        interp_steer.build_vector(
            c.model,
            {"prompt": "Hi", "promote": "Hello"},
            HOOK,
            method="one_shot",
            steps=3,
            progress=False,
        ).directions
    ),
    "build_vector[one_shot, prefix + stop_logprob] one_shot.completion_logprob": lambda c: (
        interp_steer.build_vector(
            c.model,
            {"prompt": "Hi", "prefix": "Say: ", "promote": "Hello"},
            HOOK,
            method="one_shot",
            steps=3,
            stop_logprob=0.0,  # unreachable: runs all 3 steps
            progress=False,
        ).directions,
        completion_logprob(c.model, "Hi", "Hello", prefix="Say: "),
    ),
    "build_vector[one_shot, rank 2 over a dataset] orthonormal_rows": lambda c: (
        interp_steer.build_vector(
            c.model,
            [{"prompt": "Hi", "promote": "Hello"}, {"prompt": "Yo", "promote": "Hey"}],
            HOOK,
            method="one_shot",
            rank=2,
            epochs=2,
            progress=False,
        ).directions,
        iv.orthonormal_rows(torch.eye(3)[:2] + 0.5),
    ),
    "build_vector[sae_feature]": lambda c: (
        interp_steer.build_vector(
            c.model, PAIRS, HOOK, method="sae_feature", sae=c.sae, progress=False
        ).directions
    ),
    "generate": lambda c: _gen(c),
    "generate[sampled]": lambda c: _gen(c, temperature=1.0, top_p=0.9),
    "generate[no cache]": lambda c: _gen(c, use_cache=False),
    "steer": lambda c: _logits_under(c, lambda: iv.steer(c.model, c.vec, 2.0)),
    "ablate": lambda c: _logits_under(c, lambda: iv.ablate(c.model, c.vec)),
    "clamp": lambda c: _logits_under(c, lambda: iv.clamp(c.model, c.vec, 1.5, positions=[-1])),
    "chat": lambda c: interp_steer.chat(c.model, "hello"),
    "model_fingerprint": lambda c: model_fingerprint(c.model),
    "SteeringVector": lambda c: (c.vec * 2 - c.other).normalized().directions,
    "SteeringVector.save/load": _save_load_vec,
    # activations and generation internals that are public
    "encode": lambda c: encode(c.model, "hello"),
    "tokenize": lambda c: tokenize(c.model, PROMPTS).tokens,
    "pad_left": lambda c: pad_left(c.model, [[1, 2], [3]]).mask,
    "forward_kwargs": lambda c: forward_kwargs(tokenize(c.model, PROMPTS))["attention_mask"],
    "aggregate": lambda c: aggregate(
        torch.ones(2, 3, 4), pad_left(c.model, [[1, 2, 3], [4]]), "mean"
    ),
    "get_activations": lambda c: get_activations(c.model, PROMPTS, HOOK, progress=False)[HOOK],
    "token_activations": lambda c: token_activations(c.model, PROMPTS, HOOK),
    "check_hook": lambda c: check_hook(c.model, HOOK),
    "check_texts": lambda c: check_texts("one text"),
    "check_batch_size": lambda c: check_batch_size(4),
    "capture": lambda c: [
        (b.tokens, a[HOOK], k) for b, a, k in capture(c.model, PROMPTS, HOOK, 1, 1)
    ],
    "edit_at": lambda c: _logits_under(c, lambda: iv.edit_at(c.model, HOOK, lambda x: 2 * x, [-1])),
    "last_logits": lambda c: last_logits(c.model, c.model.to_tokens(PROMPTS[0]), None, None),
    "check_sampling": lambda c: check_sampling(4, 0.7, 0.9, 0),
    "format_prompts": lambda c: format_prompts(c.model, PROMPTS, chat=True),
    "generate_tokens": lambda c: generate_tokens(c.model, tokenize(c.model, PROMPTS), 3),
    "decode": lambda c: decode(c.model, torch.tensor([[65, 66]])),
    "positions_context/position_mask": lambda c: _mask(c),
    # identifiability
    "activation_covariance": lambda c: (
        idf.activation_covariance(c.model, PROMPTS, HOOK, progress=False).cov
    ),
    "prompt_activations": lambda c: idf.prompt_activations(c.model, PROMPTS, HOOK, progress=False),
    "covariance_of": lambda c: idf.covariance_of(c.acts),
    "null_space": lambda c: idf.null_space(
        idf.covariance_of(c.acts), "energy", energy=0.9
    ).basis.abs(),
    "bootstrap_null_dim": lambda c: idf.bootstrap_null_dim(c.acts, n_boot=5, tol=1e-3),
    "perturb": lambda c: idf.perturb(c.vec, 1.0, "null", n=2, null_space=c.ns)[1].directions,
    "next_token_kl": lambda c: idf.next_token_kl(c.model, c.vec, c.other, PROMPTS, 1.0),
    "cohens_d": lambda c: idf.cohens_d(np.arange(5.0), np.arange(5.0) + 1),
    "tost": lambda c: idf.tost(np.arange(5.0), np.arange(5.0) + 0.01, 1.0),
    "behavioural_equivalence": lambda c: (
        idf.behavioural_equivalence(
            c.model,
            c.vec,
            c.other,
            PROMPTS,
            1.0,
            classifiers=[_score],
            n_samples=1,
            max_new_tokens=3,
        ).kl
    ),
    "jacobian_gram": lambda c: idf.jacobian_gram(c.model, PROMPTS[0], HOOK),
    "jacobian_null_space": lambda c: (
        idf.jacobian_null_space(c.model, PROMPTS[:1], HOOK, progress=False).dim
    ),
    "stack_vectors/condition_rows": lambda c: (
        idf.stack_vectors([c.vec, c.other]).directions,
        idf.condition_rows([(1, 2.0)], 2, 3),
    ),
    "subspace_overlap": lambda c: idf.subspace_overlap(c.ns.basis[:, :3], c.ns.basis[:, 1:4]),
    "trait_logit_scores": lambda c: idf.trait_logit_scores(
        c.model, [c.vec, c.other], [(0, 0.0), (1, 1.0)], PAIRS
    ),
    "kl_to_reference": lambda c: idf.kl_to_reference(
        c.model, [c.vec, c.other], [(0, 0.0), (1, 1.0)], [0, 0], PROMPTS
    ),
    "classifier_samples": lambda c: idf.classifier_samples(
        c.model, [c.vec], [(0, 1.0)], PROMPTS, [_score], n_samples=1, max_new_tokens=3
    ),
    "orthogonal_perturbation_study": lambda c: idf.orthogonal_perturbation_study(
        c.model,
        c.vec,
        PROMPTS,
        eps_grid=[1.0],
        alphas=[1.0],
        sources=["random"],
        classifiers=[_score],
        pairs=PAIRS,
        n_perturb=1,
        n_samples=1,
        max_new_tokens=3,
    ),
    "paired_generations": lambda c: idf.paired_generations(
        c.model, [c.vec], [(0, 0.0), (0, 1.0)], PROMPTS, 2, max_new_tokens=3, progress=False
    ),
    "row_seeds": lambda c: row_seeds(3, 4),
    "logit_checks": lambda c: idf.logit_checks(c.model, c.vec, PROMPTS, 1.0, {"o": c.other}),
    # sae (parameters of a returned SAE are compared by value)
    "sae.train": lambda c: _tiny_sae(c.model)[0].W_dec.detach(),
    "sae.evaluate": lambda c: S.evaluate(c.sae, c.x),
    "sae.save/load/report_of": lambda c: (_save_load_sae(c), S.report_of(c.tmp / "sae")["hook"]),
    "sae.default_hook/path": lambda c: (S.default_hook(c.model), str(S.default_path(c.model))),
    "sae.sae_hook/check_sae": lambda c: (S.sae_hook(c.sae), S.check_sae(c.model, c.sae)),
    "sae.set_metadata": lambda c: (S.set_metadata(c.sae, c.model, HOOK), S.sae_hook(c.sae)),
    "sae.import_sae_lens": lambda c: S.import_sae_lens().__name__,
    "sae.token_activations": lambda c: S.token_activations(
        c.model, S.Corpus.from_texts(c.model, PROMPTS), HOOK, progress=False
    )[0],
    "sae.edit_features": lambda c: _logits_under(
        c, lambda: S.edit_features(c.model, c.sae, lambda f: f * 0.5)
    ),
    "sae.ablate_features": lambda c: _logits_under(
        c, lambda: S.ablate_features(c.model, c.sae, [0, 1])
    ),
    "sae.clamp_features": lambda c: _logits_under(
        c, lambda: S.clamp_features(c.model, c.sae, 2, 3.0)
    ),
    "sae.feature_means": lambda c: S.feature_means(c.sae, c.x),
    "sae.feature_vector": lambda c: S.feature_vector(c.sae, [1, 2], c.model).directions,
    "sae.decompose": lambda c: S.decompose(c.sae, c.vec, c.x, top=3),
    "sae.contrast_features": lambda c: S.contrast_features(c.sae, c.x, c.x.flip(0), top=3),
    "sae.effect_survival": lambda c: S.effect_survival(c.model, c.sae, c.vec, PROMPTS, ks=[0, 2]),
    # metrics, stats, sweep
    "contains_rate": lambda c: metrics.contains_rate(["an owl", "a hawk"], "owl"),
    "count_strings": lambda c: metrics.count_strings(["power and power"], ["power"]),
    "perplexity": lambda c: metrics.perplexity(c.model, PROMPTS, [" yes", " no"]),
    "coherence(": lambda c: metrics.coherence(c.model, [" yes yes", " no"]),
    "repetition_factor": lambda c: metrics.repetition_factor(["a b a b a b", "hi"]),
    "coherence_from": lambda c: metrics.coherence_from(np.array([2.0, 8.0]), ["a b c", ""]),
    "distinct_n": lambda c: metrics.distinct_n("a b a b c"),
    "ngram_entropy": lambda c: metrics.ngram_entropy(["a b a b c", "c d"]),
    "embedding_diversity": lambda c: metrics.embedding_diversity(
        ["ab", "cd", "ef"], embed=lambda t: np.array([[len(x), 1.0] for x in t])
    ),
    "harmonic_mean": lambda c: metrics.harmonic_mean(0.5, 0.8, 1.0),
    "capability_tasks": lambda c: len(metrics.capability_tasks()["code"]),
    "extract_code": lambda c: metrics.extract_code("```python\ndef f(): pass\n```"),
    "run_python/grade_code": lambda c: metrics.grade_code(
        ["def add(a, b): return a + b"], metrics.capability_tasks()["code"][:1]
    ),
    "grade_qa": lambda c: metrics.grade_qa(["Paris"], metrics.capability_tasks()["qa"][:1]),
    "capability": lambda c: metrics.capability(
        c.model, c.vec, [0.0, 1.0], max_new_tokens=4, kinds=("qa",)
    ),
    "kl_under/kl_from_unsteered": lambda c: metrics.kl_from_unsteered(
        c.model, c.vec, [1.0], PROMPTS
    ),
    "stats.wilson": lambda c: stats.wilson(3, 10),
    "stats.bootstrap": lambda c: stats.bootstrap(lambda g: g.normal(), n_boot=100),
    "stats.cluster_bootstrap": lambda c: stats.cluster_bootstrap(np.arange(6.0), n_boot=100),
    "stats.auroc/auc": lambda c: stats.auroc(np.array([0, 1, 0, 1]), np.arange(4.0), n_boot=100),
    "stats.fisher_exact": lambda c: stats.fisher_exact(3, 4, 1, 4),
    "stats.tost_paired/tost_welch/paired_t": lambda c: (
        stats.tost_paired(np.arange(5.0), np.arange(5.0) + [0, 0.1, 0, 0.1, 0], 1.0),
        stats.tost_welch(np.arange(5.0), np.arange(5.0) + 0.1, 3.0),
        stats.paired_t(np.arange(5.0), np.arange(5.0) + [0, 0.1, 0, 0.2, 0]),
    ),
    "stats.tost_power_paired/tost_power_welch": lambda c: (
        stats.tost_power_paired(0.5, 20, 1.0),
        stats.tost_power_welch(0.5, 20, 20, 1.0, 1.0),
    ),
    "stats.cohens_d/cohens_dz": lambda c: (
        stats.cohens_d(np.arange(5.0), np.arange(5.0) + 1),
        stats.cohens_dz(np.arange(5.0), np.arange(5.0) + [0, 1, 0, 2, 1]),
    ),
    "stats.logistic_threshold": lambda c: stats.logistic_threshold(
        np.array([0.01, 0.05, 0.1, 0.5]), np.array([1, 2, 9, 10]), np.full(4, 10), n_boot=5
    )["x0"],
    "stats.spearman": lambda c: stats.spearman(np.arange(6.0), np.arange(6.0) ** 2, n_boot=100),
    "residual_norm/typical_norm": lambda c: (
        sw.residual_norm(c.model, HOOK, PROMPTS),
        sw.typical_norm(c.model, HOOK, PROMPTS),
    ),
    "sweep/summarise": lambda c: sw.sweep(
        c.model,
        {"v": c.vec},
        [1.0],
        PROMPTS,
        success=_score,
        samples_per_prompt=1,
        max_new_tokens=3,
        diversity=False,
        progress=False,
    )[0],
    "save_sweep": lambda c: _save_sweep(c),
    "bisect_increasing": lambda c: sw.bisect_increasing(lambda x: x * x, 4.0, 10.0),
    "calibrate": lambda c: sw.calibrate(c.model, c.vec, PROMPTS, target_kl=0.05, max_alpha=8.0),
}

# Public names not in the table, and why.
EXEMPT = {
    "load_model": "loads real model files; tests/test_models.py and the integration tests",
    "DEFAULT_MODEL": "a constant",
    "sae.load_default": "trains via sae.train (in the table) on the default corpus (minutes)",
    "sae.load": "covered by sae.save/load/report_of; a registry release needs the hub",
    "sae.report_of": "covered by sae.save/load/report_of",
    "sae.default_path": "covered by sae.default_hook/path",
    "sae.check_sae": "covered by sae.sae_hook/check_sae",
    "metrics.run_python": "covered by run_python/grade_code",
    "metrics.kl_under": "covered by kl_under/kl_from_unsteered",
    "sweep.summarise": "called by sweep/summarise",
    "sweep.residual_norm": "covered by residual_norm/typical_norm",
    "interventions.positions_context": "covered by positions_context/position_mask",
}


def _logits_under(c, make_ctx):
    # the caller's own forward inside an intervention may build a graph (one-shot training
    # relies on that), so only its values are compared
    tokens = tokenize(c.model, PROMPTS)
    with make_ctx():
        return c.model(tokens.tokens, **forward_kwargs(tokens)).detach()


def _mask(c):
    batch = tokenize(c.model, PROMPTS)
    with iv.positions_context(c.model, batch.pad, batch.lengths):
        return iv.position_mask(c.model, "prompt", 2, batch.tokens.shape[1], "cpu")


def _save_sweep(c):
    df = pd.DataFrame({"a": [1.0]})
    sw.save_sweep(c.tmp / "sweep", df, df, {"k": 1})
    return (c.tmp / "sweep.csv").read_text()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Ctx(tmp_path_factory.mktemp("api"))


def _close(a, b, where="result"):
    if isinstance(a, torch.Tensor):
        assert not a.requires_grad and a.grad_fn is None, f"{where} carries an autograd graph"
        assert a.shape == b.shape and torch.allclose(
            a.double(), b.double(), atol=1e-6, equal_nan=True
        ), where
    elif isinstance(a, np.ndarray | float | np.floating) and not isinstance(a, bool):
        assert np.allclose(a, b, atol=1e-6, equal_nan=True), where
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, atol=1e-6)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dataclass_fields__"):
        _close(vars(a), vars(b), where)
    else:
        assert a == b, where


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(CASES))
def test_same_result_under_every_autograd_mode(ctx, name):
    results = {}
    for mode, make in MODES.items():
        torch.manual_seed(0)
        results[mode] = _under(ctx, make, lambda: CASES[name](ctx))
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled(), mode
    for mode, r in results.items():
        _close(r, results["grad"], f"{name} under {mode}")


def test_every_public_function_is_covered():
    covered = " ".join(CASES) + " " + " ".join(EXEMPT)
    missing = [n for n in interp_steer.__all__ if n not in covered]
    for mod in [
        "vectors",
        "methods",
        "interventions",
        "generation",
        "activations",
        "identifiability",
        "sae",
        "metrics",
        "stats",
        "sweep",
    ]:
        m = import_module(f"interp_steer.{mod}")
        for n, f in vars(m).items():  # a package's re-exports count as its own
            if (
                n.startswith("_")
                or not inspect.isfunction(f)
                or not f.__module__.startswith(m.__name__)
            ):
                continue
            if n not in covered:
                missing.append(f"{mod}.{n}")
    assert not missing, f"public functions with no autograd-mode case: {missing}"
