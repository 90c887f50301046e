import json

import pytest
import torch

from interp_steer import SteeringVector, generate, model_fingerprint
from interp_steer.activations import forward_kwargs, tokenize
from interp_steer.generation import format_prompts, generate_tokens
from interp_steer.interventions import steer
from interp_steer.testing import tiny_model

POSITIONS = ["all", "prompt", "generated", "last_and_generated", [0, -1], [2]]
PROMPTS = ["hello there", "a", "the cat sat"]


def _vec(model):
    g = torch.Generator().manual_seed(7)
    return SteeringVector(
        torch.randn(model.cfg.d_model, generator=g) * 4,
        "blocks.1.hook_resid_pre",
        model_fingerprint(model),
    )


@pytest.mark.parametrize("positions", POSITIONS, ids=str)
def test_cached_equals_uncached_with_steering(tiny, positions):
    v = _vec(tiny)
    kw = dict(max_new_tokens=8, stop_at_eos=False, positions=positions)
    a = generate(tiny, PROMPTS, v, [1.0, 2.0, -1.0], use_cache=True, **kw)
    b = generate(tiny, PROMPTS, v, [1.0, 2.0, -1.0], use_cache=False, **kw)
    assert a == b
    # left padding in a batch does not change any row
    for p, al, row in zip(PROMPTS, [1.0, 2.0, -1.0], a):
        assert generate(tiny, [p], v, al, **kw) == [row]


def _make_token_eos(model, prompts, n):
    """Turn one greedy continuation token into EOS: find a token t that row r first emits at
    step k >= 1 (unsteered, no stop) and no other row emits, then give EOS t's unembedding
    plus a hair of bias, so EOS wins exactly where t did. Returns (r, k, reference tokens)."""
    batch = tokenize(model, format_prompts(model, prompts, True))
    base = generate_tokens(model, batch, n, stop_at_eos=False)
    eos = model.tokenizer.eos_token_id
    assert not (base == eos).any()
    for k in range(1, n - 2):  # room after the stop for the others to go on
        for r in range(len(prompts)):
            t = int(base[r, k])
            others = torch.cat([base[:r], base[r + 1 :]])
            if t not in base[r, :k] and not (others == t).any():
                with torch.no_grad():
                    model.unembed.W_U[:, eos] = model.unembed.W_U[:, t]
                    model.unembed.b_U[eos] = model.unembed.b_U[t] + 1e-3
                return r, k, base
    raise AssertionError("no token unique to one row")


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no_cache"])
def test_a_row_that_stops_at_eos_leaves_the_others_alone(tiny, use_cache):
    """One row emits EOS while the others go on: every row equals that row generated alone,
    the batch runs on for the others, and the stopped row holds nothing but EOS after it."""
    n = 12
    r, k, base = _make_token_eos(tiny, PROMPTS, n)
    eos = tiny.tokenizer.eos_token_id
    batch = tokenize(tiny, format_prompts(tiny, PROMPTS, True))
    # the construction: without stopping, row r says EOS at step k, the other rows as before
    free = generate_tokens(tiny, batch, n, stop_at_eos=False, use_cache=use_cache)
    assert free[r, :k].tolist() == base[r, :k].tolist() and free[r, k] == eos
    assert (free[r, k + 1 :] != eos).any()  # left alone, it would say more after EOS
    assert torch.equal(free[torch.arange(len(PROMPTS)) != r], base[torch.arange(len(PROMPTS)) != r])

    out = generate_tokens(tiny, batch, n, stop_at_eos=True, use_cache=use_cache)
    assert out.shape == (len(PROMPTS), n)  # the others still run to max_new_tokens
    assert out[r, : k + 1].tolist() == free[r, : k + 1].tolist()
    assert (out[r, k + 1 :] == eos).all()  # nothing after EOS
    for i, p in enumerate(PROMPTS):
        alone = generate_tokens(
            tiny, tokenize(tiny, format_prompts(tiny, [p], True)), n, use_cache=use_cache
        )
        assert alone.shape == (1, k + 1 if i == r else n)  # a lone row stops at its EOS
        assert out[i, : alone.shape[1]].tolist() == alone[0].tolist(), i
    texts = generate(tiny, PROMPTS, max_new_tokens=n, use_cache=use_cache)
    assert texts[r] == tiny.tokenizer.decode(base[r, :k])
    for i, p in enumerate(PROMPTS):
        assert generate(tiny, [p], max_new_tokens=n, use_cache=use_cache) == [texts[i]]


