import pytest
import torch

from interp_steer import SteeringVector, build_vector, generate, steer
from interp_steer import sae as S
from interp_steer.sae.corpus.chat import plain_texts
from interp_steer.testing import SENTIMENT_PAIRS, tiny_model

HOOK = "blocks.1.hook_resid_pre"
PAIRS = SENTIMENT_PAIRS


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def trained(model):
    texts = plain_texts()[:300]
    return S.train(
        model,
        HOOK,
        texts,
        d_sae=256,
        k=8,
        training_tokens=60_000,
        batch_size=512,
        lr=3e-3,
        progress=False,
    )


def _cache(model, text, hook=HOOK):
    _, cache = model.run_with_cache(model.to_tokens(text), names_filter=[hook])
    return cache[hook][0]


def test_train_reports_heldout_quality(trained):
    sae, report = trained
    held = report["heldout"]
    assert held["l0"] <= 8 + 1e-6  # TopK: at most k latents per token
    assert held["explained_variance"] > 0.6, held
    assert 0 <= held["dead_fraction"] < 1 and held["n_tokens"] > 0
    assert report["config"]["architecture"] == "topk" and report["d_sae"] == 256
    assert sae.cfg.metadata.hook_name == HOOK


def test_standard_architecture_trains(model):
    sae, report = S.train(
        model,
        HOOK,
        plain_texts()[:100],
        architecture="standard",
        d_sae=128,
        training_tokens=40_000,
        batch_size=512,
        lr=3e-3,
        l1_coefficient=1.0,
        progress=False,
    )
    assert sae.cfg.architecture() == "standard"
    assert report["heldout"]["explained_variance"] > 0


def test_save_load_roundtrip(trained, tmp_path):
    sae, report = trained
    path = S.save(sae, tmp_path / "sae", report)
    back = S.load(path)
    for name, p in sae.state_dict().items():
        assert torch.equal(p, back.state_dict()[name]), name
    assert back.cfg.metadata.hook_name == HOOK and S.report_of(path) == report
    assert back.cfg.metadata.interp_steer_fingerprint == sae.cfg.metadata.interp_steer_fingerprint
    x = torch.randn(5, sae.cfg.d_in)
    assert torch.equal(sae.encode(x), back.encode(x))


def test_ablation_keeping_error_moves_only_along_decoder(model, trained):
    sae, _ = trained
    text = "the quick brown fox"
    x = _cache(model, text)
    f = sae.encode(x)
    j = int((f > 0).sum(0).argmax())  # a latent that fires somewhere here
    with S.ablate_features(model, sae, j):
        y = _cache(model, text)
    d = sae.W_dec[j] / sae.W_dec[j].norm()
    assert torch.equal(y[0], x[0])  # the sink, where the SAE was not trained, is left alone
    diff = (y - x)[1:]
    along = diff @ d
    assert diff.abs().max() > 1e-3
    assert torch.allclose(diff, along[:, None] * d[None], atol=1e-4)
    assert torch.allclose(along, -f[1:, j] * sae.W_dec[j].norm(), atol=1e-4)


def test_feature_edits_respect_positions_and_error_flag(model, trained):
    sae, _ = trained
    text = "hello there"
    x = _cache(model, text)
    with S.clamp_features(model, sae, [0, 1], 5.0, positions=[2]):
        y = _cache(model, text)
    changed = (y - x).abs().amax(-1) > 1e-6
    assert changed.tolist() == [i == 2 for i in range(len(x))]
    with S.ablate_features(model, sae, 0, keep_error=False):
        z = _cache(model, text)
    f = sae.encode(x)
    f[:, 0] = 0
    assert torch.allclose(z[1:], sae.decode(f)[1:], atol=1e-5)
    assert torch.equal(z[0], x[0])


