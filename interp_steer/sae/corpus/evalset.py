"""The generic evaluation set: hand-written texts (news, science, chat, code, fiction, in
``interp_steer/data/generic_eval.json``; not drawn from the corpus) for measuring whether an
SAE generalises to text it never saw."""

from __future__ import annotations

import json
from importlib.resources import files

from transformer_lens import HookedTransformer

from interp_steer.activations import encode
from interp_steer.models import chat
from interp_steer.sae.corpus.chat import Corpus

EVAL_GENRES = ("news", "science", "chat", "code", "fiction")


def generic_eval() -> dict[str, list]:
    """The hand-written evaluation set as shipped: {genre: texts}, chat items being
    {"user": ..., "assistant": ...} exchanges."""
    raw = json.loads(files("interp_steer.data").joinpath("generic_eval.json").read_text())
    return {g: raw["genres"][g] for g in EVAL_GENRES}


def generic_eval_texts(model: HookedTransformer | None = None) -> dict[str, list[str]]:
    """{genre: texts}; a chat exchange is formatted with ``model``'s chat template (without a
    model: "User: ...\\nAssistant: ...")."""
    out = {}
    for g, items in generic_eval().items():
        if g != "chat":
            out[g] = list(items)
        elif model is None:
            out[g] = [f"User: {x['user']}\nAssistant: {x['assistant']}" for x in items]
        else:
            out[g] = [chat(model, x["user"]) + x["assistant"] for x in items]
    return out


def generic_eval_corpora(model: HookedTransformer) -> dict[str, Corpus]:
    """The evaluation set as one `Corpus` per genre; a chat document's completion (for the
    completion-only metrics) starts at the assistant's reply."""
    out = {}
    for g, items in generic_eval().items():
        if g == "chat":
            heads = [encode(model, chat(model, x["user"])) for x in items]
            docs = [encode(model, chat(model, x["user"]) + x["assistant"]) for x in items]
            starts = [len(h) for h in heads]
        else:
            docs, starts = [encode(model, t) for t in items], [0] * len(items)
        out[g] = Corpus(docs, starts, {"source": "generic_eval", "genre": g}, [g] * len(docs))
    return out
