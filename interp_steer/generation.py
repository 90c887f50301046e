"""Batched, KV-cached, steerable generation on a HookedTransformer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer, TransformerLensKeyValueCache

from interp_steer.activations import Batch, check_batch_size, tokenize
from interp_steer.interventions import Positions, positions_context, steer
from interp_steer.models import chat as chat_format
from interp_steer.vectors import SteeringVector


def format_prompts(model: HookedTransformer, prompts: str | Sequence[str], chat: bool) -> list[str]:
    if not isinstance(prompts, str | Sequence) or (
        not isinstance(prompts, str) and not all(isinstance(p, str) for p in prompts)
    ):
        raise TypeError(f"prompts must be a string or a list of strings, got {prompts!r:.80}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    return [chat_format(model, p) for p in prompts] if chat else prompts


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_sampling(max_new_tokens, temperature, top_p, seed) -> None:
    """Raise a ValueError/TypeError naming the first out-of-range sampling argument."""
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if (
        not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not _is_int(seed) and not (
        isinstance(seed, Sequence) and len(seed) > 0 and all(_is_int(x) for x in seed)
    ):
        raise TypeError(f"seed must be an int or a non-empty list of ints, got {seed!r:.80}")


def row_seeds(seed: int | Sequence[int], b: int) -> list[int]:
    """One sampling seed per row: ``seed`` + row index, or the given per-row seeds."""
    if _is_int(seed):
        return [seed + r for r in range(b)]
    if len(seed) != b:
        raise ValueError(f"{len(seed)} seeds for {b} rows; give one per row")
    return list(seed)


_BLOCK = 1024


def _draw(
    weights: Float[Tensor, "batch n"], gens: Sequence[torch.Generator]
) -> Int[Tensor, "batch"]:
    """One index per row with probability proportional to ``weights``; row r draws its one
    uniform from ``gens[r]``, so a row's sample never depends on the rest of the batch.

    Inverse CDF in two levels: pick a block of 1024 by the float64 cumulative block sums,
    then the token inside it by a float64 cumsum. A full-vocabulary float64 cumsum cost
    ~0.23 s per step for 128 rows of SmolLM2's 49k vocabulary on 2 cores, half of a decode
    step. Each block sums in float32 (pairwise: relative error ~2e-7, measured) before the
    float64 accumulation: a float64 block sum took 0.11 s per step for 128 rows of Gemma's
    262k vocabulary, the float32 one 6 ms.
    """
    b, n = weights.shape
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in gens])
    u = u.to(weights.device)[:, None]
    nb = -(-n // _BLOCK)
    w = weights.float()
    if n % _BLOCK:  # Gemma's 262,144 needs no padding (the copy cost 60 ms per step)
        w = torch.nn.functional.pad(w, (0, nb * _BLOCK - n))
    w = w.reshape(b, nb, _BLOCK)
    bsum = w.sum(-1).double()
    bcdf = bsum.cumsum(-1)
    target = u * bcdf[:, -1:]
    # the first block whose cumulative weight exceeds the target: zero-weight blocks never win
    bi = torch.searchsorted(bcdf, target, right=True).clamp_max(nb - 1)
    rest = target - (bcdf.gather(1, bi) - bsum.gather(1, bi))
    inner = w[torch.arange(b, device=w.device), bi[:, 0]].double().cumsum(-1)
    # block sum and in-block cumsum round differently: keep the target inside the block
    rest = torch.minimum(rest, inner[:, -1:] * (1 - 1e-12))
    ii = torch.searchsorted(inner, rest, right=True)[:, 0].clamp_max(_BLOCK - 1)
    return (bi[:, 0] * _BLOCK + ii).clamp_max(n - 1)


def _nucleus(
    probs: Float[Tensor, "batch vocab"], top_p: float
) -> tuple[Int[Tensor, "batch n"], Float[Tensor, "batch n"]]:
    """Top-p candidates by descending probability, with the tokens outside the nucleus (the
    smallest prefix whose mass reaches ``top_p``; always at least one token) zeroed.

    Partial selection of the top 1k, then 16k, and a full-vocabulary sort only when some
    row's nucleus is larger still: for 30 rows of Gemma's 262k vocabulary on the CPU that is
    10 / 55 / 300+ ms, and a coherent model's nucleus is usually well under 1k.
    """
    for k in (1024, 16384):
        if k < probs.shape[-1]:
            p, idx = probs.topk(k, dim=-1)
            if bool((p.sum(-1) >= top_p).all()):  # every row's nucleus lies in its top k
                break
    else:
        p, idx = probs.sort(-1, descending=True)
    drop = p.cumsum(-1) - p >= top_p
    return idx, p.masked_fill(drop, 0.0)


def _sample(
    logits: Float[Tensor, "batch vocab"],
    temperature: float,
    top_p: float,
    gens: Sequence[torch.Generator],
) -> Int[Tensor, "batch"]:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    if top_p < 1.0:
        idx, p = _nucleus(probs, top_p)
        return idx.gather(-1, _draw(p, gens)[:, None])[:, 0]
    return _draw(probs, gens)


@torch.no_grad()
def last_logits(model: HookedTransformer, tokens, mask, cache) -> Float[Tensor, "batch vocab"]:
    """Next-token logits at the last position only, extending ``cache`` when one is given."""
    # Unembed only the last position (HF's logits_to_keep=1): the full-vocab projection of
    # every prompt position dominated the prefill. ln_final/unembed hooks see one position.
    resid = model(
        tokens,
        attention_mask=mask,
        past_kv_cache=cache,
        stop_at_layer=model.cfg.n_layers,
    )
    return model.unembed(model.ln_final(resid[:, -1:]))[:, 0]


def _expand_cache(cache: TransformerLensKeyValueCache, rows: Tensor) -> None:
    """Repeat a cache's batch rows: row i of the result is row ``rows[i]`` of the input."""
    for entry in cache.entries:
        entry.past_keys = entry.past_keys[rows]
        entry.past_values = entry.past_values[rows]
    cache.previous_attention_mask = cache.previous_attention_mask[rows]