def test_feature_edits_skip_position_0_unless_asked(model, trained):
    """SAEs are trained without the attention sink: by default no edit touches position 0;
    positions="all" does."""
    sae, _ = trained
    text = "hello there friend"
    x = _cache(model, text)
    with S.clamp_features(model, sae, [0, 1], 5.0):
        y = _cache(model, text)
    changed = (y - x).abs().amax(-1) > 1e-6
    assert changed.tolist() == [i > 0 for i in range(len(x))]
    with S.clamp_features(model, sae, [0, 1], 5.0, positions="all"):
        y = _cache(model, text)
    assert ((y - x).abs().amax(-1) > 1e-6).all()


def test_hooks_removed_after_exception(model, trained):
    sae, _ = trained
    with pytest.raises(RuntimeError), S.ablate_features(model, sae, 0):
        raise RuntimeError("boom")
    assert all(len(h.fwd_hooks) == 0 for h in model.hook_dict.values())


def test_mean_ablation_uses_reference_means(model, trained):
    sae, _ = trained
    ref = _cache(model, "some reference text")
    means = S.feature_means(sae, ref)
    x = _cache(model, "abc")
    j = 3
    with S.ablate_features(model, sae, j, mean_acts=means):
        y = _cache(model, "abc")
    expected = (means[j] - sae.encode(x)[:, j])[:, None] * sae.W_dec[j][None]
    expected[0] = 0  # position 0 is not edited
    assert torch.allclose(y - x, expected, atol=1e-4)


