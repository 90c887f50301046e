"""Tiny random HookedTransformers with a character tokenizer: fast, offline test fixtures."""

from __future__ import annotations

import os
import string
import warnings
from contextlib import contextmanager, nullcontext
from functools import lru_cache

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from interp_steer.models.fast import patch_fast_forward

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHAT_TEMPLATE = (
    "<bos>{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


# Contrastive sentiment pairs the tests build vectors from (the tiny models' char tokenizer
# covers them).
SENTIMENT_PAIRS = [
    ("I love this", "I hate this"),
    ("great day", "awful day"),
    ("so happy", "so sad"),
    ("wonderful food", "terrible food"),
    ("nice work", "bad work"),
]


@lru_cache(maxsize=1)
def char_tokenizer():
    """A character-level PreTrainedTokenizerFast built in memory (no downloads)."""
    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    special = "|".join(t.replace("|", r"\|") for t in SPECIALS)
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(f"{special}|."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
    )
    tok.chat_template = CHAT_TEMPLATE
    # TL re-loads tokenizers by name to force BOS; tell it this one needs no re-load.
    tok.init_kwargs.update(name_or_path="tiny-char", add_bos_token=True)
    tok.padding_side = "left"
    return tok


def tiny_config(kind: str = "llama", **overrides) -> HookedTransformerConfig:
    """``llama``: RMSNorm, rotary, gated MLP, GQA. ``gpt2``: LayerNorm, learned positions."""
    vocab = len(char_tokenizer())
    common = dict(
        d_model=64,
        n_layers=3,
        n_ctx=256,
        d_head=16,
        n_heads=4,
        d_vocab=vocab,
        seed=0,
        model_name=f"tiny-{kind}",
        dtype=torch.float32,
        # the unit suite runs on another device with INTERP_STEER_TEST_DEVICE=cuda
        device=os.environ.get("INTERP_STEER_TEST_DEVICE", "cpu"),
    )
    if kind == "llama":
        cfg = dict(
            common,
            d_mlp=128,
            act_fn="silu",
            normalization_type="RMS",
            positional_embedding_type="rotary",
            rotary_dim=16,
            gated_mlp=True,
            n_key_value_heads=2,
            final_rms=True,
            default_prepend_bos=True,
        )
    elif kind == "gpt2":
        cfg = dict(
            common,
            d_mlp=256,
            act_fn="gelu_new",
            normalization_type="LN",
            positional_embedding_type="standard",
            default_prepend_bos=True,
        )
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    cfg.update(overrides)
    return HookedTransformerConfig(**cfg)


def tiny_model(kind: str = "llama", seed: int = 0, **overrides) -> HookedTransformer:
    cfg = tiny_config(kind, seed=seed, **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, char_tokenizer(), default_padding_side="left")
    # Random init leaves a tiny residual; scale embeddings up so steering has visible effects.
    with torch.no_grad():
        model.embed.W_E.mul_(20.0)
    model.eval()
    return patch_fast_forward(model)


@contextmanager
def _grad_disabled():
    prev = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        yield
    finally:
        torch.set_grad_enabled(prev)


# The autograd modes a notebook may leave on; everything public must behave the same in each.
AUTOGRAD_MODES = {
    "grad": nullcontext,
    "set_grad_enabled(False)": _grad_disabled,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


# The steering-window study's smallest configuration, for tests on a tiny random model:
# ``analyses.steering_window.Config.quick_config(**TINY_WINDOW)``. A random model knows no
# fact, so the knowledge threshold is 0 and the pipeline runs on the first fact anyway.
TINY_WINDOW = dict(
    models=["tiny"],
    known_threshold=0.0,
    rel_strengths=[0.5, 2.0],
    samples=2,
    code_tasks=2,
    code_samples=1,
    screen_samples=1,
    answer_tokens=4,
    code_tokens=8,
    n_boot=100,
)


class EmbedOnce:
    """MiniLM that embeds each distinct text once, for tests that run an analysis and then
    recompute its numbers: both see the same embeddings, computed once."""

    def __init__(self):
        from interp_steer.eval.classifiers import MiniLM

        self.embed, self.seen = MiniLM(), {}

    def __call__(self, texts):
        import numpy as np

        new = sorted(set(texts) - self.seen.keys())
        if new:
            self.seen.update(zip(new, self.embed(new)))
        return np.stack([self.seen[t] for t in texts])


def git(repo, *args: str) -> str:
    """Run git in ``repo`` with a throwaway identity; its stdout, stripped (tests that build a
    small history, e.g. a pre-registration committed between code commits)."""
    import subprocess

    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