def test_decode_cuts_each_row_at_its_first_eos(tiny):
    from interp_steer.generation import decode

    tok = tiny.tokenizer
    ab, cd = tok.encode("ab", add_special_tokens=False), tok.encode("cd", add_special_tokens=False)
    eos = tok.eos_token_id
    rows = torch.tensor([ab + [eos] + cd, cd + ab + ab[:1]])
    assert decode(tiny, rows) == ["ab", "cdaba"]


def test_steering_changes_output_and_zero_alpha_is_identity(tiny):
    v = _vec(tiny)
    base = generate(tiny, PROMPTS, max_new_tokens=8, stop_at_eos=False)
    assert generate(tiny, PROMPTS, v, 0.0, max_new_tokens=8, stop_at_eos=False) == base
    assert generate(tiny, PROMPTS, v, 8.0, max_new_tokens=8, stop_at_eos=False) != base


def test_positions_trace(llama):
    """Trace oracle: which (row, unpadded position) the steering hook edits, cache on and off."""
    v = _vec(llama)
    batch = tokenize(llama, PROMPTS)
    n_new = 4
    hook = "blocks.1.hook_resid_pre"
    for positions, expect in [
        ("prompt", lambda pos, plen: pos < plen),
        ("generated", lambda pos, plen: pos >= plen),
        ("all", lambda pos, plen: True),
        ("last_and_generated", lambda pos, plen: pos >= plen - 1),
        ([0, -1], lambda pos, plen: pos in (0, plen - 1)),
    ]:
        for use_cache in (True, False):
            before, after = [], []
            with steer(llama, v, 1.0, positions=positions):
                # recorders on both sides of the steering hook see x before and after the edit
                llama.hook_dict[hook].add_hook(
                    lambda x, hook, rec=before: rec.append(x.clone()), prepend=True
                )
                llama.hook_dict[hook].add_hook(lambda x, hook, rec=after: rec.append(x.clone()))
                try:
                    generate_tokens(llama, batch, n_new, stop_at_eos=False, use_cache=use_cache)
                finally:
                    llama.hook_dict[hook].remove_hooks()
            if use_cache:  # one column per step: stitch them into the full sequence
                edited = torch.cat([a - b for a, b in zip(after, before)], 1)
            else:  # the last forward saw every column
                edited = after[-1] - before[-1]
            changed = edited.norm(dim=-1) > 1e-4
            # the final sampled token is never fed back in
            total = batch.tokens.shape[1] + n_new - 1
            assert changed.shape == (len(PROMPTS), total)
            for b in range(len(PROMPTS)):
                plen, pad = int(batch.lengths[b]), int(batch.pad[b])
                want = [col >= pad and expect(col - pad, plen) for col in range(total)]
                assert changed[b].tolist() == want, (positions, use_cache, b)


def test_generate_bad_input(tiny):
    with pytest.raises(ValueError, match="no prompts"):
        generate(tiny, [])
    with pytest.raises(ValueError, match="one per prompt"):
        generate(tiny, ["a", "b"], _vec(tiny), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="without a vector"):
        generate(tiny, ["a"], alphas=1.0)


def test_sampling_is_seeded(tiny):
    kw = dict(max_new_tokens=10, temperature=1.0, top_p=0.9, stop_at_eos=False)
    assert generate(tiny, PROMPTS, seed=3, **kw) == generate(tiny, PROMPTS, seed=3, **kw)
    assert generate(tiny, PROMPTS, seed=3, **kw) != generate(tiny, PROMPTS, seed=4, **kw)


def _stock_twin(model):
    """The same weights in an unpatched HookedTransformer (TL 3.9 as shipped)."""
    import warnings

    from transformer_lens import HookedTransformer

    from interp_steer.testing import char_tokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = HookedTransformer(model.cfg, char_tokenizer(), default_padding_side="left")
    stock.load_state_dict(model.state_dict())
    return stock