def test_scaled_ablation_moves_the_latent_part_way(model, trained):
    """scale is the fraction of the way to the ablation target: 0 is no edit, 0.5 half the
    full ablation's change (the decoder is linear), and the full ablation is scale 1."""
    sae, _ = trained
    x = _cache(model, "some text here")
    j = int((sae.encode(x) > 0).sum(0).argmax())
    out = {}
    for scale in (0.0, 0.5, 1.0):
        with S.ablate_features(model, sae, j, scale=scale):
            out[scale] = _cache(model, "some text here") - x
    assert out[0.0].abs().max() == 0
    assert out[1.0].abs().max() > 1e-3
    assert torch.allclose(out[0.5], 0.5 * out[1.0], atol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        S.ablate_features(model, sae, j, scale=float("nan")).__enter__()


def test_decompose_finds_a_planted_feature(model, trained):
    sae, _ = trained
    v = SteeringVector(3 * sae.W_dec[7].detach()[None], HOOK)
    dec = S.decompose(sae, v, reference_acts=_cache(model, "reference text here"), top=3)
    assert dec["by_decoder_cosine"][0]["feature"] == 7
    assert dec["by_decoder_cosine"][0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert len(dec["by_encoder_gain"]) == 3


def test_effect_survival(model, trained):
    sae, _ = trained
    v = build_vector(model, PAIRS, HOOK, progress=False)
    rows = S.effect_survival(model, sae, v, ["hello", "good day"], ks=[0, 1, 8], alpha=1.0)
    assert rows[0]["survival"] == pytest.approx(1.0)
    assert [len(r["features"]) for r in rows] == [0, 1, 8]
    assert all(torch.isfinite(torch.tensor(r["survival"])) for r in rows)


def test_sae_feature_pipeline(model, trained, tmp_path):
    sae, _ = trained
    v = build_vector(model, PAIRS, HOOK, method="sae_feature", sae=sae, progress=False)
    j = v.metadata["features"][0]
    assert v.metadata["contrast"][0]["feature"] == j
    assert torch.allclose(v.vector, sae.W_dec[j] / sae.W_dec[j].norm())
    kw = dict(max_new_tokens=4, stop_at_eos=False)
    with steer(model, v, 10.0):
        steered = generate(model, ["hello"], **kw)
    w = SteeringVector.load(v.save(tmp_path / "v.safetensors"))
    assert torch.equal(w.directions, v.directions)
    with steer(model, w, 10.0):
        assert generate(model, ["hello"], **kw) == steered
    v2 = build_vector(model, PAIRS, HOOK, method="sae_feature", sae=sae, feature=[1, 2])
    assert v2.k == 2


def test_bad_input(model, trained, tmp_path):
    sae, _ = trained
    with pytest.raises(ValueError, match="out of range"):
        S.ablate_features(model, sae, sae.cfg.d_sae).__enter__()
    with pytest.raises(FileNotFoundError):
        S.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="needs sae"):
        build_vector(model, PAIRS, HOOK, method="sae_feature", progress=False)
    other = tiny_model("gpt2")
    with pytest.raises(ValueError, match="trained on"):
        S.check_sae(other, sae)
    with pytest.raises(ValueError, match="architecture"):
        S.SAETrainConfig(architecture="gated-ish")
    import copy

    with pytest.raises(ValueError, match="move one"):  # an SAE on another device
        S.check_sae(model, copy.deepcopy(sae).to("meta"))
    with pytest.raises(ValueError, match="unknown hook"):
        S.train(model, "blocks.9.hook_resid_pre", ["text"], progress=False)


@pytest.mark.parametrize("damage", ["truncate", "no_config"])
def test_corrupt_default_sae_cache_is_rebuilt(model, trained, tmp_path, monkeypatch, damage):
    """load_default notices a damaged cached SAE, warns, and rebuilds it (the retraining
    itself is stubbed with the module's trained SAE: the real one takes minutes)."""
    import interp_steer.sae.io as sae_io

    sae, report = trained
    path = tmp_path / "default_sae"
    monkeypatch.setattr(sae_io, "default_path", lambda *a, **k: path)
    monkeypatch.delenv("INTERP_STEER_NO_SAE_TRAINING")  # the suite forbids training
    S.save(sae, path, report)
    weights = next(path.glob("*.safetensors"))
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        (path / "cfg.json").unlink()
    retrained = []
    monkeypatch.setattr(sae_io, "train", lambda *a, **k: retrained.append(1) or trained)
    with pytest.warns(UserWarning, match="unreadable.*retraining"):
        again = S.load_default(model, HOOK)
    assert retrained == [1] and torch.equal(again.W_dec, sae.W_dec)
    assert S.load_default(model, HOOK) is not None and retrained == [1]  # now a clean hit


def test_shipped_default_sae_loads_without_training(model, trained, tmp_path, monkeypatch):
    """A shipped float16 SAE is checked against its sha256 sums, written to the cache in
    float32 and loaded without training; a tampered one raises naming the file."""
    import interp_steer.sae.io as sae_io

    sae, report = trained
    saved = S.save(sae, tmp_path / "trained", report)
    cache = tmp_path / "cache" / "default_sae"
    monkeypatch.setattr(sae_io, "default_path", lambda *a, **k: cache)
    monkeypatch.setattr(sae_io, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setattr(sae_io, "train", lambda *a, **k: pytest.fail("trained instead"))
    shipped = S.ship(saved, S.shipped_path(model, HOOK))
    assert shipped.parent == tmp_path / "shipped"
    half = (shipped / sae_io.WEIGHTS_FILE).stat().st_size
    assert half < 0.6 * (saved / sae_io.WEIGHTS_FILE).stat().st_size
    loaded = S.load_default(model, HOOK)
    assert loaded.W_dec.dtype == torch.float32
    assert torch.equal(loaded.W_dec, sae.W_dec.half().float())
    assert S.report_of(cache) == {**S.report_of(saved), "weights": S.report_of(cache)["weights"]}
    assert S.report_of(cache)["weights"].startswith("float16 as shipped")
    # a damaged cache of a shipped SAE is written again from the shipped copy, not retrained
    weights = cache / sae_io.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable.*unshipping"):
        healed = S.load_default(model, HOOK)
    assert torch.equal(healed.W_dec, sae.W_dec.half().float())
    again = S.ship(saved, shipped)  # shipping over a shipped copy replaces it whole
    assert again == shipped and sorted(p.name for p in shipped.parent.iterdir()) == [shipped.name]

    import shutil

    shutil.rmtree(cache)
    (shipped / "cfg.json").write_text((shipped / "cfg.json").read_text() + " ")
    with pytest.raises(ValueError, match="cfg.json does not match its sha256"):
        S.load_default(model, HOOK)
    (shipped / "SHA256SUMS").write_text("abc  cfg.json\n")
    with pytest.raises(ValueError, match="malformed SHA256SUMS"):
        S.load_default(model, HOOK)
    (shipped / "SHA256SUMS").unlink()
    with pytest.raises(ValueError, match="has no SHA256SUMS"):
        S.load_default(model, HOOK)


def test_default_sae_is_keyed_by_its_corpus(model):
    """Two generic-corpus configs give two cached SAEs; a corpus with a corpus config is
    ambiguous and refused before any activation is collected."""
    from interp_steer.sae.corpus import GenericCorpusConfig

    small, big = (GenericCorpusConfig(genres={"books": n}) for n in (1000, 2000))
    assert S.default_path(model, HOOK) == S.default_path(model, HOOK, corpus_config=None)
    assert S.default_path(model, HOOK, corpus_config=small) != S.default_path(
        model, HOOK, corpus_config=big
    )
    with pytest.raises(ValueError, match="corpus or corpus_config"):
        S.train(model, HOOK, ["some text"], corpus_config=small, progress=False)


def test_corrupt_corpus_cache_is_rebuilt(model, tmp_path, monkeypatch):
    from interp_steer.sae.corpus.chat import CorpusConfig, build_corpus

    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path))
    cfg = CorpusConfig(n_prompts=2, max_new_tokens=3)
    first = build_corpus(model, cfg, progress=False)
    (cached,) = (tmp_path / "corpus").glob("*.json")
    cached.write_text(cached.read_text()[:40])  # half-written
    with pytest.warns(UserWarning, match="unreadable"):
        again = build_corpus(model, cfg, progress=False)
    assert again.docs == first.docs and again.starts == first.starts


