import pytest
import torch

from interp_steer import SteeringVector, ablate, clamp, model_fingerprint, steer
from interp_steer.activations import forward_kwargs, tokenize
from interp_steer.interventions import edit_at

HOOK = "blocks.1.hook_resid_pre"


def _vec(model, k=1):
    g = torch.Generator().manual_seed(3)
    return SteeringVector(
        torch.randn(k, model.cfg.d_model, generator=g) * 3, HOOK, model_fingerprint(model)
    )


def _acts(model, texts, hook=HOOK):
    b = tokenize(model, texts)
    _, cache = model.run_with_cache(b.tokens, names_filter=hook, **forward_kwargs(b))
    return cache[hook], b


def test_hooks_removed_after_exception(tiny):
    v = _vec(tiny)
    base = tiny(tiny.to_tokens("hello"))
    for cm in (steer(tiny, v, 5.0), ablate(tiny, v), clamp(tiny, v, 2.0)):
        with pytest.raises(RuntimeError, match="boom"):
            with cm:
                assert tiny.hook_dict[HOOK].fwd_hooks, "hook is active inside"
                raise RuntimeError("boom")
        assert not any(h.fwd_hooks for h in tiny.hook_dict.values())
        assert torch.equal(tiny(tiny.to_tokens("hello")), base)


def test_steer_adds_exactly_alpha_v_and_composes(tiny):
    v = _vec(tiny)
    base, _ = _acts(tiny, ["hello world"])
    with steer(tiny, v, 2.0), steer(tiny, v, 0.5):
        got, _ = _acts(tiny, ["hello world"])
    assert torch.allclose(got - base, 2.5 * v.vector.expand_as(base), atol=1e-5)


def test_batched_alphas_match_separate_runs(tiny):
    v = _vec(tiny)
    texts = ["abc", "abc", "abc"]
    with steer(tiny, v, torch.tensor([0.0, 1.0, -2.0])):
        got, _ = _acts(tiny, texts, "blocks.2.hook_resid_pre")
    for i, a in enumerate([0.0, 1.0, -2.0]):
        with steer(tiny, v, a):
            one, _ = _acts(tiny, ["abc"], "blocks.2.hook_resid_pre")
        assert torch.allclose(got[i], one[0], atol=1e-5)


def test_ablate_and_clamp_set_the_projection(tiny):
    v = _vec(tiny, k=2)
    q, _ = torch.linalg.qr(v.directions.T)
    with ablate(tiny, v):
        got, _ = _acts(tiny, ["hello there"])
    assert (got @ q).abs().max() < 1e-4
    with clamp(tiny, v, torch.tensor([3.0, -1.0])):
        got, _ = _acts(tiny, ["hello there"])
    # coordinates in the orthonormalised basis (Gram-Schmidt in order, each u_j on v_j's
    # side) equal the clamp values at every position
    u = q * torch.sign(torch.diagonal(q.T @ v.directions.T))
    assert torch.allclose(got @ u, torch.tensor([3.0, -1.0]).expand(got.shape[1], 2), atol=1e-4)


def test_clamp_sets_the_coordinate_along_v_not_minus_v(tiny):
    """clamp(v, c) puts the activation at +c along v/‖v‖, for either sign of v (Householder
    QR alone flips about half of all vectors)."""
    v = _vec(tiny)
    for s in (1.0, -1.0):
        w = SteeringVector(s * v.directions, v.hook, v.model_fingerprint)
        with clamp(tiny, w, 2.5):
            got, _ = _acts(tiny, ["hello there"])
        unit = w.vector / w.vector.norm()
        assert torch.allclose(got @ unit, torch.full((got.shape[1],), 2.5), atol=1e-4)


def test_one_clamp_value_for_a_rank_1_vector_in_a_batch(tiny):
    """A one-element value (a rank-1 subspace's trained coordinate) clamps every row of a
    batch, as the scalar does; a length that fits neither batch nor k is refused."""
    v = _vec(tiny)
    texts = ["hello there", "hello there", "hello there"]
    with clamp(tiny, v, 2.5):
        want, _ = _acts(tiny, texts)
    with clamp(tiny, v, torch.tensor([2.5])):
        got, _ = _acts(tiny, texts)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="alpha has 2 values; expected 1, batch=3 or k=1"):
        with clamp(tiny, v, [2.5, 1.0]):
            _acts(tiny, texts)


def test_projection_ablation_of_mean_diff_removes_only_that_direction(tiny):
    v = _vec(tiny)
    base, _ = _acts(tiny, ["xyz"])
    with ablate(tiny, v):
        got, _ = _acts(tiny, ["xyz"])
    u = v.vector / v.vector.norm()
    diff = base - got
    assert torch.allclose(diff, (base @ u)[..., None] * u, atol=1e-4)


def test_explicit_positions_without_generation(tiny):
    v = _vec(tiny)
    base, _ = _acts(tiny, ["hello"])
    with steer(tiny, v, 1.0, positions=[0, -1]):
        got, _ = _acts(tiny, ["hello"])
    changed = (got - base).norm(dim=-1)[0] > 1e-3
    assert changed.tolist() == [True] + [False] * (base.shape[1] - 2) + [True]


def test_bad_positions_and_alpha_raise(tiny):
    v = _vec(tiny)
    with pytest.raises(ValueError, match="positions"):
        with steer(tiny, v, 1.0, positions="middle"):
            pass
    with pytest.raises(ValueError, match="alpha"):
        with steer(tiny, v, torch.tensor([1.0, 2.0, 3.0])):
            tiny(tiny.to_tokens(["ab", "cd"]))
    with pytest.raises(ValueError, match="NaN"):
        with steer(tiny, v, float("nan")):
            tiny(tiny.to_tokens("ab"))


def test_edit_at_is_the_one_edit_path(llama):
    """edit_at edits only the chosen positions, and its hook is gone after an exception."""
    tokens = llama.to_tokens("hello there")
    hook = "blocks.1.hook_resid_pre"
    seen = {}

    def record(x):
        seen["x"] = x.clone()
        return x * 0

    with pytest.raises(RuntimeError, match="boom"):
        with edit_at(llama, hook, record, positions=[-1]):
            llama(tokens)
            raise RuntimeError("boom")
    assert not any(h.fwd_hooks for h in llama.hook_dict.values())
    _, cache = llama.run_with_cache(tokens, names_filter=[hook])
    with edit_at(llama, hook, lambda x: x * 0, positions=[-1]):
        _, edited = llama.run_with_cache(tokens, names_filter=[hook])
    assert torch.equal(edited[hook][0, :-1], cache[hook][0, :-1])
    assert torch.all(edited[hook][0, -1] == 0)