def test_fast_forward_matches_stock_tl(tiny):
    """The copy-free patched forward computes what stock TL computes."""
    stock = _stock_twin(tiny)
    batch = tokenize(tiny, PROMPTS)
    with torch.no_grad():
        a = tiny(batch.tokens, **forward_kwargs(batch))
        b = stock(batch.tokens, **forward_kwargs(batch))
    assert torch.allclose(a[batch.mask], b[batch.mask], atol=1e-4)
    # hooks on the attention pattern still fire (the fast path steps aside for them)
    _, cache = tiny.run_with_cache(
        batch.tokens, names_filter=lambda n: "pattern" in n, **forward_kwargs(batch)
    )
    assert cache["blocks.0.attn.hook_pattern"].shape[-1] == batch.tokens.shape[1]
    # in-place weight edits are seen by the cached packed weights
    with torch.no_grad():
        tiny.blocks[0].attn.W_Q.mul_(2.0)
        stock.blocks[0].attn.W_Q.mul_(2.0)
        assert torch.allclose(
            tiny(batch.tokens, **forward_kwargs(batch))[batch.mask],
            stock(batch.tokens, **forward_kwargs(batch))[batch.mask],
            atol=1e-4,
        )


# Gemma-3-like (norms before and after, QK-norm, local + global attention, one K/V head) and
# Qwen-3-like (QK-norm in a plain pre-norm block): the packed QKV path must keep the QK-norm.
VARIANTS = {
    "gemma3": dict(
        use_normalization_before_and_after=True,
        use_qk_norm=True,
        n_key_value_heads=1,
        use_local_attn=True,
        attn_types=["local", "global", "local"],
        window_size=4,
        act_fn="gelu_pytorch_tanh",
    ),
    "qwen3": dict(use_qk_norm=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_forward_matches_stock_tl_on_variants(variant):
    fast = tiny_model("llama", **VARIANTS[variant])
    with torch.no_grad():  # norms away from 1 so a skipped norm shows
        for name, p in fast.named_parameters():
            if "norm" in name or "ln" in name:
                p.copy_(torch.rand_like(p) + 0.5)
    stock = _stock_twin(fast)
    texts = ["hello there, a longer prompt", "a"]
    batch = tokenize(fast, texts)
    with torch.no_grad():
        a = fast(batch.tokens, **forward_kwargs(batch))
        b = stock(batch.tokens, **forward_kwargs(batch))
    assert torch.allclose(a[batch.mask], b[batch.mask], atol=1e-4)
    v = SteeringVector(torch.randn(fast.cfg.d_model) * 4, "blocks.1.hook_resid_pre")
    kw = dict(max_new_tokens=8, stop_at_eos=False)
    assert generate(fast, texts, v, 1.0, use_cache=True, **kw) == generate(
        fast, texts, v, 1.0, use_cache=False, **kw
    )


def test_gpt2_and_llama_fixtures_differ():
    assert tiny_model("gpt2").cfg.normalization_type == "LN"
    assert tiny_model("llama").cfg.n_key_value_heads == 2


def test_packed_linear_matches_dense_and_copies(pin_gemm):
    import copy
    import pickle

    from interp_steer.models.gemm import ONEDNN_AVAILABLE, FrozenLinear, backend_choices

    pin_gemm("packed")  # the packed kernel really runs (where oneDNN exists), whatever is pinned
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(7, 5, generator=g), torch.randn(7, generator=g)
    lin = FrozenLinear(w, b, pack=True)
    assert (lin.packed is not None) == ONEDNN_AVAILABLE
    x = torch.randn(2, 3, 5, generator=g)
    assert torch.allclose(lin(x), torch.nn.functional.linear(x, w, b), atol=1e-5)
    if ONEDNN_AVAILABLE:
        assert backend_choices() == {"7x5 rows<=8": "oneDNN packed"}
    # gradients flow through the dense weights
    xg = x.clone().requires_grad_(True)
    lin(xg).sum().backward()
    assert torch.allclose(xg.grad, w.sum(0).expand_as(x), atol=1e-5)
    for twin in (copy.deepcopy(lin), pickle.loads(pickle.dumps(lin))):
        assert torch.allclose(twin(x), lin(x), atol=1e-5)


def test_gradients_after_inference_generation(llama):
    """Weights packed under inference_mode still serve a later forward that needs gradients."""
    from interp_steer import build_vector

    generate(llama, PROMPTS, max_new_tokens=2)
    v = build_vector(
        llama,
        {"prompt": "hi", "promote": "ok"},
        "blocks.1.hook_resid_pre",
        method="one_shot",
        steps=2,
    )
    assert torch.isfinite(v.directions).all()
    # the deep-copied model runs and agrees
    import copy

    twin = copy.deepcopy(llama)
    batch = tokenize(llama, PROMPTS)
    with torch.no_grad():
        assert torch.allclose(
            twin(batch.tokens, **forward_kwargs(batch)),
            llama(batch.tokens, **forward_kwargs(batch)),
            atol=1e-5,
        )


@pytest.mark.parametrize("scale", [0.5, 8.0], ids=["flat", "peaked"])
def test_nucleus_matches_full_sort(scale):
    """The partial-selection nucleus equals the textbook one (full sort, smallest prefix whose
    mass reaches top_p), on flat distributions (nucleus past the 1k/16k ladders) and peaked."""
    from interp_steer.generation import _nucleus

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(4, 40_000, generator=g) * scale, -1)
    idx, p = _nucleus(probs, 0.9)
    ref_p, ref_idx = probs.sort(-1, descending=True)
    ref_keep = ref_p.cumsum(-1) - ref_p < 0.9
    for r in range(4):
        keep = p[r] > 0
        assert set(idx[r][keep].tolist()) == set(ref_idx[r][ref_keep[r]].tolist())
        assert torch.allclose(p[r][keep].sum(), ref_p[r][ref_keep[r]].sum())


def test_draw_is_exact_and_skips_zero_weights():
    from interp_steer.generation import _draw

    w = torch.tensor([0.0, 1.0, 0.0, 3.0, 6.0, 0.0])
    gens = [torch.Generator().manual_seed(i) for i in range(1000)]
    draws = torch.cat([_draw(w.expand(1000, -1), gens) for _ in range(100)])
    freq = torch.bincount(draws, minlength=6).double() / len(draws)
    assert freq[[0, 2, 5]].sum() == 0
    # 100k draws: standard error <= 0.0016, so 0.01 is > 6 sigma
    assert torch.allclose(
        freq[[1, 3, 4]], torch.tensor([0.1, 0.3, 0.6], dtype=freq.dtype), atol=0.01
    )


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampling_follows_the_tempered_softmax(temperature):
    """Token frequencies match softmax(logits / T), not softmax(logits)."""
    from interp_steer.generation import _sample

    logits = torch.tensor([0.0, 1.0, 2.0])
    want = torch.softmax(logits.double() / temperature, -1)
    gens = [torch.Generator().manual_seed(i) for i in range(1000)]
    draws = torch.cat([_sample(logits.expand(1000, -1), temperature, 1.0, gens) for _ in range(40)])
    freq = torch.bincount(draws, minlength=3).double() / len(draws)
    # 40k draws: standard error <= 0.0025, so 0.015 is > 6 sigma; T = 1 would miss by >= 0.09
    assert torch.allclose(freq, want, atol=0.015)


def test_gemm_backend_is_chosen_per_shape_and_row_bucket(monkeypatch, tmp_path, pin_gemm):
    """The first call per (shape, row bucket) times both kernels; the faster one is kept, in
    this process and on disk for the next one; a damaged choices file is re-timed."""
    from interp_steer.models import gemm

    if not gemm.ONEDNN_AVAILABLE:
        pytest.skip("no oneDNN linear in this torch build")
    pin_gemm("timed")  # undo the session's pinning (conftest.py): this tests the timing
    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path))
    monkeypatch.setattr(gemm, "_CHOICES", {})
    lin = gemm.FrozenLinear(torch.randn(6, 4), pack=True)
    calls = []

    def fake_wins(dense, packed, x):  # packed "wins" only above one row
        calls.append(x.shape)
        return x.numel() // x.shape[-1] > 1

    monkeypatch.setattr(gemm, "_packed_wins", fake_wins)
    x1, x16 = torch.randn(1, 4), torch.randn(3, 5, 4)
    assert torch.allclose(lin(x1), torch.nn.functional.linear(x1, lin.w), atol=1e-6)
    assert torch.allclose(lin(x16), torch.nn.functional.linear(x16, lin.w), atol=1e-5)
    lin(torch.randn(1, 4))  # same bucket: no new timing
    assert len(calls) == 2
    assert gemm.backend_choices() == {"6x4 rows<=1": "F.linear", "6x4 rows<=16": "oneDNN packed"}
    # a new process (an empty in-process table) reads the decisions instead of timing
    monkeypatch.setattr(gemm, "_CHOICES", {})
    lin(x1), lin(x16)
    assert len(calls) == 2 and gemm.backend_choices()["6x4 rows<=16"] == "oneDNN packed"
    (tmp_path / gemm.CHOICES_FILE).write_text("{not json")
    monkeypatch.setattr(gemm, "_CHOICES", {})
    lin(x1)
    assert len(calls) == 3  # damaged: timed again, and the file is whole again
    assert json.loads((tmp_path / gemm.CHOICES_FILE).read_text())


