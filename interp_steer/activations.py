"""Tokenizing with left padding, and batched activation extraction at hook points."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp_steer.vectors import check_hook


@dataclass
class Batch:
    """Left-padded tokens. Row b's real tokens occupy columns ``pad[b]:``."""

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    lengths: Int[Tensor, "batch"]

    @property
    def pad(self) -> Int[Tensor, "batch"]:
        return self.tokens.shape[1] - self.lengths


def encode(model: HookedTransformer, text: str) -> list[int]:
    """Token ids of one text exactly as ``model.to_tokens`` gives them (BOS per model default)."""
    tok = model.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids
    bos = tok.bos_token_id
    # A chat-formatted text may already start with BOS; never add a second one.
    if model.cfg.default_prepend_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def pad_left(model: HookedTransformer, seqs: Sequence[Sequence[int]]) -> Batch:
    if len(seqs) == 0:
        raise ValueError("empty batch: no texts given")
    if any(len(s) == 0 for s in seqs):
        raise ValueError("a text tokenized to zero tokens")
    tok = model.tokenizer
    pad_id = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0
    n = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, n - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[i, n - len(s) :] = True
    lengths = mask.sum(1)
    return Batch(
        tokens.to(model.cfg.device), mask.to(model.cfg.device), lengths.to(model.cfg.device)
    )


def check_texts(texts, name: str = "texts") -> list[str]:
    """``texts`` as a non-empty list of strings, or a ValueError/TypeError naming it."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a string or a list of strings, got {texts!r:.80}")
    if len(texts) == 0:
        raise ValueError(f"no {name} given")
    return list(texts)


def check_batch_size(batch_size) -> None:
    """Raise a ValueError naming ``batch_size`` unless it is an int >= 1."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


def tokenize(model: HookedTransformer, texts: Sequence[str]) -> Batch:
    texts = check_texts(texts)
    if model.tokenizer is None:
        raise ValueError("model has no tokenizer; pass token ids instead")
    return pad_left(model, [encode(model, t) for t in texts])


def forward_kwargs(batch: Batch) -> dict:
    """Keyword arguments that make a TL forward respect the left padding."""
    # Always pass the mask: TL would otherwise guess padding from pad-token ids, and some
    # tokenizers (SmolLM2) use a pad id that also occurs inside chat text.
    return {"attention_mask": batch.mask.long(), "padding_side": "left"}


def _stop_layer(model: HookedTransformer, hooks: Sequence[str]) -> int | None:
    layers = []
    for h in hooks:
        if not h.startswith("blocks."):
            return None  # e.g. ln_final / unembed hooks need the whole model
        layers.append(int(h.split(".")[1]))
    return max(layers) + 1 if max(layers) + 1 < model.cfg.n_layers else None


Aggregation = Literal["last", "mean"] | Sequence[int]


def aggregate(
    acts: Float[Tensor, "batch pos d"],
    batch: Batch,
    aggregation: Aggregation = "last",
    starts: Int[Tensor, "batch"] | None = None,
) -> Float[Tensor, "batch d"]:
    """Reduce over positions. ``starts`` (per row, in unpadded positions) marks a completion.

    - ``"last"``: the last real token.
    - ``"mean"``: mean over real tokens, or over the completion when ``starts`` is given.
    - a list of ints: mean over those unpadded positions (negative = from the end).
    """
    b, p, _ = acts.shape
    if not isinstance(aggregation, str | Sequence) or (
        not isinstance(aggregation, str)
        and not all(isinstance(i, int) and not isinstance(i, bool) for i in aggregation)
    ):
        raise ValueError(
            f"aggregation must be 'last', 'mean' or a list of ints, got {aggregation!r}"
        )
    if isinstance(aggregation, str) and aggregation == "last":
        return acts[:, -1]
    pos = torch.arange(p, device=acts.device)[None] - batch.pad[:, None]  # unpadded index
    if isinstance(aggregation, str):
        if aggregation != "mean":
            raise ValueError(f"unknown aggregation {aggregation!r}: use 'last', 'mean' or ints")
        sel = batch.mask.clone()
        if starts is not None:
            sel &= pos >= starts.to(acts.device)[:, None]
    else:
        idx = torch.tensor(list(aggregation), device=acts.device)
        if idx.numel() == 0:
            raise ValueError("aggregation: explicit positions list is empty")
        want = torch.where(idx[None] < 0, batch.lengths[:, None] + idx[None], idx[None])
        if ((want < 0) | (want >= batch.lengths[:, None])).any():
            raise ValueError(
                f"aggregation positions {list(aggregation)} out of range for some text"
            )
        sel = (pos[:, :, None] == want[:, None, :]).any(-1)
    if not sel.any(1).all():
        raise ValueError("aggregation selected no token for some text (empty completion?)")
    w = sel.to(acts.dtype)
    return (acts * w[..., None]).sum(1) / w.sum(1, keepdim=True)


