"""One-shot optimised steering vector (Dunefsky & Cohan, 2025).

A vector v is added at the hook at every position of prompt x + completion y and trained
with Adam (β = 0.9, 0.999) on the completion tokens' probabilities under logits × coldness:

    promotion    L₊ = −Σ_k log P(y_{k+1} | x, y≤k; v)
    suppression  L₋ = −Σ_k log(1 − P(y'_{k+1} | x, y'≤k; v))
    mixed        L₊ + L₋
    satisficing  (L₊ − target)²   (promote "this kind" of output without memorising it)

v starts as a random direction of norm ``init_norm``; with ``max_norm`` it is rescaled back
onto that ball after every step. Optimisation stops when |Δloss| < ``tol``, after ``steps``,
or (with ``stop_logprob``) once log P(promoted completion) ≥ ``stop_logprob``: the paper's
anti-refusal rule, which stops once the malicious prompt's code-fence log-prob exceeds the
benign prompt's.

``data["prefix"]`` (optional) is text the assistant has already written, placed after the
(chat-formatted) prompt and before the completion; the loss covers the completion only. The
paper trains its harmful-code vectors on a benign request plus a code prefix that stops just
where the harmful line would come. Log-probs are natural logs throughout.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp_steer.activations import encode, pad_left
from interp_steer.autograd import check_trainable, trains
from interp_steer.interventions import edit_at
from interp_steer.models import chat as chat_format
from interp_steer.vectors import check_hook


@contextmanager
def _frozen(model: HookedTransformer):
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def _completion_ids(model: HookedTransformer, completion: str) -> list[int]:
    comp_ids = model.tokenizer(completion, add_special_tokens=False).input_ids
    if not comp_ids:
        raise ValueError(f"completion {completion!r} tokenizes to nothing")
    return comp_ids


def _token_logprobs(model: HookedTransformer, prompt_ids, comp_ids, coldness: float):
    """log P of each completion token given the prompt, under the model's current hooks."""
    batch = pad_left(model, [prompt_ids + comp_ids])
    logits = model(batch.tokens) * coldness
    lp = logits.log_softmax(-1)[0, len(prompt_ids) - 1 : -1]  # predictions for completion
    return lp.gather(-1, batch.tokens[0, len(prompt_ids) :, None])[:, 0]


def _prompt_ids(model: HookedTransformer, prompt: str, prefix: str, chat: bool) -> list[int]:
    return encode(model, (chat_format(model, prompt) if chat else prompt) + prefix)


def completion_logprob(
    model: HookedTransformer,
    prompt: str,
    completion: str,
    prefix: str = "",
    chat: bool = True,
    coldness: float = 1.0,
) -> float:
    """Σ log P(completion tokens | prompt [+ prefix]) in nats, with logits × ``coldness``, under
    whatever steering is active (e.g. inside `interp_steer.steer`). The paper's satisficing
    target is 0.75 × this, read with the anti-refusal vector on."""
    with torch.no_grad():
        ids = _prompt_ids(model, prompt, prefix, chat)
        return float(
            _token_logprobs(model, ids, _completion_ids(model, completion), coldness).sum()
        )


@trains
def build(
    model: HookedTransformer,
    data: dict,
    hook: str,
    steps: int = 100,
    lr: float = 0.1,
    init_norm: float = 1.0,
    max_norm: float | None = None,
    coldness: float = 0.7,
    satisfice_target: float | None = None,
    stop_logprob: float | None = None,
    tol: float = 1e-6,
    chat: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Float[Tensor, "1 d"], dict]:
    check_hook(model, hook)
    if not isinstance(data, dict):
        raise TypeError(
            "one_shot takes data={'prompt': ..., 'promote': ... and/or 'suppress': ...}, one "
            f"prompt and the completion to promote or suppress; got {type(data).__name__}. "
            "(positive, negative) pairs are for mean_diff, pca and probe."
        )
    unknown = set(data) - {"prompt", "prefix", "promote", "suppress"}
    if unknown:
        raise ValueError(
            f"one_shot data has unknown keys {sorted(unknown)}; "
            "valid: 'prompt', 'prefix', 'promote', 'suppress'"
        )
    check_trainable(model)
    promote, suppress = data.get("promote"), data.get("suppress")
    if not data.get("prompt") or not (promote or suppress):
        raise ValueError("one_shot needs data={'prompt': ..., 'promote' and/or 'suppress': ...}")
    if stop_logprob is not None and not promote:
        raise ValueError("stop_logprob needs a 'promote' completion to watch")
    prefix = data.get("prefix", "")
    prompt_ids = _prompt_ids(model, data["prompt"], prefix, chat)
    promote_ids = _completion_ids(model, promote) if promote else None
    suppress_ids = _completion_ids(model, suppress) if suppress else None
    gen = torch.Generator().manual_seed(seed)
    v0 = torch.randn(model.cfg.d_model, generator=gen, dtype=torch.float64)
    v = (v0 / v0.norm() * init_norm).float().to(model.cfg.device).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr, betas=(0.9, 0.999))
    history: list[float] = []
    logprobs: list[float] = []  # log P(promote) before each step
    stopped = "steps"
    with _frozen(model), edit_at(model, hook, lambda x: x + v.to(x.dtype)):
        bar = tqdm(range(steps), desc="one_shot", disable=not progress)
        for _ in bar:
            loss = torch.zeros((), device=v.device)
            if promote:
                nll = -_token_logprobs(model, prompt_ids, promote_ids, coldness).sum()
                logprobs.append(-nll.item())
                if stop_logprob is not None and logprobs[-1] >= stop_logprob:
                    stopped = "stop_logprob"
                    break
                loss = loss + (nll if satisfice_target is None else (nll - satisfice_target) ** 2)
            if suppress:
                lp = _token_logprobs(model, prompt_ids, suppress_ids, coldness)
                loss = loss - torch.log1p(-lp.exp().clamp(max=1 - 1e-6)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if max_norm is not None:
                with torch.no_grad():
                    v.mul_(torch.clamp(max_norm / v.norm(), max=1.0))
            history.append(loss.item())
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
                stopped = "tol"
                break
    meta = {
        "loss_history": history,
        "steps_run": len(history),
        "promote_logprob_history": logprobs,
        "stopped": stopped,
        "prompt": data["prompt"],
        "prefix": prefix,
        "promote": promote,
        "suppress": suppress,
        "coldness": coldness,
        "lr": lr,
        "max_norm": max_norm,
        "satisfice_target": satisfice_target,
        "stop_logprob": stop_logprob,
    }
    return v.detach()[None], meta