def test_packed_wins_compares_alternating_medians():
    """The timing picks the truly faster kernel either way round, also when one call of the
    other is hit by a stall (a median, not a mean)."""
    import time

    from interp_steer.models import gemm

    def slow(x):
        time.sleep(0.004)

    calls = []

    def fast_fn(x):
        calls.append(x)
        time.sleep(0.05 if len(calls) == 3 else 0.0005)  # one stall

    x = torch.zeros(1, 4)
    assert gemm._packed_wins(slow, fast_fn, x) and not gemm._packed_wins(fast_fn, slow, x)


def test_draw_is_exact_across_blocks():
    """Weights spread over several 1024-token blocks (the two-level inverse CDF), with whole
    zero blocks, zero tokens at block edges and a vocabulary that is not a block multiple."""
    from interp_steer.generation import _draw

    w = torch.zeros(3000)
    w[[0, 1023, 1024, 2047, 2999]] = torch.tensor([1.0, 2.0, 3.0, 1.0, 3.0])
    gens = [torch.Generator().manual_seed(i) for i in range(2000)]
    draws = torch.cat([_draw(w.expand(2000, -1), gens) for _ in range(50)])
    freq = torch.bincount(draws, minlength=3000).double() / len(draws)
    assert set(draws.unique().tolist()) <= {0, 1023, 1024, 2047, 2999}
    want = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.3], dtype=freq.dtype)
    assert torch.allclose(freq[[0, 1023, 1024, 2047, 2999]], want, atol=0.01)  # >6 sigma


