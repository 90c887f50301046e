import pytest
import torch

from interp_steer import SteeringVector, build_vector, datasets, generate, steer
from interp_steer.activations import get_activations
from interp_steer.methods import METHODS
from interp_steer.testing import SENTIMENT_PAIRS

HOOK = "blocks.1.hook_resid_pre"

PAIRS = SENTIMENT_PAIRS


@pytest.mark.parametrize(
    "method,opts",
    [
        ("mean_diff", {}),
        ("pca", {}),
        ("pca", {"k": 2}),
        ("probe", {}),
        ("one_shot", {"steps": 5, "lr": 0.5}),
    ],
)
def test_pipeline_build_steer_generate_save_load(tiny, tmp_path, method, opts):
    data = {"prompt": "hi", "promote": "yes!", "suppress": "no"} if method == "one_shot" else PAIRS
    v = build_vector(tiny, data, HOOK, method=method, progress=False, **opts)
    assert v.method == method and v.hook == HOOK and v.k == opts.get("k", 1)
    # each direction scaled to norm 8 (a probe's weight vector is ~0.2 long; one-shot's ~17),
    # one coefficient per direction for a rank-k subspace
    alpha = 8.0 / v.norm()
    alpha = float(alpha) if v.k == 1 else alpha
    kw = dict(max_new_tokens=4, stop_at_eos=False)
    base = generate(tiny, ["hello"], **kw)
    with steer(tiny, v, alpha):
        steered = generate(tiny, ["hello"], **kw)
        steered_logits = tiny(tiny.to_tokens("hello"))
    assert steered != base, f"steering with {method} changed nothing: {base} == {steered}"
    w = SteeringVector.load(v.save(tmp_path / "v.safetensors"))
    assert torch.equal(w.directions, v.directions) and w.metadata == v.metadata
    with steer(tiny, w, alpha):
        assert generate(tiny, ["hello"], **kw) == steered
        assert torch.equal(tiny(tiny.to_tokens("hello")), steered_logits)


def test_every_registered_method_is_covered():
    assert set(METHODS) == {"mean_diff", "pca", "probe", "one_shot", "sae_feature"}


def test_mean_diff_is_difference_of_means(tiny):
    v = build_vector(tiny, PAIRS, HOOK, progress=False)
    acts = get_activations(
        tiny, [p for p, _ in PAIRS] + [n for _, n in PAIRS], HOOK, progress=False
    )[HOOK]
    assert torch.allclose(v.vector, acts[:5].mean(0) - acts[5:].mean(0), atol=1e-5)


def test_pca_sign_points_to_positive_and_probe_separates(tiny):
    diff = build_vector(tiny, PAIRS, HOOK, progress=False)
    pca = build_vector(tiny, PAIRS, HOOK, method="pca", progress=False)
    probe = build_vector(tiny, PAIRS, HOOK, method="probe", C=100.0, progress=False)
    assert pca.cosine(diff) > 0 and probe.cosine(diff) > 0
    assert probe.metadata["train_accuracy"] == 1.0


def test_one_shot_lowers_its_loss(llama):
    v = build_vector(
        llama,
        {"prompt": "hi", "promote": "ok"},
        HOOK,
        method="one_shot",
        steps=15,
        lr=0.5,
        progress=False,
    )
    h = v.metadata["loss_history"]
    assert h[-1] < h[0]


def test_completion_mean_aggregation_uses_only_completion(tiny):
    """With (prompt, pos, neg) triples and aggregation="mean", each text's activation is the
    mean over its completion's tokens only: checked against TransformerLens run on each text
    alone (no padding), averaged over the positions after the prompt's tokens."""
    # prompts and completions of different lengths, so the batch is padded
    triples = [("Q: ", "yes", "no"), ("Tell me: ", "good", "terrible"), ("A", "fine!", "bad")]
    v = build_vector(tiny, triples, HOOK, aggregation="mean", progress=False)

    def completion_mean(prompt, completion):
        start = tiny.to_tokens(prompt).shape[1]  # BOS + the prompt's tokens
        tokens = tiny.to_tokens(prompt + completion)
        assert tokens.shape[1] > start
        _, cache = tiny.run_with_cache(tokens, names_filter=[HOOK])
        return cache[HOOK][0, start:].double().mean(0)

    want = torch.stack([completion_mean(p, a) - completion_mean(p, b) for p, a, b in triples])
    assert torch.allclose(v.vector.double(), want.mean(0), atol=1e-5)


def test_bad_data_raises(tiny):
    with pytest.raises(ValueError, match="empty"):
        build_vector(tiny, [], HOOK)
    with pytest.raises(ValueError, match="unknown method"):
        build_vector(tiny, PAIRS, HOOK, method="magic")
    with pytest.raises(ValueError, match="unknown hook"):
        build_vector(tiny, PAIRS, "blocks.9.hook_resid_pre")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_vector(tiny, "nope", HOOK)
    with pytest.raises(ValueError, match="one_shot needs"):
        build_vector(tiny, {"prompt": "x"}, HOOK, method="one_shot")