@torch.inference_mode()
def generate_tokens(
    model: HookedTransformer,
    batch: Batch,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | Sequence[int] = 0,
    stop_at_eos: bool = True,
    use_cache: bool = True,
    share_prefix: bool = False,
) -> Int[Tensor, "batch new"]:
    """Continue left-padded ``batch``; returns the new tokens (EOS-padded after a stop).

    Row r samples with its own generator (``row_seeds``), so its text does not depend on the
    other rows: conditions that share a prompt and a seed are paired. Active interventions
    see positions via `positions_context`, so "prompt"/"generated"/int positions behave
    identically with ``use_cache`` on and off. ``share_prefix`` runs each distinct prompt's
    tokens before the last once and copies its cache to the rows that repeat it; every active
    edit must leave those positions alone (e.g. ``positions="last_and_generated"``).
    """
    check_sampling(max_new_tokens, temperature, top_p, seed)
    n_ctx = model.cfg.n_ctx
    if batch.tokens.shape[1] + max_new_tokens > n_ctx:
        raise ValueError(
            f"prompt of {batch.tokens.shape[1]} tokens + max_new_tokens={max_new_tokens} exceeds "
            f"the model's context of {n_ctx} tokens: shorten the prompt or lower max_new_tokens"
        )
    if share_prefix and not use_cache:
        raise ValueError("share_prefix=True needs use_cache=True")
    b = batch.tokens.shape[0]
    device = batch.tokens.device
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None else None
    gens = [torch.Generator().manual_seed(s) for s in row_seeds(seed, b)]
    out = torch.empty((b, 0), dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    tokens, mask = batch.tokens, batch.mask.long()
    step_in, step_mask = tokens, mask
    shared = share_prefix and tokens.shape[1] > 1  # share_prefix implies use_cache (above)
    cache = None
    if use_cache and not shared:
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, b)
    if shared:
        uniq, rows = torch.unique(tokens, dim=0, return_inverse=True)
        first = torch.full((len(uniq),), b, dtype=torch.long).scatter_reduce(
            0, rows, torch.arange(b), "amin"
        )
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(first))
        with positions_context(model, batch.pad[first], batch.lengths[first]) as state:
            state.shared_prefix = True
            model(
                tokens[first, :-1],
                attention_mask=mask[first, :-1],
                past_kv_cache=cache,
                stop_at_layer=model.cfg.n_layers,
            )
        _expand_cache(cache, rows)
        step_in, step_mask = tokens[:, -1:], mask[:, -1:]
    with positions_context(model, batch.pad, batch.lengths) as state:
        state.offset = tokens.shape[1] - step_in.shape[1]
        for _ in range(max_new_tokens):
            if use_cache:
                logits = last_logits(model, step_in, step_mask, cache)
                state.offset += step_in.shape[1]
            else:
                logits = last_logits(model, tokens, mask, None)
            nxt = _sample(logits, temperature, top_p, gens).to(device)
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            out = torch.cat([out, nxt[:, None]], 1)
            if stop_at_eos and eos is not None:
                done |= nxt == eos
                if bool(done.all()):
                    break
            step_in, step_mask = nxt[:, None], torch.ones((b, 1), dtype=torch.long, device=device)
            if not use_cache:
                tokens = torch.cat([tokens, step_in], 1)
                mask = torch.cat([mask, step_mask], 1)
    return out