def test_a_rows_sample_depends_only_on_its_seed(tiny):
    """Per-row generators: the same prompt and seed give the same text whatever else is in
    the batch, so steered and unsteered conditions are paired."""
    kw = dict(max_new_tokens=8, stop_at_eos=False, temperature=1.0)
    alone = generate(tiny, ["the cat sat"], seed=[5], **kw)
    mixed = generate(tiny, ["hello there", "the cat sat", "a"], seed=[1, 5, 9], **kw)
    assert mixed[1] == alone[0]
    # an int seed means seed + row index, also across batch_size chunks
    whole = generate(tiny, PROMPTS * 2, seed=3, **kw)
    assert generate(tiny, PROMPTS * 2, seed=3, batch_size=2, **kw) == whole
    assert generate(tiny, PROMPTS * 2, seed=list(range(3, 9)), **kw) == whole
    with pytest.raises(ValueError, match="2 seeds for 3 rows"):
        generate(tiny, PROMPTS, seed=[1, 2], **kw)
    with pytest.raises(TypeError, match="seed must be"):
        generate(tiny, PROMPTS, seed=[1.5, 2, 3], **kw)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefix_equals_full_prefill(tiny, temperature):
    """Running each distinct prompt's prefix once and copying its cache gives the same tokens,
    with per-row steering at the last prompt token and after."""
    v = _vec(tiny)
    prompts = ["hello there", "the cat sat", "hello there", "a", "the cat sat", "a"]
    alphas = [0.0, 1.0, 2.0, -1.0, 3.0, 0.5]
    kw = dict(max_new_tokens=6, stop_at_eos=False, temperature=temperature, seed=11)
    kw.update(positions="last_and_generated")
    full = generate(tiny, prompts, v, alphas, **kw)
    assert generate(tiny, prompts, v, alphas, share_prefix=True, **kw) == full
    with pytest.raises(RuntimeError, match="touches the shared prompt prefix"):
        generate(tiny, prompts, v, alphas, share_prefix=True, **{**kw, "positions": "all"})
    with pytest.raises(ValueError, match="needs use_cache"):
        generate(tiny, prompts, share_prefix=True, use_cache=False, max_new_tokens=2)
