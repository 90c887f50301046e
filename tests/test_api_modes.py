"""Every public function an autograd mode can affect gives the same answer in each mode.

Each case runs with grad enabled, after ``torch.set_grad_enabled(False)``, inside
``torch.no_grad()`` and inside ``torch.inference_mode()`` on a tiny random model; results
must agree within 1e-6, tensors must carry no graph, and the mode must be restored after.
A case exists only where a mode can change what the call does: it runs a model or SAE
forward, trains, or creates parameters. Public functions that never reach a parameter or
autograd (string and NumPy helpers, tokenisation, arithmetic on detached tensors, file I/O of
vectors) are listed in `EXEMPT`, each with the reason. `test_every_public_function_is_covered`
keeps the two lists complete as the API grows, and `test_exemptions_name_real_functions`
keeps `EXEMPT` from going stale.
"""

import inspect
import re
from importlib import import_module

import numpy as np
import pandas as pd
import pytest
import torch

import interp_steer
from interp_steer import identifiability as idf
from interp_steer import interventions as iv
from interp_steer import sae as S
from interp_steer import units
from interp_steer.activations import (
    capture,
    forward_kwargs,
    get_activations,
    token_activations,
    tokenize,
)
from interp_steer.eval import classifiers, judges, metrics
from interp_steer.eval import sweep as sw
from interp_steer.generation import generate, generate_tokens, last_logits
from interp_steer.methods.one_shot import completion_logprob
from interp_steer.sae.corpus.chat import plain_texts
from interp_steer.sae.io import unship
from interp_steer.testing import AUTOGRAD_MODES as MODES
from interp_steer.testing import SENTIMENT_PAIRS, tiny_model

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
        self.sae, self.report = _tiny_sae(self.model)
        self.x = token_activations(self.model, PROMPTS, HOOK)
        self.tmp = tmp
        # built once (it embeds ~200 texts); its MiniLM forward runs under each mode
        self.formality = classifiers.EmbeddingClassifier("formality")


def _gen(c, **kw):
    return generate(c.model, PROMPTS, c.vec, [0.0, 1.0], max_new_tokens=4, **kw)


def _save_load_sae(c):
    path = S.save(c.sae, c.tmp / "sae", c.report)
    return S.load(path).W_dec.detach()  # an nn.Parameter: requires_grad by nature