def test_shipped_datasets():
    for name in ["sentiment", "refusal", "formality", "weddings"]:
        ds = datasets.load(name)
        assert len(ds) >= 48 and len(ds.test) >= 12
        assert not set(ds.train) & set(ds.test)
        assert all(a != b for a, b in ds.train)


def test_surface_cues_flag_a_planted_confound_and_not_a_balanced_set():
    rng = __import__("random").Random(0)
    words = ["the plan works", "we met today", "it rained", "prices rose", "she called"]
    planted = [(f"{w} well.", f"{w} badly") for w in words * 4]  # positives alone end in "."
    cues = datasets.surface_cues(planted)
    assert cues["ends_with_period"]["auroc"] == 1.0 and cues["ends_with_period"]["confound"]
    assert cues["ends_with_period"]["positive_mean"] == 1.0
    balanced = [(a, b) if rng.random() < 0.5 else (a[:-1], b + ".") for a, b in planted]
    assert not datasets.surface_cues(balanced)["ends_with_period"]["confound"]
    # the shipped formality set is register by punctuation and casing as much as by words
    assert datasets.surface_cues("formality")["ends_with_period"]["confound"]


def test_strip_surface_cues_removes_punctuation_and_first_letter_case():
    assert datasets.strip_surface_cues([("Well done!", "meh.")]) == [("Well done", "Meh")]
    assert datasets.strip_surface_cues([("p", "Nice work.", "bad")]) == [("p", "Nice work", "Bad")]
    with pytest.raises(ValueError, match="only surface cues"):
        datasets.strip_surface_cues([("Fine.", "!!!")])
    cues = datasets.surface_cues(datasets.strip_surface_cues("formality"))
    for cue in ("ends_with_period", "ends_with_punctuation", "starts_capitalised", "exclamations"):
        assert not cues[cue]["confound"], cue


def test_trait_prompts_are_apart_from_the_datasets_and_refuse_bad_counts():
    for trait in ["formality", "politeness", "sentiment", "agreeableness", "truthfulness"]:
        ds = datasets.load(trait)
        prompts = datasets.trait_prompts(trait)
        assert len(prompts) >= 100 and len(set(prompts)) == len(prompts)
        assert not set(prompts) & (set(ds.prompts) | {t for p in ds.train + ds.test for t in p})
    assert datasets.trait_prompts("sentiment", 240) == datasets.trait_prompts("sentiment")[:240]
    with pytest.raises(ValueError, match="asked for 1000"):
        datasets.trait_prompts("formality", 1000)
    with pytest.raises(ValueError, match="no evaluation prompts"):
        datasets.trait_prompts("weddings")


def test_sae_feature_without_an_sae_is_a_clear_error(tiny):
    # the full sae_feature pipeline (with a trained SAE) is in tests/test_sae.py
    with pytest.raises(ValueError, match="needs sae="):
        build_vector(tiny, PAIRS, HOOK, method="sae_feature")


def test_unknown_method_options_raise_naming_the_valid_ones(llama):
    pairs = [("good", "bad"), ("happy", "sad")]
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['centre'\].*'center'"):
        build_vector(llama, pairs, "blocks.1.hook_resid_pre", method="pca", centre=True)
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['k'\]"):
        build_vector(llama, pairs, "blocks.1.hook_resid_pre", method="mean_diff", k=2)
    with pytest.raises(ValueError, match="'steps'"):
        build_vector(
            llama,
            {"prompt": "a", "promote": "b"},
            "blocks.1.hook_resid_pre",
            method="one_shot",
            step=3,
        )
    with pytest.raises(ValueError, match="unknown method"):
        build_vector(llama, pairs, "blocks.1.hook_resid_pre", method="PCA")


