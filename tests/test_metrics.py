import numpy as np
import pandas as pd
import pytest
import torch

from interp_steer import build_vector, steer
from interp_steer.eval import metrics
from interp_steer.eval.sweep import calibrate, sweep
from interp_steer.generation import format_prompts

HOOK = "blocks.1.hook_resid_pre"
PAIRS = [("I love this", "I hate this"), ("great day", "awful day"), ("so happy", "so sad")]


def test_contains_rate_and_counts():
    texts = ["An owl, surely.", "a hawk", "OWLS everywhere", "bowl"]
    assert metrics.contains_rate(texts, "owl").tolist() == [1, 0, 1, 0]
    assert metrics.count_strings(texts, ["owl", "hawk"]) == {"owl": 3, "hawk": 1}
    with pytest.raises(ValueError):
        metrics.contains_rate(texts, [])


def test_diversity_measures():
    assert metrics.distinct_n("a b a b a b", 2) == pytest.approx(2 / 5)
    assert metrics.distinct_n("one", 2) == 0.0
    assert metrics.ngram_entropy(["a b", "a b"]) == 0.0
    assert metrics.ngram_entropy(["a b", "c d"]) == pytest.approx(1.0)

    def embed(texts):  # orthogonal for distinct texts, identical for equal ones
        vocab = sorted(set(texts))
        return np.eye(len(vocab))[[vocab.index(t) for t in texts]]

    assert metrics.embedding_diversity(["x", "x"], embed) == pytest.approx(0.0)
    assert metrics.embedding_diversity(["x", "y", "z"], embed) == pytest.approx(1.0)


def test_harmonic_mean_and_coherence():
    assert metrics.harmonic_mean(1, 1, 1) == pytest.approx(1.0)
    assert metrics.harmonic_mean(0.5, 1, 0) == 0.0
    assert metrics.harmonic_mean(0.5, 0.5, 0.5) == pytest.approx(0.5)
    # coherence from perplexities: fluent (ppl e^3), salad (ppl e^9), undefined, empty
    c = metrics.coherence_from(np.exp([3.0, 9.0, np.nan, 3.0]), ["a b c d", "a b c d", "x", ""])
    assert c[0] > 0.99 and c[1] < 0.01 and c[2] == 0.0 and c[3] == 0.0


def test_perplexity_matches_manual_loss(llama):
    """Each row of a left-padded batch (completions of different lengths, one empty) equals
    its own unpadded full-logits computation."""
    prompts, completions = ["hello", "a much longer prompt here", "hi"], [" world", " x", ""]
    ppl = metrics.perplexity(llama, prompts, completions)
    for prompt, completion, got in zip(prompts[:2], completions, ppl):
        toks = llama.to_tokens(prompt + completion)
        n = len(llama.to_tokens(completion, prepend_bos=False)[0])
        with torch.no_grad():
            logp = llama(toks).log_softmax(-1)[0, :-1].gather(-1, toks[0, 1:, None])[:, 0]
        assert got == pytest.approx(float(torch.exp(-logp[-n:].mean())), rel=1e-4)
    assert np.isnan(ppl[2])


def test_qa_grading_and_task_files():
    # code grading is tested in test_sandbox.py
    assert metrics.grade_qa(["It is Paris."], [{"answer": "paris"}]).tolist() == [1]
    tasks = metrics.capability_tasks()
    assert len(tasks["qa"]) >= 5 and len(tasks["code"]) >= 5


def test_kl_is_zero_at_alpha_zero_and_grows(llama):
    v = build_vector(llama, PAIRS, HOOK, progress=False)
    kl = metrics.kl_from_unsteered(llama, v, [0.0, 1.0, 4.0], ["hello there", "hi"])
    assert kl[0] == pytest.approx(0.0, abs=1e-9) and kl[1] < kl[2]
    # against a steered reference: zero for the same intervention, positive for another
    same, other = metrics.kl_under(
        llama,
        ["hello there", "hi"],
        [lambda: steer(llama, v, 4.0), lambda: steer(llama, v, 1.0)],
        reference=lambda: steer(llama, v, 4.0),
    )
    assert same == pytest.approx(0.0, abs=1e-9) and other > 0


