import numpy as np
import pytest
import torch

from interp_steer import SteeringVector, model_fingerprint
from interp_steer.identifiability import (
    RULES,
    activation_covariance,
    behavioural_equivalence,
    next_token_kl,
    null_space,
    perturb,
)

HOOK = "blocks.1.hook_resid_pre"


def _vec(d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(torch.randn(d, generator=g) * 3, HOOK)


def _rank_deficient_cov(d=64, r=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, r, generator=g, dtype=torch.float64)
    return a @ a.T


def test_covariance_matches_direct_computation(llama):
    prompts = ["hello world", "a b c d", "the cat sat on the mat", "xyz"]
    c = activation_covariance(llama, prompts, HOOK, batch_size=2, progress=False, skip_first=0)
    from interp_steer.activations import forward_kwargs, tokenize

    b = tokenize(llama, prompts)
    _, cache = llama.run_with_cache(b.tokens, names_filter=HOOK, **forward_kwargs(b))
    x = cache[HOOK][b.mask].double()
    assert c.n_tokens == x.shape[0]
    assert torch.allclose(c.mean, x.mean(0), atol=1e-8)
    assert torch.allclose(c.cov, torch.cov(x.T), atol=1e-6)
    with pytest.raises(ValueError, match="no prompts"):
        activation_covariance(llama, [], HOOK)


@pytest.mark.parametrize("rule", RULES)
def test_null_space_rules_on_rank_deficient_covariance(rule):
    cov = _rank_deficient_cov()
    ns = null_space(cov, rule, n_samples=1000)
    assert ns.basis.shape == (64, ns.dim) and ns.signal.shape == (64, 64 - ns.dim)
    assert torch.allclose(ns.basis.T @ ns.basis, torch.eye(ns.dim, dtype=torch.float64), atol=1e-8)
    assert ns.dim >= 54 if rule in ("relative", "energy", "noise_floor") else ns.dim > 0
    if rule == "relative":
        assert ns.dim == 54  # exactly the 64 - 10 zero eigenvalues
        assert (ns.basis.T @ cov @ ns.basis).abs().max() < 1e-8


def test_perturbations_are_orthogonal_with_requested_norm():
    v = _vec()
    ns = null_space(_rank_deficient_cov(), "relative")
    for source in ["random", "null", "principal"]:
        for eps in [0.5, 1.0, 2.0]:
            for p in perturb(v, eps, source, n=3, seed=1, null_space=ns):
                delta = p.vector.double() - v.vector.double()
                assert abs(float(delta @ v.vector.double())) < 1e-4 * float(v.norm()) ** 2
                assert abs(float(delta.norm()) / float(v.norm()) - eps) < 1e-5
            rot = perturb(v, eps, source, seed=1, keep_norm=True, null_space=ns)[0]
            assert abs(float(rot.norm()) - float(v.norm())) < 1e-4
    a, b = perturb(v, 1.0, n=2, seed=5)
    assert not torch.equal(a.directions, b.directions)
    assert torch.equal(perturb(v, 1.0, seed=5)[0].directions, a.directions)


def test_delta_stays_in_the_subspace_when_v_overlaps_it():
    """span{e1, e2} ∩ (e1 + e3)⊥ = span{e2}: δ must be ±‖δ‖·e2, with nothing along e3."""
    d = 6
    basis = torch.eye(d, dtype=torch.float64)[:, :2]
    v = SteeringVector(torch.tensor([1.0, 0, 1.0, 0, 0, 0]), HOOK)
    for p in perturb(v, 0.7, basis, n=4, seed=3):
        delta = p.vector.double() - v.vector.double()
        outside = delta - basis @ (basis.T @ delta)
        assert float(outside.norm()) < 1e-6, delta
        assert abs(abs(float(delta[1])) - 0.7 * float(v.norm())) < 1e-5
    # a subspace spanned by v alone has no room for δ; an empty one is named as such
    with pytest.raises(ValueError, match="no direction orthogonal"):
        perturb(v, 1.0, v.vector.double()[:, None])
    with pytest.raises(ValueError, match="empty"):
        perturb(v, 1.0, torch.zeros(d, 0, dtype=torch.float64))


def test_null_space_delta_leaves_linear_readout_unchanged():
    cov = _rank_deficient_cov()
    ns = null_space(cov, "relative")
    # any read-out living in the data's span (the signal subspace) ignores a null-space delta
    w = ns.signal @ torch.randn(ns.signal.shape[1], dtype=torch.float64)
    v = SteeringVector(ns.signal[:, 0].float() * 5, HOOK)
    for p in perturb(v, 1.0, "null", n=5, null_space=ns):
        assert abs(float(w @ p.vector.double()) - float(w @ v.vector.double())) < 1e-4
    # while a principal-subspace delta changes it
    p = perturb(v, 1.0, "principal", null_space=ns)[0]
    assert abs(float(w @ p.vector.double()) - float(w @ v.vector.double())) > 1e-3


def test_kl_zero_for_same_vector_and_positive_otherwise(llama):
    v = SteeringVector(_vec().directions, HOOK, model_fingerprint(llama))
    prompts = ["hello", "the cat"]
    assert abs(next_token_kl(llama, v, v, prompts, 2.0)) < 1e-9
    assert next_token_kl(llama, v, -v, prompts, 2.0) > 1e-3


def test_behavioural_equivalence_verdicts(llama):
    """The same vector and a 1% orthogonal perturbation of it are judged equivalent; an
    unrelated vector of the same norm is judged NOT equivalent. Greedy decoding at a strength
    where the continuation still depends on the prompt, so both arms' scores vary."""
    v = SteeringVector(_vec().directions, HOOK, model_fingerprint(llama))
    other = SteeringVector(_vec(seed=1).directions, HOOK, model_fingerprint(llama))
    (nearby,) = perturb(v, 0.01, "random", seed=2)
    prompts = ["hi", "abc", "zz", "the cat", "Hello!", "x y z", "ok", "what?"]

    def code(texts):  # a deterministic "classifier": mean character code / 128
        return np.array([np.mean([ord(c) for c in t]) / 128 if t else 0.0 for t in texts])

    def verdict(w):
        return behavioural_equivalence(
            llama,
            v,
            w,
            prompts,
            0.3,
            [code],
            margin=0.1,
            n_samples=1,
            max_new_tokens=6,
            temperature=0.0,
        )

    same = verdict(v)
    assert same.kl < 1e-9 and same.classifier_deltas["function"] == 0.0
    assert same.equivalent and same.tost_p["function"] < 0.05
    assert str(same).startswith("equivalent within margin")

    near = verdict(nearby)
    assert 0 < near.kl < 1e-3  # a different vector, with (nearly) the same behaviour
    assert abs(near.classifier_deltas["function"]) < 0.1
    assert near.equivalent and near.tost_p["function"] < 0.05

    far = verdict(other)
    assert far.kl > 0.05
    assert abs(far.classifier_deltas["function"]) > 0.1  # beyond the margin
    assert not far.equivalent and far.tost_p["function"] > 0.5
    assert str(far).startswith("NOT equivalent")


def test_jacobian_gram_matches_finite_differences(tiny):
    """The whole JᵀJ against central differences of an uncached forward with an independent
    hook: the cached prefix (RMSNorm + rotary, LayerNorm + learned positions) changes
    nothing."""
    from interp_steer.activations import tokenize
    from interp_steer.identifiability import jacobian_gram, jacobian_null_space

    def last_pos_hook(delta):  # an independent hook, not the library's edit path
        def fn(x, hook):
            x = x.clone()
            x[:, -1] += delta
            return x

        return fn

    text = "hello there, friend"
    g = jacobian_gram(tiny, text, HOOK)
    b = tokenize(tiny, [text])
    assert b.tokens.shape[1] > 5  # a real prefix to cache

    def f(delta):
        with tiny.hooks(fwd_hooks=[(HOOK, last_pos_hook(delta))]):
            with torch.no_grad():
                return tiny(b.tokens)[0, -1].log_softmax(-1).double()

    d = tiny.cfg.d_model
    eye = torch.eye(d) * 1e-2
    jac = torch.stack([(f(eye[i]) - f(-eye[i])) / 2e-2 for i in range(d)], 1)  # [V, d]
    ref = jac.T @ jac
    assert float((g - ref).abs().max()) < 1e-3 * float(ref.abs().max())
    ns = jacobian_null_space(tiny, ["hello", "abc"], HOOK, tol=0.05**2, progress=False)
    # its spectrum is that of the mean JᵀJ over the prompts, and the rule counts the
    # eigenvalues at or below tol·λ_max
    mean_gram = (jacobian_gram(tiny, "hello", HOOK) + jacobian_gram(tiny, "abc", HOOK)) / 2
    lam = torch.linalg.eigvalsh(mean_gram.double()).flip(0)
    assert torch.allclose(ns.spectrum, lam, atol=1e-9 * float(lam[0]))
    assert ns.dim == int((lam <= 0.05**2 * lam[0]).sum())
    # a one-token prompt has no prefix to cache
    assert jacobian_gram(tiny, "h", HOOK).shape == (d, d)


def test_bootstrap_and_overlap():
    from interp_steer.identifiability import bootstrap_null_dim, subspace_overlap

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(8, 32, generator=g, dtype=torch.float64)  # data lives in 8 dims
    acts = [torch.randn(20, 8, generator=g, dtype=torch.float64) @ mix for _ in range(10)]
    r = bootstrap_null_dim(acts, "relative", n_boot=20, tol=1e-6)
    assert r["dim"] == 24 and r["ci_low"] <= 24 <= r["ci_high"]
    q, _ = torch.linalg.qr(torch.randn(32, 5, generator=g, dtype=torch.float64))
    assert abs(subspace_overlap(q, q)["overlap"] - 1) < 1e-9
    assert subspace_overlap(q[:, :2], q[:, 2:])["overlap"] < 1e-9


def test_study_table_on_tiny_model(llama):
    from interp_steer import steer
    from interp_steer.activations import forward_kwargs, tokenize
    from interp_steer.identifiability import logit_checks, orthogonal_perturbation_study

    v = SteeringVector(_vec().directions, HOOK, model_fingerprint(llama))
    cov = activation_covariance(
        llama, ["hello world", "the cat sat", "abc def"], HOOK, progress=False
    )
    ns = null_space(cov, "energy", energy=0.9)

    def length(texts):
        return np.array([len(t) / 10 for t in texts])

    df = orthogonal_perturbation_study(
        llama,
        v,
        ["hi", "abc"],
        (0.0, 1.0),
        (1.0,),
        ("null", "random"),
        [length],
        pairs=[("good", "bad"), ("yes", "no")],
        null_space=ns,
        n_perturb=2,
        n_samples=1,
        max_new_tokens=4,
    )
    assert len(df) == 1 + 1 + 2 * 2 * 2  # baseline, v, sources x eps x n
    zero = df[(df.eps == 0.0) & (df.source != "none")]
    # eps = 0 perturbations are v itself: same efficacy, zero KL
    assert np.allclose(zero.efficacy_logit, zero.efficacy_logit.iloc[0], atol=1e-4)
    assert (zero.kl_to_v.abs() < 1e-6).all()

    def kl_from_v(w):  # one unpadded prompt at a time: KL(P_v ‖ P_w) over positions, prompts
        out = []
        for text in ["hi", "abc"]:
            tokens = llama.to_tokens(text)
            with torch.no_grad():
                with steer(llama, v, 1.0):
                    a = llama(tokens).log_softmax(-1)[0].double()
                with steer(llama, w, 1.0):
                    b = llama(tokens).log_softmax(-1)[0].double()
            out.append(float((a.exp() * (a - b)).sum(-1).mean()))
        return np.mean(out)

    # the eps = 1 rows are null x 2, then random x 2, drawn with the study's seed
    moved = [p for src in ("null", "random") for p in perturb(v, 1.0, src, n=2, null_space=ns)]
    want = np.array([kl_from_v(p) for p in moved])
    assert want.min() > 0.01 and np.allclose(df[df.eps == 1.0].kl_to_v, want, rtol=1e-3)
    checks = logit_checks(llama, v, ["hi", "abc"], 1.0, {"same": v, "neg": -v})
    assert checks["same"]["l2"] < 1e-5 and checks["same"]["top1_agreement"] == 1.0

    def last_logits(w):  # each vector steered on its own, straight through TL
        b = tokenize(llama, ["hi", "abc"])
        with torch.no_grad(), steer(llama, w, 1.0):
            return llama(b.tokens, **forward_kwargs(b))[:, -1]

    a, b = last_logits(v), last_logits(-v)
    l2 = float((a - b).norm(dim=-1).mean())
    assert l2 > 1.0 and abs(checks["neg"]["l2"] - l2) < 1e-4 * l2
    assert checks["neg"]["top1_agreement"] == float((a.argmax(-1) == b.argmax(-1)).float().mean())


def test_covariance_skips_first_token(llama):
    prompts = ["hello world", "abc"]
    full = activation_covariance(llama, prompts, HOOK, progress=False, skip_first=0)
    skip = activation_covariance(llama, prompts, HOOK, progress=False)
    assert skip.n_tokens == full.n_tokens - len(prompts)


def test_paired_generations_share_noise_only_when_seeds_match():
    """Two identical conditions with the same seed offset give the same texts (paired);
    another offset gives an independent replicate; the layout is [condition][prompt][sample]."""
    from interp_steer.identifiability import paired_generations
    from interp_steer.testing import tiny_model

    model = tiny_model("llama")
    v = SteeringVector(torch.randn(model.cfg.d_model), "blocks.1.hook_resid_pre")
    prompts = ["hello there", "the cat sat", "a"]
    texts = paired_generations(
        model,
        [v],
        [(0, 1.0), (0, 1.0), (0, 1.0), (0, 0.0)],
        prompts,
        n_samples=4,
        seed_offsets=[0, 0, 99, 0],
        max_new_tokens=6,
        temperature=1.0,
        batch_size=5,  # rows of one condition straddle batches: pairing must not care
        progress=False,
    )
    assert len(texts) == 4 and all(len(c) == 3 and len(c[0]) == 4 for c in texts)
    assert texts[0] == texts[1]
    assert texts[2] != texts[0]
    # the unsteered condition equals a plain generate with the same per-row seeds
    from interp_steer.generation import generate

    seeds = [1000 * p + s for p in range(3) for s in range(4)]
    plain = generate(
        model,
        [p for p in prompts for _ in range(4)],
        max_new_tokens=6,
        temperature=1.0,
        seed=seeds,
        chat=False,
    )
    assert [t for p in texts[3] for t in p] == plain
    with pytest.raises(ValueError, match="seed offsets"):
        paired_generations(model, [v], [(0, 1.0)], prompts, seed_offsets=[0, 1])


def test_generate_rows_steers_each_row_with_its_own_vector():
    """A row with vector j, alpha a and seed s gives the text of steering by a·v_j alone with
    that seed; rows are independent of their batch-mates and bad rows are refused."""
    from interp_steer.generation import generate
    from interp_steer.identifiability import generate_rows
    from interp_steer.interventions import steer
    from interp_steer.testing import tiny_model

    model = tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    vs = [
        SteeringVector(3 * torch.randn(model.cfg.d_model, generator=g), "blocks.1.hook_resid_pre")
        for _ in range(3)
    ]
    prompts = ["hello there", "the cat sat"]
    rows = [(0, 2, 1.0, 5), (1, 0, 2.0, 6), (0, 1, 0.0, 7), (1, 2, 1.0, 5)]
    got = generate_rows(
        model, vs, rows, prompts, max_new_tokens=6, temperature=1.0, batch_size=3, progress=False
    )
    for (p, j, a, s), text in zip(rows, got):
        with steer(model, vs[j], a, positions="last_and_generated"):
            alone = generate(
                model, [prompts[p]], max_new_tokens=6, temperature=1.0, seed=[s], chat=False
            )
        assert text == alone[0]
    assert got[0] != got[3]  # same vector and seed, other prompt
    with pytest.raises(ValueError, match="outside the 2 given"):
        generate_rows(model, vs, [(2, 0, 1.0, 0)], prompts)
    with pytest.raises(ValueError, match="vector index"):
        generate_rows(model, vs, [(0, 3, 1.0, 0)], prompts)
