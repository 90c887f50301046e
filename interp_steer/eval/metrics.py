"""Metrics for steered generations: success, coherence, diversity, capability, KL.

Every score used in the harmonic mean lives in [0, 1]:
- success s: a classifier probability / rate, or the fraction of texts matching a target.
- coherence c = `coherence`: fluency under the *unsteered* model (a logistic in the mean
  token log-prob) times a repetition penalty, so that neither word salad nor a repetition
  loop scores well. (The perplexity ratio min(1, ppl_ref / ppl) used before gave repetition
  loops top marks.)
- diversity d = mean of distinct-2 (within a response) and 1 − mean pairwise MiniLM cosine
  (across responses to one prompt).
- harmonic mean HM = 3 / (1/s + 1/c + 1/d); 0 if any term is 0.
Capability is accuracy on `data/capability.json` (factual QA by regex, tiny Python functions by
running the model's code against asserts in the bubblewrap sandbox of `interp_steer.eval.sandbox`).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from importlib.resources import files

import numpy as np
import torch
from transformer_lens import HookedTransformer

from interp_steer.activations import encode, forward_kwargs, pad_left, tokenize
from interp_steer.eval import sandbox
from interp_steer.generation import generate
from interp_steer.interventions import positions_context, steer

# ---------------------------------------------------------------- success


def contains_rate(texts: Sequence[str], targets: str | Sequence[str]) -> np.ndarray:
    """1.0 per text containing any target as a whole word (case-insensitive)."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ValueError("no target strings given")
    rx = re.compile("|".join(rf"\b{re.escape(t)}" for t in targets), re.IGNORECASE)
    return np.array([float(bool(rx.search(t))) for t in texts])


def count_strings(texts: Sequence[str], strings: Sequence[str]) -> dict[str, int]:
    """How many texts contain each string (lowercase substring), as in the one-shot EM post."""
    low = [t.lower() for t in texts]
    return {s: sum(s.lower() in t for t in low) for s in strings}


# ---------------------------------------------------------------- coherence


@torch.no_grad()
def perplexity(
    model: HookedTransformer,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 16,
) -> np.ndarray:
    """Per-sample perplexity of ``completions`` given ``prompts`` (already formatted) under
    ``model`` as it is: call it outside any steering context to score with the unsteered model."""
    if len(prompts) != len(completions):
        raise ValueError("prompts and completions differ in length")
    out = []
    for i in range(0, len(prompts), batch_size):
        heads = [encode(model, p) for p in prompts[i : i + batch_size]]
        fulls = [
            encode(model, p + c)
            for p, c in zip(prompts[i : i + batch_size], completions[i : i + batch_size])
        ]
        # the first token has no prediction: without a prompt (or BOS) n - 1 tokens are scored
        n_new = [min(len(f) - len(h), len(f) - 1) for h, f in zip(heads, fulls)]
        k = max(n_new)
        if k > 0:
            batch = pad_left(model, fulls)
            # unembed only the last k positions (left padding puts every completion there):
            # the full-vocabulary projection of the prompts was half the cost
            resid = model(batch.tokens, **forward_kwargs(batch), stop_at_layer=model.cfg.n_layers)
            logits = model.unembed(model.ln_final(resid[:, -k - 1 : -1]))
            lp = logits.float().log_softmax(-1).gather(-1, batch.tokens[:, -k:, None])[..., 0]
        for r, n in enumerate(n_new):
            # an empty completion's perplexity is undefined
            out.append(math.exp(-float(lp[r, -n:].mean())) if n > 0 else float("nan"))
    return np.array(out)


# Mean token log-prob (nats) where fluency is 0.5, and the width of the logistic: fluent
# English under SmolLM2 / Gemma-3-270M sits at -2.7 to -4.7 and shuffled word salad at -7 to -9
# (measured on tests/test_metrics.py's triples), so fluent text scores > 0.9 and salad < 0.1.
FLUENCY_MIDPOINT = -6.0
FLUENCY_SCALE = 0.5
# distinct-3 of natural 20-40 word text is 0.95-1; a repetition loop's is 0.05-0.3
DISTINCT3_FULL = 0.9