def test_kl_at_generation_positions_matches_rows_computed_alone(llama):
    """With completions, KL is averaged over the last prompt token and the completion's
    tokens, and a "last_and_generated" edit acts there: the same as each row computed alone
    without padding, where the generation positions are explicit."""
    from interp_steer.activations import encode

    v = build_vector(llama, PAIRS, HOOK, progress=False)
    prompts, comps = ["hello there my", "hi"], [" friend, how are you", " you"]
    got = metrics.kl_under(
        llama,
        prompts,
        [lambda: steer(llama, v, 3.0, positions="last_and_generated")],
        completions=comps,
    )[0]
    total, count = 0.0, 0
    for p, c in zip(prompts, comps):
        n = len(encode(llama, p))
        toks = torch.tensor([encode(llama, p + c)])
        with torch.no_grad():
            base = llama(toks).double().log_softmax(-1)[0]
            with steer(llama, v, 3.0, positions=list(range(n - 1, toks.shape[1]))):
                lp = llama(toks).double().log_softmax(-1)[0]
        kl = (lp.exp() * (lp - base)).sum(-1)[n - 1 :]
        total, count = total + float(kl.sum()), count + kl.numel()
    assert got == pytest.approx(total / count, rel=1e-6)
    with pytest.raises(ValueError, match="completions"):
        metrics.kl_under(llama, prompts, [], completions=comps[:1])


def test_kl_meter_runs_the_reference_once_and_matches_kl_under(llama):
    """A bisection evaluates one intervention at a time; the meter runs the reference forward
    once, and every value equals `kl_under`'s for the same intervention."""
    v = build_vector(llama, PAIRS, HOOK, progress=False)
    prompts, comps = ["hello there my", "hi"], [" friend, how are you", " you"]
    calls = []
    llama.hook_dict["hook_embed"].add_hook(lambda x, hook: calls.append(1))
    try:
        measure = metrics.kl_meter(llama, prompts, completions=comps)
        assert len(calls) == 1
        got = [measure([lambda a=a: steer(llama, v, a)])[0] for a in (0.5, 2.0, 4.0)]
        assert len(calls) == 4  # one forward per evaluation, none for the reference
    finally:
        llama.reset_hooks()
    want = metrics.kl_under(
        llama, prompts, [lambda a=a: steer(llama, v, a) for a in (0.5, 2.0, 4.0)], completions=comps
    )
    assert got == pytest.approx(want.tolist(), rel=1e-12)


def test_sweep_table_and_files(llama, tmp_path):
    v = build_vector(llama, PAIRS, HOOK, progress=False)
    embed = lambda ts: np.stack([np.r_[len(t), 1.0] / np.hypot(len(t), 1.0) for t in ts])  # noqa: E731
    summary, samples = sweep(
        llama,
        {"v": v, "neg": -v},
        [2.0],
        ["hi", "yo"],
        success=lambda ts: np.array([float("a" in t) for t in ts]),
        samples_per_prompt=2,
        max_new_tokens=5,
        embed=embed,
        judge=lambda qs, ans: (np.full(len(ans), 70.0), np.ones(len(ans))),
        out=tmp_path / "sw",
        progress=False,
    )
    assert len(summary) == 4 and set(summary.alpha) == {0.0, 2.0}  # alpha 0 always added
    assert len(samples) == 2 * 2 * 2 * 2
    base = summary[summary.alpha == 0]
    assert (base.kl.abs() < 1e-9).all() and (summary[summary.alpha == 2].kl > 0).all()
    # the KL column is measured on the chat-formatted prompts generation conditioned on
    kl_v = summary[(summary.vector == "v") & (summary.alpha == 2)].kl.item()
    chat_kl = metrics.kl_from_unsteered(llama, v, [2.0], format_prompts(llama, ["hi", "yo"], True))
    assert kl_v == pytest.approx(chat_kl[0], rel=1e-6)
    assert summary.coherence.between(0, 1).all() and summary.hm.between(0, 1).all()
    assert (summary.judge == 70.0).all()
    for f in ("sw.csv", "sw_samples.csv", "sw.json"):
        assert (tmp_path / f).exists()
    # text scores come from the current metrics, also for finished cells: resumed under a
    # stricter repetition threshold, the same texts score lower
    monkey = pytest.MonkeyPatch()
    monkey.setattr(metrics, "DISTINCT3_FULL", 5.0)
    try:
        _, resumed = sweep(
            llama,
            {"v": v, "neg": -v},
            [2.0],
            ["hi", "yo"],
            samples_per_prompt=2,
            max_new_tokens=5,
            embed=embed,
            out=tmp_path / "sw",
            progress=False,
            success=lambda ts: np.array([float("a" in t) for t in ts]),
            judge=lambda qs, ans: (np.full(len(ans), 70.0), np.ones(len(ans))),
        )
    finally:
        monkey.undo()
    assert resumed.text.tolist() == samples.text.tolist()
    assert (resumed.coherence <= samples.coherence).all()
    assert (resumed.coherence < samples.coherence).any()


