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

Two extensions (Cao et al. 2026's axes):

- ``rank=k``: instead of one additive vector, a k-dimensional subspace trained jointly: free
  A ∈ R^{k×d} and c ∈ R^k, U = Gram-Schmidt(A) (k orthonormal directions), and the edit
  x ↦ x − (x Uᵀ) U + c U, which sets the activation's coordinates in span(U) to c (the
  `interventions.clamp` operator; LoReFT with W = 0, Wu et al. 2024). An additive constant in
  a k-dimensional span would be one vector again, so a real rank-k edit must depend on x.
  Returns U; apply it with ``clamp(model, vec, vec.metadata["clamp_values"])``.
- ``data=[example, ...]`` with ``epochs=E``: E passes over the examples, one Adam step per
  example in a new seeded order each pass (the ``tol`` rule is off: consecutive losses are of
  different examples); ``epoch_loss`` is the mean loss per pass.

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
from interp_steer.interventions import edit_at, orthonormal_rows
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


def _example(model: HookedTransformer, data, chat: bool) -> dict:
    """One training example, checked and tokenised."""
    if not isinstance(data, dict):
        raise TypeError(
            "one_shot takes data={'prompt': ..., 'promote': ... and/or 'suppress': ...}, one "
            "prompt and the completion to promote or suppress (or a list of them, with epochs); "
            f"got {type(data).__name__}. (positive, negative) pairs are for mean_diff, pca and "
            "probe."
        )
    unknown = set(data) - {"prompt", "prefix", "promote", "suppress"}
    if unknown:
        raise ValueError(
            f"one_shot data has unknown keys {sorted(unknown)}; "
            "valid: 'prompt', 'prefix', 'promote', 'suppress'"
        )
    promote, suppress = data.get("promote"), data.get("suppress")
    if not data.get("prompt") or not (promote or suppress):
        raise ValueError("one_shot needs data={'prompt': ..., 'promote' and/or 'suppress': ...}")
    ex = {
        "prompt": _prompt_ids(model, data["prompt"], data.get("prefix", ""), chat),
        "promote": _completion_ids(model, promote) if promote else None,
        "suppress": _completion_ids(model, suppress) if suppress else None,
    }
    n = len(ex["prompt"]) + max(len(c or []) for c in (ex["promote"], ex["suppress"]))
    if n > model.cfg.n_ctx:
        raise ValueError(
            f"one_shot example of {n} tokens (prompt + prefix + completion) is longer than "
            f"the model's context of {model.cfg.n_ctx}: {data['prompt'][:60]!r}..."
        )
    return ex


def _loss(model, ex: dict, coldness: float, satisfice_target: float | None):
    """The example's loss and log P(promote) (None without a promoted completion)."""
    loss, logprob = torch.zeros(()), None
    if ex["promote"] is not None:
        nll = -_token_logprobs(model, ex["prompt"], ex["promote"], coldness).sum()
        logprob = -nll.item()
        loss = nll if satisfice_target is None else (nll - satisfice_target) ** 2
    if ex["suppress"] is not None:
        lp = _token_logprobs(model, ex["prompt"], ex["suppress"], coldness)
        loss = loss - torch.log1p(-lp.exp().clamp(max=1 - 1e-6)).sum()
    return loss, logprob