@torch.no_grad()
def capture(
    model: HookedTransformer,
    items: Sequence[str] | Sequence[Sequence[int]],
    hooks: str | Sequence[str],
    batch_size: int = 16,
    skip_first: int = 0,
    progress: bool = False,
    desc: str = "activations",
) -> Iterator[tuple[Batch, dict[str, Float[Tensor, "batch pos d"]], Bool[Tensor, "batch pos"]]]:
    """The one capture path: per batch of texts (or token-id lists), yield the left-padded
    batch, the activations at every hook, and ``keep``, each row's real tokens without its
    first ``skip_first`` (the attention sink at position 0 has 10-1000x the others' norm).

    The forward stops after the last hook's layer.
    """
    if len(items) > 0 and isinstance(items[0], str):
        items = check_texts(items)
    elif len(items) == 0:
        raise ValueError("no texts given")
    check_batch_size(batch_size)
    if isinstance(hooks, str):
        hooks = [hooks]
    if not isinstance(hooks, Sequence) or not hooks or not all(isinstance(h, str) for h in hooks):
        raise TypeError(f"hooks must be a hook name or a list of them, got {hooks!r:.80}")
    for h in hooks:
        check_hook(model, h)
    names = set(hooks)
    stop = _stop_layer(model, hooks)
    for i in tqdm(range(0, len(items), batch_size), desc=desc, disable=not progress):
        chunk = items[i : i + batch_size]
        batch = tokenize(model, chunk) if isinstance(chunk[0], str) else pad_left(model, chunk)
        _, cache = model.run_with_cache(
            batch.tokens,
            names_filter=lambda n: n in names,
            stop_at_layer=stop,
            **forward_kwargs(batch),
        )
        pos = torch.arange(batch.tokens.shape[1], device=batch.mask.device)[None]
        keep = batch.mask & (pos - batch.pad[:, None] >= skip_first)
        yield batch, {h: cache[h] for h in hooks}, keep


def get_activations(
    model: HookedTransformer,
    texts: Sequence[str],
    hooks: str | Sequence[str],
    aggregation: Aggregation = "last",
    completion_starts: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Float[Tensor, "n d"]]:
    """Aggregated activations of ``texts`` at every hook, one cached forward per batch."""
    texts = check_texts(texts)
    check_batch_size(batch_size)
    out: dict[str, list[Tensor]] = {}
    starts_all = None if completion_starts is None else torch.tensor(list(completion_starts))
    batches = capture(model, texts, hooks, batch_size, progress=progress)
    for i, (batch, acts, _) in zip(range(0, len(texts), batch_size), batches):
        starts = None if starts_all is None else starts_all[i : i + batch_size]
        for h, a in acts.items():
            out.setdefault(h, []).append(aggregate(a.float(), batch, aggregation, starts).cpu())
    return {h: torch.cat(v) for h, v in out.items()}


def token_activations(
    model: HookedTransformer,
    texts: Sequence[str],
    hook: str,
    skip_first: bool = True,
    batch_size: int = 16,
    progress: bool = False,
) -> Float[Tensor, "tokens d"]:
    """Every real token's activation at ``hook`` (float32, CPU), in text order.

    ``skip_first`` drops each text's position 0, the attention sink, whose norm is 10-1000x
    the others' in every model here and would dominate any statistic over tokens.
    """
    out = [
        acts[hook][r][keep[r]].float().cpu()
        for _, acts, keep in capture(model, texts, hook, batch_size, int(skip_first), progress)
        for r in range(keep.shape[0])
    ]
    if sum(len(a) for a in out) == 0:
        raise ValueError("the texts have no tokens after skipping the first of each")
    return torch.cat(out)