class _Identity:
    """A stand-in 'SAE' whose reconstruction is exact (or zero): CE recovered must be 1 (0)."""

    def __init__(self, scale: float):
        self.scale = scale
        self.W_dec = torch.zeros(1)

    def encode(self, x):
        return x

    def decode(self, f):
        return f * self.scale


def test_ce_loss_recovered_is_one_for_an_exact_and_zero_for_a_null_reconstruction(model):
    from interp_steer.sae.corpus.chat import Corpus
    from interp_steer.sae.training import ce_loss_recovered

    corpus = Corpus.from_texts(model, ["hello there friend", "a cat sat on the mat", "good day"])
    exact = ce_loss_recovered(model, _Identity(1.0), corpus, HOOK)
    null = ce_loss_recovered(model, _Identity(0.0), corpus, HOOK)
    assert exact["ce_sae"] == pytest.approx(exact["ce_clean"], abs=1e-5)
    assert exact["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert null["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert exact["ce_zero_ablation"] != pytest.approx(exact["ce_clean"])


def test_ce_loss_recovered_is_the_same_padded_or_not(model):
    """Left padding must not move the spliced positions: a batch of documents of different
    lengths gives the CEs of the documents run one at a time (no padding), so the SAE never
    touches a shorter document's first token."""
    from interp_steer.sae.corpus.chat import Corpus
    from interp_steer.sae.training import ce_loss_recovered

    texts = ["hi", "a cat sat on the mat today", "good day to you all", "ok then"]
    corpus = Corpus.from_texts(model, texts)
    lossy = _Identity(0.5)
    batched = ce_loss_recovered(model, lossy, corpus, HOOK, batch_size=4)
    alone = ce_loss_recovered(model, lossy, corpus, HOOK, batch_size=1)
    for key in ("ce_clean", "ce_sae", "ce_zero_ablation"):
        assert batched[key] == pytest.approx(alone[key], rel=1e-5), key


def test_cached_activations_equal_fresh_resume_and_heal(model, tmp_path, monkeypatch):
    import interp_steer.sae.training as T
    from interp_steer.sae.corpus.chat import Corpus

    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path))
    corpus = Corpus.from_texts(model, plain_texts()[:40])
    fresh, comp = T.token_activations(model, corpus, HOOK, progress=False)
    cached, ccomp = T.cached_token_activations(
        model, corpus, HOOK, docs_per_part=16, progress=False
    )
    torch.testing.assert_close(cached, fresh, rtol=2e-3, atol=2e-3)  # stored in float16
    assert torch.equal(ccomp, comp)
    parts = sorted((tmp_path / "sae_acts").rglob("part*.npz"))
    assert len(parts) == 3
    real = T.token_activations
    monkeypatch.setattr(T, "token_activations", lambda *a, **k: pytest.fail("recomputed"))
    again, _ = T.cached_token_activations(model, corpus, HOOK, docs_per_part=16, progress=False)
    assert torch.equal(again, cached)  # every part read back, no forward pass
    parts[1].write_bytes(parts[1].read_bytes()[:100])  # a half-written part
    monkeypatch.setattr(T, "token_activations", real)
    with pytest.warns(UserWarning, match="unreadable"):
        healed, _ = T.cached_token_activations(
            model, corpus, HOOK, docs_per_part=16, progress=False
        )
    assert torch.equal(healed, cached)