def test_calibrate_hits_target_kl(llama):
    v = build_vector(llama, PAIRS, HOOK, progress=False)
    prompts = ["hello there", "hi"]
    # KL is measured on what generation conditions on: chat-formatted prompts by default
    a = calibrate(llama, v, prompts, target_kl=0.05)
    kl = metrics.kl_from_unsteered(llama, v, [a], format_prompts(llama, prompts, True))[0]
    assert kl == pytest.approx(0.05, rel=0.1)
    a_raw = calibrate(llama, v, prompts, target_kl=0.05, chat=False)
    assert metrics.kl_from_unsteered(llama, v, [a_raw], prompts)[0] == pytest.approx(0.05, rel=0.1)
    with pytest.raises(ValueError):
        calibrate(llama, v, prompts)


def test_calibrate_target_success_matches_interpolation_on_the_swept_grid(llama):
    """calibrate(target_success=...) against a linear interpolation computed here from the same
    (seeded) sweep: the strength where mean success first reaches the target."""
    v = build_vector(llama, PAIRS, HOOK, progress=False)
    prompts, grid = ["hello there", "hi"], [0.5, 1.0, 2.0, 4.0]
    kw = dict(samples_per_prompt=2, max_new_tokens=6)

    def lower(texts):  # a graded score: the share of lowercase letters
        return np.array([sum(c.islower() for c in t) / max(len(t), 1) for t in texts])

    for score in (lower, lambda ts: 1 - lower(ts)):  # one of them rises somewhere on the grid
        summary, _ = sweep(
            llama, {"v": v}, grid, prompts, score, diversity=False, kl=False, progress=False, **kw
        )
        s = summary.sort_values("alpha")
        a, y = s.alpha.to_numpy(), s.success.to_numpy()
        assert a.tolist() == [0.0, *grid]
        i = int(np.argmax(y))  # the first grid point above every earlier one
        if i > 0:
            break
    assert i > 0, y
    target = (y[:i].max() + y[i]) / 2  # first reached between a[i-1] and a[i]
    want = float(np.interp(target, [y[i - 1], y[i]], [a[i - 1], a[i]]))
    got = calibrate(llama, v, prompts, target_success=target, success=score, alphas=grid, **kw)
    assert got == pytest.approx(want, rel=1e-9) and a[i - 1] <= got <= a[i]


def test_calibrate_target_success_on_a_given_table(monkeypatch):
    """The interpolation itself, on a success table with a dip, both signs and no crossing
    (the sweep is replaced by the table; expected strengths worked out by hand)."""
    from interp_steer.eval import sweep as sw

    table = {-4.0: 0.9, -2.0: 0.6, -1.0: 0.2, 0.0: 0.1, 1.0: 0.3, 2.0: 0.8, 4.0: 0.5, 8.0: 0.95}
    calls = []

    def fake_sweep(model, vectors, alphas, prompts, success, **kw):
        calls.append(kw)
        rows = list(reversed(sorted({0.0, *alphas})))  # given in no useful order
        return pd.DataFrame({"alpha": rows, "success": [table[a] for a in rows]}), None

    monkeypatch.setattr(sw, "sweep", fake_sweep)

    def cal(target, **kw):
        return sw.calibrate(None, None, ["p"], target_success=target, success=len, **kw)

    grid = [a for a in table if a]
    assert cal(0.55, alphas=grid) == pytest.approx(1.5)  # between 1 (0.3) and 2 (0.8)
    # the first crossing (2 -> 0.8 ... then 4 -> 0.5, 8 -> 0.95): 4 + 0.4 / 0.45 * 4
    assert cal(0.9, alphas=grid) == pytest.approx(68 / 9)
    assert cal(0.8, alphas=grid) == pytest.approx(2.0)  # exactly on a grid point
    assert cal(0.05, alphas=grid) == 0.0  # already reached unsteered
    # sign=-1 walks 0, -1, -2, -4 and ignores the positive side
    assert cal(0.4, alphas=grid, sign=-1.0) == pytest.approx(-1.5)
    assert cal(0.75, alphas=grid, sign=-1.0) == pytest.approx(-3.0)
    with pytest.raises(ValueError, match=r"never reaches 0.99 .*max 0.95"):
        cal(0.99, alphas=grid)
    assert all(kw["diversity"] is False and kw["kl"] is False for kw in calls)
    with pytest.raises(ValueError, match="needs success= and an alphas grid"):
        cal(0.5)
    with pytest.raises(ValueError, match="exactly one"):
        sw.calibrate(None, None, ["p"], target_kl=0.1, target_success=0.5)


COHERENCE_TRIPLES = [
    (
        "I spent the weekend hiking in the hills with my sister, and we finished with a picnic.",
        "I love it. I love it. I love it. I love it. I love it. I love it. I love it. I love it.",
        "hills the sister, picnic. and with weekend I hiking my spent we finished a in with the",
    ),
    (
        "Dear team, the quarterly report is attached. Please review it before Friday's meeting.",
        "the report the report the report the report the report the report the report the report",
        "report Friday's quarterly Please review meeting. attached. team, is it the Dear before",
    ),
    (
        "The museum was quiet on Tuesday morning, so we could take our time with the paintings.",
        "The museum was quiet. The museum was quiet. The museum was quiet. The museum was quiet.",
        "banana quantum seventeen purple whisper gravel spoon elephant tax river moon chair lamp",
    ),
]