@trains
def build(
    model: HookedTransformer,
    data: dict | list[dict],
    hook: str,
    steps: int | None = None,
    epochs: int | None = None,
    rank: int | None = None,
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
) -> tuple[Float[Tensor, "k d"], dict]:
    check_hook(model, hook)
    dataset = isinstance(data, list)
    if dataset:
        if not data:
            raise ValueError("one_shot got an empty list of examples")
        for d in data:  # (positive, negative) pairs get the TypeError that names their method
            if not isinstance(d, dict):
                _example(model, d, chat)
        if epochs is None or epochs < 1 or steps is not None:
            raise ValueError(
                "a list of examples trains for epochs=N passes (one step per example), "
                f"not steps; got steps={steps}, epochs={epochs}"
            )
        if stop_logprob is not None:
            raise ValueError("stop_logprob watches one prompt: give one example, not a list")
    elif epochs is not None:
        raise ValueError("epochs are passes over a list of examples; one example takes steps")
    if rank is not None and (rank < 1 or max_norm is not None):
        raise ValueError(f"rank must be >= 1 and takes no max_norm; got rank={rank}")
    check_trainable(model)
    examples = [_example(model, d, chat) for d in (data if dataset else [data])]
    if stop_logprob is not None and examples[0]["promote"] is None:
        raise ValueError("stop_logprob needs a 'promote' completion to watch")
    gen = torch.Generator().manual_seed(seed)
    d, dev = model.cfg.d_model, model.cfg.device
    v0 = torch.randn(rank or 1, d, generator=gen, dtype=torch.float64)
    if rank is None:
        v = (v0[0] / v0.norm() * init_norm).float().to(dev).requires_grad_(True)
        params = [v]

        def edit(x):
            return x + v.to(x.dtype)

    else:
        # the rank-k subspace span(U), U = Gram-Schmidt(A), with the activation's coordinates
        # in it set to c: x - (x Uᵀ) U + c U (`interventions.clamp`; LoReFT with W = 0)
        a = v0.float().to(dev).requires_grad_(True)
        c0 = torch.randn(rank, generator=gen, dtype=torch.float64)
        c = (c0 / c0.norm() * init_norm).float().to(dev).requires_grad_(True)
        params = [a, c]

        def edit(x):
            u = orthonormal_rows(a).to(x.dtype)
            return x - (x @ u.T) @ u + (c.to(x.dtype) @ u)

    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    if dataset:  # each epoch one seeded pass over the examples in a new order
        order = [i for _ in range(epochs) for i in torch.randperm(len(examples), generator=gen)]
    else:
        order = [0] * (100 if steps is None else steps)
    history: list[float] = []
    logprobs: list[float] = []  # log P(promote) before each step
    stopped = "epochs" if dataset else "steps"
    with _frozen(model), edit_at(model, hook, edit):
        bar = tqdm(order, desc="one_shot", disable=not progress)
        for i in bar:
            loss, lp = _loss(model, examples[int(i)], coldness, satisfice_target)
            if lp is not None:
                logprobs.append(lp)
            if stop_logprob is not None and lp >= stop_logprob:
                stopped = "stop_logprob"
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            if max_norm is not None:
                with torch.no_grad():
                    v.mul_(torch.clamp(max_norm / v.norm(), max=1.0))
            history.append(loss.item())
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            # |Δloss| between two different examples says nothing: tol is for one example
            if not dataset and len(history) > 1 and abs(history[-1] - history[-2]) < tol:
                stopped = "tol"
                break
    one = data[0] if dataset else data
    meta = {
        "loss_history": history,
        "steps_run": len(history),
        "promote_logprob_history": logprobs,
        "stopped": stopped,
        "prompt": one["prompt"],
        "prefix": one.get("prefix", ""),
        "promote": one.get("promote"),
        "suppress": one.get("suppress"),
        "n_examples": len(examples),
        "epochs": epochs,
        "rank": rank,
        "coldness": coldness,
        "lr": lr,
        "max_norm": max_norm,
        "satisfice_target": satisfice_target,
        "stop_logprob": stop_logprob,
    }
    if dataset:
        n = len(examples)
        meta["epoch_loss"] = [sum(history[e * n : (e + 1) * n]) / n for e in range(epochs)]
    if rank is None:
        return v.detach()[None], meta
    with torch.no_grad():
        u = orthonormal_rows(a)
        # apply with interventions.clamp(model, vec, meta["clamp_values"])
        meta["clamp_values"] = c.detach().cpu().tolist()
        return u.detach(), meta