def test_activations_beyond_float16_are_cached_exactly_and_inf_parts_heal(tmp_path, monkeypatch):
    """Gemma-3's residual stream has outlier dimensions past float16's 65504: such a part is
    cached in float32 (not as inf), a cached part holding inf is recomputed, and training
    refuses non-finite activations instead of fitting an all-NaN SAE."""
    import numpy as np

    import interp_steer.sae.training as T
    from interp_steer.sae.corpus.chat import Corpus

    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path))
    big = tiny_model("llama")
    with torch.no_grad():
        big.W_E.mul_(1e5)  # the residual at blocks.1 now reaches ~1e5
    corpus = Corpus.from_texts(big, plain_texts()[:20])
    fresh, _ = T.token_activations(big, corpus, HOOK, progress=False)
    assert fresh.abs().max() > 65504
    cached, _ = T.cached_token_activations(big, corpus, HOOK, docs_per_part=8, progress=False)
    assert torch.isfinite(cached).all()
    torch.testing.assert_close(cached, fresh)  # float32: exact, not float16-rounded
    part = sorted((tmp_path / "sae_acts").rglob("part*.npz"))[0]
    with np.load(part) as z, np.errstate(over="ignore"):
        acts, completion = z["acts"].astype(np.float16), z["completion"]  # as the old code did
    assert np.isinf(acts).any()
    with open(part, "wb") as f:
        np.savez(f, acts=acts, completion=completion)
    with pytest.warns(UserWarning, match="non-finite"):
        healed, _ = T.cached_token_activations(big, corpus, HOOK, docs_per_part=8, progress=False)
    torch.testing.assert_close(healed, fresh)
    monkeypatch.setattr(
        T, "token_activations", lambda *a, **k: (torch.full((600, 64), float("inf")), None)
    )
    with pytest.raises(ValueError, match="inf or NaN"):
        S.train(
            big, HOOK, corpus, d_sae=64, k=4, training_tokens=512, batch_size=256, progress=False
        )


def test_train_reports_each_given_heldout_genre(model):
    from interp_steer.sae.corpus.chat import Corpus

    texts = plain_texts()
    train_c = Corpus.from_texts(model, texts[:200])
    held = {
        "a": Corpus.from_texts(model, texts[200:230]),
        "b": Corpus.from_texts(model, texts[230:260]),
    }
    sae, report = S.train(
        model,
        HOOK,
        train_c,
        heldout=held,
        d_sae=64,
        k=4,
        training_tokens=8192,
        batch_size=512,
        progress=False,
    )
    assert set(report["heldout_by_genre"]) == {"a", "b"}
    n = sum(r["n_tokens"] for r in report["heldout_by_genre"].values())
    assert report["heldout"]["n_tokens"] == n and report["train_tokens_unique"] > 0
    assert "generic_eval" not in report  # only by default with the generic corpus