def test_one_shot_prefix_stop_rule_and_satisficing(llama):
    """The paper's recipe: a code prefix the loss does not cover, the anti-refusal stop rule
    (stop once log P(promote) reaches a bound), and the satisficing loss, whose vector should
    bring the completion's NLL to its target rather than to 0."""
    from interp_steer.methods.one_shot import completion_logprob
    from interp_steer.models import chat

    hook = "blocks.1.hook_resid_pre"
    data = {"prompt": "Write code.", "prefix": "def f():\n", "promote": "    return 1"}
    base = completion_logprob(llama, data["prompt"], data["promote"], data["prefix"])
    # an independent computation of the same log-prob: one forward over prompt + completion
    # ids (the completion tokenised on its own, as the loss does), summed over the completion
    comp = llama.tokenizer(data["promote"], add_special_tokens=False).input_ids
    head = llama.to_tokens(chat(llama, data["prompt"]) + data["prefix"], prepend_bos=False)
    toks = torch.cat([head, torch.tensor([comp])], 1)
    n_comp = len(comp)
    with torch.no_grad():
        lp = llama(toks).log_softmax(-1)[0, :-1].gather(-1, toks[0, 1:, None])[:, 0]
    assert abs(base - float(lp[-n_comp:].sum())) < 1e-4

    stop = base + 1.0  # reachable in a few steps
    v = build_vector(
        llama,
        data,
        hook,
        method="one_shot",
        steps=200,
        lr=0.5,
        coldness=1.0,
        stop_logprob=stop,
        progress=False,
    )
    assert v.metadata["stopped"] == "stop_logprob" and v.metadata["prefix"] == data["prefix"]
    with steer(llama, v, 1.0):
        assert completion_logprob(llama, data["prompt"], data["promote"], data["prefix"]) >= stop

    target = 0.75 * -base  # an NLL three quarters of the unsteered one
    v = build_vector(
        llama,
        data,
        hook,
        method="one_shot",
        steps=300,
        lr=0.2,
        coldness=1.0,
        satisfice_target=target,
        progress=False,
    )
    with steer(llama, v, 1.0):
        nll = -completion_logprob(llama, data["prompt"], data["promote"], data["prefix"])
    assert abs(nll - target) < 0.05 * target, (nll, target)
    with pytest.raises(ValueError, match="stop_logprob needs a 'promote'"):
        build_vector(
            llama, {"prompt": "x", "suppress": "y"}, hook, method="one_shot", stop_logprob=0.0
        )


def test_one_shot_rank_k_subspace_is_trained_jointly_and_applied_by_clamp(llama):
    """rank=k trains k orthonormal directions and their coordinates together; the returned
    subspace, applied with clamp at its trained values, gives the promoted completion the
    log-prob it reached in training, and sets the activation's coordinates to those values."""
    from interp_steer import clamp
    from interp_steer.methods.one_shot import completion_logprob

    data = {"prompt": "Write code.", "promote": "return 1"}
    for k in (1, 3):
        v = build_vector(
            llama, data, HOOK, method="one_shot", rank=k, steps=40, lr=0.5, progress=False
        )
        assert v.k == k and v.metadata["rank"] == k
        u = v.directions
        assert torch.allclose(u @ u.T, torch.eye(k), atol=1e-5)  # orthonormal
        values = torch.tensor(v.metadata["clamp_values"])
        h = v.metadata["loss_history"]
        with clamp(llama, v, values):
            nll = -completion_logprob(llama, data["prompt"], data["promote"], coldness=0.7)
            _, cache = llama.run_with_cache(llama.to_tokens("hi there"), names_filter=HOOK)
        assert h[-1] < 0.8 * h[0] and nll < 0.8 * h[0]  # trained, and clamp applies it
        assert abs(nll - h[-1]) < 0.1 * h[0]
        assert torch.allclose(
            cache[HOOK][0] @ u.T, values.expand(cache[HOOK].shape[1], k), atol=1e-4
        )


def test_one_shot_epochs_over_a_dataset(llama):
    """A list of examples trains for `epochs` passes, one step per example in a seeded
    order; the mean loss per pass falls; steps, stop_logprob and a missing epochs raise."""
    data = [
        {"prompt": "Write code.", "promote": "return 1"},
        {"prompt": "Write a function.", "prefix": "def f():\n", "promote": "    return 1"},
        {"prompt": "Code please.", "promote": "return 1"},
    ]
    kw = dict(method="one_shot", lr=0.2, progress=False)
    v = build_vector(llama, data, HOOK, epochs=4, **kw)
    m = v.metadata
    assert m["steps_run"] == 12 and m["n_examples"] == 3 and m["stopped"] == "epochs"
    assert len(m["epoch_loss"]) == 4 and m["epoch_loss"][-1] < m["epoch_loss"][0]
    again = build_vector(llama, data, HOOK, epochs=4, **kw)
    assert torch.equal(again.directions, v.directions)  # seeded order: reproducible
    for bad, match in [
        (dict(), "epochs=N"),
        (dict(epochs=2, steps=5), "not steps"),
        (dict(epochs=2, stop_logprob=0.0), "one example"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_vector(llama, data, HOOK, **kw, **bad)
    with pytest.raises(ValueError, match="epochs are passes"):
        build_vector(llama, data[0], HOOK, epochs=2, **kw)
    with pytest.raises(ValueError, match="empty list"):
        build_vector(llama, [], HOOK, epochs=1, **kw)


def test_one_shot_names_an_example_longer_than_the_context(tiny):
    with pytest.raises(ValueError, match="longer than the model's context"):
        build_vector(tiny, {"prompt": "x" * 2000, "promote": "y"}, HOOK, method="one_shot", steps=1)