def decode(model: HookedTransformer, new_tokens: Int[Tensor, "batch new"]) -> list[str]:
    eos = model.tokenizer.eos_token_id
    texts = []
    for row in new_tokens.tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(model.tokenizer.decode(row, skip_special_tokens=True))
    return texts


def generate(
    model: HookedTransformer,
    prompts: str | Sequence[str],
    vector: SteeringVector | None = None,
    alphas: float | Sequence[float] | Tensor | None = None,
    positions: Positions = "all",
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | Sequence[int] = 0,
    stop_at_eos: bool = True,
    chat: bool = True,
    use_cache: bool = True,
    batch_size: int | None = None,
    force: bool = False,
    progress: bool = False,
    share_prefix: bool = False,
) -> list[str]:
    """Generate completions, optionally steering with ``alphas``·``vector``.

    ``alphas`` is a scalar or one value per prompt, so an N-point strength sweep is one
    batched generation: repeat the prompt N times and pass the N strengths. ``chat`` wraps
    each prompt in the tokenizer's chat template. Temperature 0 is greedy. Row r samples
    from seed ``seed + r`` (or ``seed[r]`` for a list), whatever the batching, so two calls
    that share prompts and seeds are paired. ``share_prefix``: see `generate_tokens`.
    """
    texts = format_prompts(model, prompts, chat)
    if vector is None:  # the steering arguments mean nothing without a vector: refuse them
        given = [
            name
            for name, unused in (
                ("alphas", alphas is not None),
                ("positions", positions != "all"),
                ("force", force),
            )
            if unused
        ]
        if given:
            raise ValueError(f"{', '.join(given)} given without a vector")
    try:
        a = torch.as_tensor(1.0 if alphas is None else alphas, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"alphas must be a number or a sequence of numbers, got {alphas!r}"
        ) from None
    if isinstance(alphas, str):
        raise TypeError(f"alphas must be a number or a sequence of numbers, got {alphas!r}")
    if not torch.isfinite(a).all():
        raise ValueError(f"alphas must be finite, got {alphas!r}")
    if a.ndim == 1 and a.shape[0] != len(texts):
        raise ValueError(f"{a.shape[0]} alphas for {len(texts)} prompts; give one per prompt")
    if batch_size is not None:
        check_batch_size(batch_size)
    check_sampling(max_new_tokens, temperature, top_p, seed)
    seeds = row_seeds(seed, len(texts))
    bs = batch_size or len(texts)
    results: list[str] = []
    for i in tqdm(range(0, len(texts), bs), desc="generate", disable=not progress):
        batch = tokenize(model, texts[i : i + bs])
        with ExitStack() as stack:
            if vector is not None:
                ai = a if a.ndim == 0 else a[i : i + bs]
                stack.enter_context(steer(model, vector, ai, positions=positions, force=force))
            new = generate_tokens(
                model,
                batch,
                max_new_tokens,
                temperature,
                top_p,
                seeds[i : i + bs],
                stop_at_eos,
                use_cache,
                share_prefix,
            )
        results.extend(decode(model, new))
    return results