@pytest.mark.integration
def test_coherence_ranks_sense_above_loops_and_salad(smollm2):
    """On the real model: a sensible sentence scores far above a repetition loop (which a
    perplexity ratio would reward) and a word salad of similar length; empty text scores 0."""
    flat = [t for triple in COHERENCE_TRIPLES for t in triple]
    c = metrics.coherence(smollm2, flat + [""]).round(3)
    good, loop, salad = c[:-1].reshape(-1, 3).T
    assert (good > 0.8).all(), c
    assert (loop < 0.35).all() and (salad < 0.2).all(), c
    assert (good - np.maximum(loop, salad) > 0.5).all()
    assert c[-1] == 0.0


def test_repetition_factor_sees_loops_written_without_spaces():
    """Loops that steered Gemma-3-270M writes as one "word" (a single-token loop) must be
    penalised like spaced loops; a script without spaces, a long identifier and a form blank
    are not loops."""
    loops = [
        "rentir" * 14,
        "令牌" * 40,
        "صيل" * 30,
        "Awwwwwwwwwwwwwwwwwwwwwwwwwwwww!",
        "x agory" + "agory" * 12,
    ]
    fine = [
        "我们周末去山里远足然后在河边野餐天气非常好大家都很开心",
        "def check_password_hash_function(user): return user",
        "Name: ______________________________ Date: today",
        "I spent the weekend hiking in the hills with my sister.",
    ]
    assert (metrics.repetition_factor(loops) < 0.1).all(), metrics.repetition_factor(loops)
    assert (metrics.repetition_factor(fine) == 1.0).all(), metrics.repetition_factor(fine)


def test_coherence_is_fluency_times_the_repetition_factor(llama):
    """Agreement with an independent computation: logistic fluency from the model's own
    perplexity, times min(1, distinct-3 / 0.9)²; prompts must match texts one to one."""
    texts = ["one two three four five six", "one two one two one two one two", "hi"]
    logp = -np.log(metrics.perplexity(llama, [""] * 3, texts))
    fluency = 1 / (1 + np.exp(-(logp - metrics.FLUENCY_MIDPOINT) / metrics.FLUENCY_SCALE))
    rep = np.array([1.0, (metrics.distinct_n(texts[1], 3) / metrics.DISTINCT3_FULL) ** 2, 1.0])
    assert rep[1] < 0.3
    assert metrics.coherence(llama, texts) == pytest.approx(fluency * rep)
    with pytest.raises(ValueError, match="1 prompts for 3 texts"):
        metrics.coherence(llama, texts, prompts=["x"])


def test_sweep_diversity_counts_coherent_samples_only():
    """Salad is lexically diverse: summarise must measure diversity over coherent samples
    only, and give HM 0 where no sample is coherent."""
    import pandas as pd

    from interp_steer.eval.sweep import COHERENT, summarise

    def embed(texts):  # one-hot per distinct text: identical texts have cosine 1
        vocab = sorted(set(texts))
        return np.eye(len(vocab))[[vocab.index(t) for t in texts]]

    rows = []
    for alpha, texts, coh in [
        (0.0, ["a b c", "a b c", "zq xv wk", "qq rr ss"], [0.9, 0.9, 0.1, 0.1]),
        (1.0, ["x y z", "u v w", "p q r", "k l m"], [0.2, 0.1, 0.3, 0.0]),
    ]:
        for i, (t, c) in enumerate(zip(texts, coh)):
            rows.append(
                dict(
                    vector="v",
                    hook="h",
                    alpha=alpha,
                    prompt=0,
                    sample=i,
                    text=t,
                    ppl=1.0,
                    coherence=c,
                    success=1.0,
                    judge=np.nan,
                    distinct_2=metrics.distinct_n(t, 2),
                    r=alpha,
                )
            )
    out = summarise(pd.DataFrame(rows), embed=embed).set_index("alpha")
    assert COHERENT == 0.5
    # alpha 0: the two coherent samples are identical -> set-level diversity 0, not the
    # 1 - 2/12 that all four (two of them salad) would give
    assert out.loc[0.0, "embedding_diversity"] == pytest.approx(0.0)
    assert out.loc[0.0, "coherent_fraction"] == 0.5
    assert np.isnan(out.loc[1.0, "diversity"]) and out.loc[1.0, "hm"] == 0.0
    # no success scorer (success NaN): the HM is unknown, not a failure
    unscored = summarise(pd.DataFrame(rows).assign(success=np.nan), embed=embed)
    assert unscored.hm.isna().all()