def coherence(
    model: HookedTransformer,
    texts: Sequence[str],
    prompts: Sequence[str] | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Per-text coherence in [0, 1]: fluency x a repetition penalty.

    fluency = logistic((mean token log-prob under ``model`` − FLUENCY_MIDPOINT) / FLUENCY_SCALE),
    scored as the model is (call it outside any steering context), given ``prompts`` if any;
    repetition = `repetition_factor` (distinct word 3-grams, and character 3-grams inside
    words longer than MAX_WORD, against DISTINCT3_FULL). Word salad fails the first, repetition loops (which a perplexity
    ratio rewards) the second; an empty text scores 0.
    """
    texts = list(texts)
    heads = [""] * len(texts) if prompts is None else list(prompts)
    if len(heads) != len(texts):
        raise ValueError(f"{len(heads)} prompts for {len(texts)} texts")
    keep = [i for i, t in enumerate(texts) if t.strip()]
    ppl = np.full(len(texts), np.nan)
    if keep:
        ppl[keep] = perplexity(
            model, [heads[i] for i in keep], [texts[i] for i in keep], batch_size
        )
    return coherence_from(ppl, texts)


def coherence_from(ppl: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """`coherence` from perplexities already computed (NaN, e.g. an empty text, scores 0)."""
    logp = -np.log(np.asarray(ppl, float))
    fluency = 1 / (1 + np.exp(-(logp - FLUENCY_MIDPOINT) / FLUENCY_SCALE))
    empty = np.array([not t.strip() for t in texts])
    return np.where(empty, 0.0, np.nan_to_num(fluency * repetition_factor(texts), nan=0.0))


# A word longer than this is also checked inside: a loop written without spaces
# ("rentirentirenti...", "令牌令牌...": steered Gemma-3-270M writes them) is one "word" whose
# repetition no word n-gram can see; a real identifier's character 3-grams are nearly distinct.
MAX_WORD = 20


def repetition_factor(texts: Sequence[str]) -> np.ndarray:
    """min(1, d / DISTINCT3_FULL)² per text, d the smallest distinct-3 ratio among the text's
    word 3-grams (1 under 3 words) and the character 3-grams inside each word longer than
    MAX_WORD that has a letter."""
    out = []
    for t in texts:
        words = _words(t)
        ratios = [distinct_n(t, 3) if len(words) >= 3 else 1.0]
        ratios += [
            len({w[i : i + 3] for i in range(len(w) - 2)}) / (len(w) - 2)
            for w in words
            if len(w) > MAX_WORD and any(c.isalpha() for c in w)  # not a "______" form blank
        ]
        out.append(min(1.0, min(ratios) / DISTINCT3_FULL) ** 2)
    return np.array(out)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    w = _words(text)
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


def distinct_n(text: str, n: int = 2) -> float:
    """Unique n-grams / n-grams within one text (sample-level diversity); 0 if none."""
    grams = _ngrams(text, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def ngram_entropy(texts: Sequence[str], n: int = 2) -> float:
    """Shannon entropy (bits) of the n-gram distribution pooled over texts (set-level)."""
    c = Counter(g for t in texts for g in _ngrams(t, n))
    total = sum(c.values())
    if total == 0:
        return 0.0
    p = np.array(list(c.values()), float) / total
    return float(-(p * np.log2(p)).sum())


def embedding_diversity(texts: Sequence[str], embed=None) -> float:
    """1 − mean pairwise cosine of MiniLM embeddings (set-level); needs ≥ 2 texts."""
    if len(texts) < 2:
        raise ValueError("embedding diversity needs at least two texts")
    if embed is None:
        from interp_steer.eval.classifiers import MiniLM

        embed = MiniLM()
    e = np.asarray(embed(list(texts)), float)
    sim = e @ e.T
    n = len(e)
    return float(1 - (sim.sum() - np.trace(sim)) / (n * (n - 1)))


def harmonic_mean(*scores: float) -> float:
    """3 / Σ 1/x for scores in [0, 1]; 0 when any is 0."""
    s = np.clip(np.asarray(scores, float), 0, 1)
    if (s <= 0).any() or np.isnan(s).any():
        return 0.0
    return float(len(s) / (1 / s).sum())


# ---------------------------------------------------------------- capability


def capability_tasks() -> dict:
    raw = json.loads(files("interp_steer.data").joinpath("capability.json").read_text())
    return {"qa": raw["qa"], "code": raw["code"]}


def extract_code(text: str) -> str:
    """The first fenced code block, else the text from the first ``def`` on."""
    m = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", text, re.DOTALL)
    if m:
        return m.group(1)
    i = text.find("def ")
    return text[i:] if i >= 0 else text


def run_python(code: str, test: str, timeout: float = 5.0) -> bool:
    """True if ``test`` ran to its end after ``code``, in the sandbox (`interp_steer.eval.sandbox`).

    A pass is the harness's sentinel printed after the asserts, not exit code 0, so a candidate
    that exits early fails. Raises `sandbox.SandboxUnavailable` where no sandbox works.
    """
    return sandbox.run_tests(code, test, sandbox.Limits(wall_s=timeout)).passed


def grade_qa(answers: Sequence[str], tasks: Sequence[dict]) -> np.ndarray:
    return np.array(
        [float(bool(re.search(t["answer"], a, re.IGNORECASE))) for a, t in zip(answers, tasks)]
    )


def grade_code(answers: Sequence[str], tasks: Sequence[dict], timeout: float = 5.0) -> np.ndarray:
    return np.array(
        [float(run_python(extract_code(a), t["test"], timeout)) for a, t in zip(answers, tasks)]
    )


def capability(
    model: HookedTransformer,
    vector=None,
    alphas: Sequence[float] = (0.0,),
    max_new_tokens: int = 96,
    batch_size: int = 32,
    kinds: Sequence[str] = ("qa", "code"),
) -> dict[str, np.ndarray]:
    """Greedy accuracy per alpha on the shipped capability tasks: {kind: [len(alphas)]}."""
    tasks = capability_tasks()
    out = {}
    for kind in kinds:
        ts = tasks[kind]
        qs = [
            t["question"] if kind == "qa" else t["prompt"] + " Reply with only the code."
            for t in ts
        ]
        prompts = [q for _ in alphas for q in qs]
        a = [float(x) for x in alphas for _ in qs]
        answers = generate(
            model,
            prompts,
            vector=vector,
            alphas=a if vector is not None else None,
            max_new_tokens=max_new_tokens if kind == "code" else 24,
            batch_size=batch_size,
        )
        grade = grade_qa if kind == "qa" else grade_code
        scores = [
            grade(answers[i * len(ts) : (i + 1) * len(ts)], ts).mean() for i in range(len(alphas))
        ]
        out[kind] = np.array(scores)
    return out


# ---------------------------------------------------------------- KL


@torch.no_grad()
def kl_under(
    model: HookedTransformer,
    prompts: Sequence[str],
    contexts: Sequence[Callable],
    reference: Callable | None = None,
    completions: Sequence[str] | None = None,
) -> np.ndarray:
    """Mean next-token KL(P_edited ‖ P_reference) in nats, one value per intervention: each of
    ``contexts`` (and ``reference``; default: no intervention) is a zero-argument factory of a
    context manager.

    Args:
        model: the model.
        prompts: formatted prompts.
        contexts: factories of the interventions to compare.
        reference: the factory of the reference (default: none).
        completions: when given, each prompt is followed by its completion (e.g. unsteered
            text) and KL is averaged over the generation positions (the last prompt token and
            every completion token), where a steered model's output is read; the edits see
            the prompt/completion layout (`positions_context`). Without them, KL is averaged
            over every prompt position.
    """
    return kl_meter(model, prompts, reference, completions)(contexts)


def kl_meter(
    model: HookedTransformer,
    prompts: Sequence[str],
    reference: Callable | None = None,
    completions: Sequence[str] | None = None,
) -> Callable[[Sequence[Callable]], np.ndarray]:
    """`kl_under` with the reference forward run once, for callers that evaluate many
    interventions one at a time (a bisection): returns ``contexts -> KL per context``.

    The reference log-probabilities stay in memory (positions read × vocabulary, float64)
    for as long as the returned function lives. Arguments as in `kl_under`.
    """
    if completions is None:
        batch = tokenize(model, list(prompts))
        where = batch.mask
        layout = nullcontext
    else:
        if len(completions) != len(prompts):
            raise ValueError(f"{len(completions)} completions for {len(prompts)} prompts")
        heads = [encode(model, p) for p in prompts]
        batch = pad_left(model, [encode(model, p + c) for p, c in zip(prompts, completions)])
        plen = torch.tensor([len(h) for h in heads], device=batch.tokens.device)
        pos = torch.arange(batch.tokens.shape[1], device=plen.device)[None] - batch.pad[:, None]
        where = batch.mask & (pos >= plen[:, None] - 1)

        def layout():
            return positions_context(model, batch.pad, plen)

    kw = forward_kwargs(batch)
    # No graph (it would live as long as the meter), and the distributions only where KL is
    # read: rows are independent, so the values are the whole batch's, with half the float64
    # work and memory.
    with torch.no_grad(), layout(), (reference or nullcontext)():
        base = model(batch.tokens, **kw)[where].double().log_softmax(-1)

    def measure(contexts: Sequence[Callable]) -> np.ndarray:
        out = []
        for make in contexts:
            with torch.no_grad(), layout(), make():
                lp = model(batch.tokens, **kw)[where].double().log_softmax(-1)
            out.append(float((lp.exp() * (lp - base)).sum(-1).mean()))
        return np.array(out)

    return measure


def kl_from_unsteered(
    model: HookedTransformer, vector, alphas: Sequence[float], prompts: Sequence[str]
) -> np.ndarray:
    """`kl_under` for steering with ``vector`` at each of ``alphas``."""
    return kl_under(model, prompts, [lambda a=a: steer(model, vector, a) for a in alphas])
