"""The per-token capture path, the typical norm, and bfloat16 models end to end."""

import torch

from interp_steer import build_vector, generate
from interp_steer.activations import token_activations
from interp_steer.testing import tiny_model
from interp_steer.units import typical_norm

HOOK = "blocks.1.hook_resid_pre"


def test_token_activations_match_an_independent_forward(tiny):
    texts = ["hello there", "a much longer text than that", "hi"]
    got = token_activations(tiny, texts, HOOK, batch_size=2)
    want = []
    for t in texts:  # one unpadded text at a time, straight through TL
        _, cache = tiny.run_with_cache(tiny.to_tokens(t), names_filter=[HOOK])
        want.append(cache[HOOK][0, 1:])
    assert torch.allclose(got, torch.cat(want), atol=1e-4)
    assert len(token_activations(tiny, texts, HOOK, skip_first=False)) == len(got) + len(texts)


def test_typical_norm_is_the_median_without_the_first_token(llama):
    prompts = ["one prompt", "and another one"]
    from interp_steer.generation import format_prompts

    texts = format_prompts(llama, prompts, chat=True)  # these start with <bos> already
    norms = torch.cat(
        [
            llama.run_with_cache(llama.to_tokens(t, prepend_bos=False), names_filter=[HOOK])[1][
                HOOK
            ][0, 1:].norm(dim=-1)
            for t in texts
        ]
    )
    assert abs(typical_norm(llama, HOOK, prompts) - float(norms.median())) < 1e-3


def test_bfloat16_model_steers_and_generates_like_float32():
    """Parity bound: on the tiny model bf16 log-probs stay within 0.15 nats of fp32, and a
    steered greedy continuation is the same with and without the KV cache in bf16."""
    fp32 = tiny_model("llama")
    bf16 = tiny_model("llama").to(torch.bfloat16)
    tokens = fp32.to_tokens("the quick brown fox")
    with torch.no_grad():
        gap = (fp32(tokens).log_softmax(-1) - bf16(tokens).float().log_softmax(-1)).abs().max()
    assert gap < 0.15
    vec = build_vector(
        bf16, [("good happy", "bad sad"), ("great joy", "awful pain")], HOOK, progress=False
    )
    assert vec.directions.dtype == torch.float32  # vectors are stored in fp32 whatever the model
    kw = dict(vector=vec, alphas=[0.0, 2.0], max_new_tokens=6)
    cached = generate(bf16, ["hi", "hi"], **kw)
    assert cached == generate(bf16, ["hi", "hi"], use_cache=False, **kw)
    assert cached[0] != cached[1]  # the vector acts in bf16 too