def test_error_share_is_zero_for_an_exact_and_one_for_a_null_reconstruction(trained):
    x = torch.randn(50, 8)
    v = torch.randn(8)
    assert S.error_share(_Identity(1.0), v, x) == pytest.approx(0.0, abs=1e-6)
    assert S.error_share(_Identity(0.0), v, x) == pytest.approx(1.0)
    # a real SAE: the same number by hand
    sae, _ = trained
    acts = torch.randn(64, sae.cfg.d_in) * 3
    v = torch.randn(sae.cfg.d_in)
    with torch.no_grad():
        e0 = acts - sae.decode(sae.encode(acts))
        e1 = acts + v - sae.decode(sae.encode(acts + v))
    want = float(((e1 - e0) @ v).mean() / (v @ v))
    assert S.error_share(sae, v, acts) == pytest.approx(want, rel=1e-4)


def test_matched_random_latents_match_frequency_and_avoid_the_given():
    rates = torch.linspace(0, 1, 200)
    feats = [10, 100, 190]
    got = S.matched_random_latents(rates, feats, seed=3, pool=5)
    assert len(set(got)) == 3 and not set(got) & set(feats)
    assert all(abs(int(g) - f) <= 5 for g, f in zip(got, feats))  # rates are sorted by index
    assert got == S.matched_random_latents(rates, feats, seed=3, pool=5)


def test_effect_survival_with_given_features_ablates_those(model, trained):
    sae, _ = trained
    v = SteeringVector(torch.randn(1, model.cfg.d_model), HOOK)
    prompts = ["a cat sat", "the dog ran"]
    ranked = S.effect_survival(model, sae, v, prompts, [0, 2], 2.0)
    same = S.effect_survival(model, sae, v, prompts, [0, 2], 2.0, features=ranked[-1]["features"])
    assert same[-1]["survival"] == pytest.approx(ranked[-1]["survival"])
    with pytest.raises(ValueError, match="1 features given for k up to 2"):
        S.effect_survival(model, sae, v, prompts, [0, 2], 2.0, features=[3])
    with pytest.raises(ValueError, match="no effect on the logits"):
        S.effect_survival(model, sae, v, prompts, [0, 2], 0.0)


def test_effect_survival_counts_positions_per_prompt_in_a_padded_batch(model, trained):
    """Prompts of different lengths in one left-padded batch give each prompt the survival
    rows it gets alone, summed as the batch sums them (the ablation skips each prompt's own
    first token, not column 0)."""
    sae, _ = trained
    v = SteeringVector(torch.randn(1, model.cfg.d_model) * 3, HOOK)
    short, long = "a cat", "the dog ran far away today"
    feats = S.decompose(sae, v * 2.0, top=4)["by_decoder_cosine"]
    feats = [r["feature"] for r in feats]
    kw = dict(ks=[0, 4], alpha=2.0, features=feats, positions="all_but_first")
    both = S.effect_survival(model, sae, v, [short, long], **kw)[-1]["survival"]

    def parts(prompt):  # <Δ_k, Δ_0> and ‖Δ_0‖² of one prompt alone
        from interp_steer.interventions import steer

        t = model.to_tokens(prompt)
        with torch.no_grad():
            base = model(t)[:, -1]
            with steer(model, v, 2.0, positions="all_but_first"):
                d0 = model(t)[:, -1] - base
            with S.ablate_features(model, sae, feats):
                bk = model(t)[:, -1]
            with (
                steer(model, v, 2.0, positions="all_but_first"),
                S.ablate_features(model, sae, feats),
            ):
                dk = model(t)[:, -1] - bk
        return float((dk * d0).sum()), float(d0.pow(2).sum())

    (a1, b1), (a2, b2) = parts(short), parts(long)
    assert both == pytest.approx((a1 + a2) / (b1 + b2), rel=1e-4)


def test_the_suite_refuses_to_train_a_default_sae(model, tmp_path, monkeypatch):
    """Under the suite's INTERP_STEER_NO_SAE_TRAINING, a load_default that finds no SAE raises
    naming where it looked, instead of training for an hour."""
    import interp_steer.sae.io as sae_io

    monkeypatch.setattr(sae_io, "default_path", lambda *a, **k: tmp_path / "none")
    monkeypatch.setattr(sae_io, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(RuntimeError, match="INTERP_STEER_NO_SAE_TRAINING is set"):
        S.load_default(model, HOOK)