def _ship_load_sae(c):
    path = S.save(c.sae, c.tmp / "sae_src", c.report)
    shipped = S.ship(path, c.tmp / "sae_shipped")
    return S.load(unship(shipped, c.tmp / "sae_unshipped")).W_dec.detach()


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
    "build_vector[one_shot, rank 2 over a dataset]": lambda c: (
        interp_steer.build_vector(
            c.model,
            [{"prompt": "Hi", "promote": "Hello"}, {"prompt": "Yo", "promote": "Hey"}],
            HOOK,
            method="one_shot",
            rank=2,
            epochs=2,
            progress=False,
        ).directions
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
    # activations and generation internals that are public
    "get_activations": lambda c: get_activations(c.model, PROMPTS, HOOK, progress=False)[HOOK],
    "token_activations": lambda c: token_activations(c.model, PROMPTS, HOOK),
    "capture": lambda c: [
        (b.tokens, a[HOOK], k) for b, a, k in capture(c.model, PROMPTS, HOOK, 1, 1)
    ],
    "edit_at": lambda c: _logits_under(c, lambda: iv.edit_at(c.model, HOOK, lambda x: 2 * x, [-1])),
    "last_logits": lambda c: last_logits(c.model, c.model.to_tokens(PROMPTS[0]), None, None),
    "generate_tokens": lambda c: generate_tokens(c.model, tokenize(c.model, PROMPTS), 3),
    # identifiability
    "activation_covariance": lambda c: (
        idf.activation_covariance(c.model, PROMPTS, HOOK, progress=False).cov
    ),
    "prompt_activations": lambda c: idf.prompt_activations(c.model, PROMPTS, HOOK, progress=False),
    "next_token_kl": lambda c: idf.next_token_kl(c.model, c.vec, c.other, PROMPTS, 1.0),
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
    "generate_rows": lambda c: idf.generate_rows(
        c.model,
        [c.vec],
        [(0, 0, 1.0, 0), (1, 0, 0.0, 1)],
        PROMPTS,
        max_new_tokens=3,
        progress=False,
    ),
    "logit_checks": lambda c: idf.logit_checks(c.model, c.vec, PROMPTS, 1.0, {"o": c.other}),
    # sae (parameters of a returned SAE are compared by value)
    "sae.train": lambda c: _tiny_sae(c.model)[0].W_dec.detach(),
    "sae.evaluate": lambda c: S.evaluate(c.sae, c.x),
    # loading creates the SAE's parameters under the caller's mode
    "sae.save/load/report_of": lambda c: (_save_load_sae(c), S.report_of(c.tmp / "sae")["hook"]),
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
    "sae.firing_rates/matched_random_latents": lambda c: (
        S.firing_rates(c.sae, c.x),
        S.matched_random_latents(S.firing_rates(c.sae, c.x), [0, 1], pool=4),
    ),
    "sae.error_share": lambda c: S.error_share(c.sae, c.vec, c.x),
    "sae.ce_loss_recovered": lambda c: S.ce_loss_recovered(
        c.model, c.sae, S.Corpus.from_texts(c.model, PROMPTS), HOOK, max_docs=2
    ),
    # shipping halves the weights; loading the shipped copy creates parameters under the mode
    "sae.ship": lambda c: _ship_load_sae(c),
    # metrics and sweep
    "perplexity": lambda c: metrics.perplexity(c.model, PROMPTS, [" yes", " no"]),
    "coherence": lambda c: metrics.coherence(c.model, [" yes yes", " no"]),
    "capability": lambda c: metrics.capability(
        c.model, c.vec, [0.0, 1.0], max_new_tokens=4, kinds=("qa",)
    ),
    "kl_under/kl_from_unsteered": lambda c: metrics.kl_from_unsteered(
        c.model, c.vec, [1.0], PROMPTS
    ),
    "kl_meter": lambda c: metrics.kl_meter(c.model, PROMPTS, completions=[" a", " b"])(
        [lambda: iv.steer(c.model, c.vec, 1.0)]
    ),
    "units.typical_norm/r_of/alpha_for": lambda c: (
        units.typical_norm(c.model, HOOK, PROMPTS),
        units.r_of(c.vec, 2.0, units.typical_norm(c.model, HOOK, PROMPTS)),
        units.alpha_for(c.vec, 0.3, 7.0),
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
    "calibrate": lambda c: sw.calibrate(c.model, c.vec, PROMPTS, target_kl=0.05, max_alpha=8.0),
    # judges: LocalJudge reads the digit tree off a model forward
    "judges.judge_sanity[LocalJudge]": lambda c: judges.judge_sanity(
        judges.LocalJudge(c.model, JUDGE_TEMPLATE)
    ),
    # classifiers: the MiniLM sentence-transformer forward behind EmbeddingClassifier
    "classifiers.validate[EmbeddingClassifier, MiniLM]": lambda c: classifiers.validate(
        c.formality, "formality", n_boot=100
    ),
}

# Public names with no case, and why: nothing in them reaches a parameter or autograd, so
# no mode can change what they do (a tensor they create under inference_mode is an inference
# tensor, and a vector built there still steers and trains: only its values are compared).
# Keys are "module.function"; a name in interp_steer.__all__ is listed as it is there.
_NO_TORCH = "pure Python / NumPy / SciPy: no torch"
_NO_AUTOGRAD = "builds or rearranges tensors from token ids or detached tensors: no parameter"
EXEMPT = {
    # interp_steer.__all__
    "load_model": "loads real model files; tests/test_models.py and the integration tests",
    "DEFAULT_MODEL": "a constant",
    "SteeringVector": "a frozen dataclass of detached tensors: arithmetic and safetensors I/O",
    "model_fingerprint": "hashes config fields: no tensors",
    "chat": "formats a string with the tokenizer's chat template: no tensors",
    # vectors, activations, generation, interventions
    "vectors.check_hook": "checks a hook name against model.hook_dict: no tensors",
    "activations.encode": "tokenizer ids: no tensors",
    "activations.pad_left": _NO_AUTOGRAD,
    "activations.tokenize": _NO_AUTOGRAD,
    "activations.forward_kwargs": _NO_AUTOGRAD,
    "activations.aggregate": "a masked mean of the tensor it is given: no parameter",
    "activations.check_texts": "argument validation: no tensors",
    "activations.check_batch_size": "argument validation: no tensors",
    "generation.format_prompts": "chat-template strings: no tensors",
    "generation.check_sampling": "argument validation: no tensors",
    "generation.row_seeds": "a list of ints: no tensors",
    "generation.decode": "tokenizer decode of token ids: no parameter",
    "interventions.positions_context": "per-row padding state for position_mask: no parameter",
    "interventions.position_mask": "a boolean mask from positions: no parameter",
    "interventions.orthonormal_rows": "QR of the directions it is given: no parameter",
    # identifiability
    "identifiability.covariance_of": "torch.cov of captured (detached) activations",
    "identifiability.null_space": "eigh of a given covariance: no parameter",
    "identifiability.bootstrap_null_dim": "null_space over resampled activations: no parameter",
    "identifiability.subspace_overlap": "SVD of two given bases: no parameter",
    "identifiability.perturb": "seeded draws around a detached vector: no parameter",
    "identifiability.stack_vectors": "concatenates detached directions: no parameter",
    "identifiability.condition_rows": "a coefficient matrix from (index, alpha) pairs",
    # sae
    "sae.load_default": "trains via sae.train (in the table) on the default corpus (minutes)",
    "sae.import_sae_lens": "imports a module: no tensors",
    "sae.set_metadata": "writes hook and model names into the SAE's config: no tensors",
    "sae.sae_hook": "reads the SAE's config: no tensors",
    "sae.check_sae": "compares config names and sizes: no tensors",
    "sae.default_hook": "a hook name from the model's config: no tensors",
    "sae.default_path": "a cache path: no tensors",
    "sae.shipped_path": "a package path: no tensors",
    # metrics, stats, sweep
    **{
        f"metrics.{n}": _NO_TORCH
        for n in [
            "contains_rate",
            "count_strings",
            "coherence_from",
            "repetition_factor",
            "distinct_n",
            "ngram_entropy",
            "embedding_diversity",
            "harmonic_mean",
            "capability_tasks",
            "extract_code",
            "run_python",
            "grade_qa",
            "grade_code",
        ]
    },
    **{
        f"stats.{n}": _NO_TORCH
        for n in [
            "wilson",
            "bootstrap",
            "cluster_bootstrap",
            "auc",
            "auroc",
            "fisher_exact",
            "tost_paired",
            "tost_welch",
            "tost_power_paired",
            "tost_power_welch",
            "cohens_d",
            "cohens_dz",
            "paired_t",
            "spearman",
            "logistic_threshold",
            "retained_two_level",
            "holm",
        ]
    },
    "sweep.save_sweep": "writes DataFrames and JSON: no tensors",
    "sweep.bisect_increasing": _NO_TORCH,
    # judges
    "judges.expected_score": _NO_TORCH,
    "judges.labelled_split": "reads the shipped labels and splits them (scikit-learn)",
    "judges.heldout_report": _NO_TORCH,
    "judges.judge_agreement": _NO_TORCH,
    # classifiers
    "classifiers.refusal": "a regex Keyword classifier: no tensors",
    "classifiers.as_texts": "validates a list of str: no tensors",
    "classifiers.minilm_path": "a directory path: no tensors",
    "classifiers.trait_eval_set": "reads shipped JSON: no tensors",
    "classifiers.for_trait": (
        "builds VADER, Keyword and the EmbeddingClassifier whose MiniLM forward the "
        "classifiers.validate case runs under every mode (building it four times costs ~50 s)"
    ),
    "classifiers.success_scorer": "VADER, or the EmbeddingClassifier of classifiers.validate",
    # export.llama_cpp: GGUF I/O of detached directions
    "llama_cpp.llama_cpp_layer": "parses a hook name: no tensors",
    "llama_cpp.export_llama_cpp": "writes alpha x detached directions as float32 NumPy",
    "llama_cpp.load_llama_cpp": "reads float32 arrays into detached SteeringVectors",
    # executor: no torch; run_grid calls the caller's work in the caller's mode
    "executor.config_digest": _NO_TORCH,
    "executor.config_mismatch": _NO_TORCH,
    "executor.run_grid": "runs the caller's work as given: the mode reaches only the work",
    "executor.materialise": "returns the model or calls the caller's loader",
    "executor.ray_module": "imports ray: no tensors",
    # models
    "models.gguf_path": "a file path: no tensors",
    "models.parity_with_hf": "needs an embedded model's real weights (test_integration.py)",
}

# A short judge prompt: the tiny model's context is 256 characters.
JUDGE_TEMPLATE = "Q: {question}\nA: {answer}\nScore:"
MODULES = [
    "vectors",
    "units",
    "methods",
    "interventions",
    "generation",
    "activations",
    "identifiability",
    "sae",
    "eval.metrics",
    "eval.stats",
    "eval.sweep",
    "eval.judges",
    "eval.classifiers",
    "export.llama_cpp",
    "runs.executor",
    "models",
]


def _logits_under(c, make_ctx):
    # the caller's own forward inside an intervention may build a graph (one-shot training
    # relies on that), so only its values are compared
    tokens = tokenize(c.model, PROMPTS)
    with make_ctx():
        return c.model(tokens.tokens, **forward_kwargs(tokens)).detach()


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
        if mode != "grad":
            _close(r, results["grad"], f"{name} under {mode}")


def _case_names():
    """Every name a case key mentions: "sae.save/load/report_of" names sae.save, load and
    report_of. A dotted name covers that module's function only; a bare one covers the name in
    any module."""
    return {t for key in CASES for t in re.split(r"[\s/\[\](),+]+", key) if t}


def _public_functions():
    """(module, name) of every public function defined in (or re-exported by) MODULES; the
    module by its last name ("metrics" for eval.metrics), as the case keys name it."""
    out = []
    for path in MODULES:
        m = import_module(f"interp_steer.{path}")
        mod = path.rsplit(".", 1)[-1]
        for n, f in vars(m).items():  # a package's re-exports count as its own
            if (
                not n.startswith("_")
                and inspect.isfunction(f)
                and f.__module__.startswith(m.__name__)
            ):
                out.append((mod, n))
    return out


def test_every_public_function_is_covered():
    named = _case_names()
    missing = [n for n in interp_steer.__all__ if n not in named and n not in EXEMPT]
    for mod, n in _public_functions():
        if not ({n, f"{mod}.{n}"} & named) and f"{mod}.{n}" not in EXEMPT and n not in EXEMPT:
            missing.append(f"{mod}.{n}")
    assert not missing, f"public functions with neither a case nor an exemption: {missing}"


def test_exemptions_name_real_functions():
    """An exemption names an existing public function (or __all__ name) that has no case."""
    public = {f"{mod}.{n}" for mod, n in _public_functions()} | set(interp_steer.__all__)
    named = _case_names()
    stale = [k for k in EXEMPT if k not in public]
    assert not stale, f"exempt names that are not public functions: {stale}"
    both = [k for k in EXEMPT if k in named or k.rsplit(".", 1)[-1] in named]
    assert not both, f"exempt names that also have a case: {both}"
    assert all(EXEMPT.values()), "every exemption gives its reason"
