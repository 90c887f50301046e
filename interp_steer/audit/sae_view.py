"""The audit's SAE section: the vector's top latents with their top-activating contexts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformer_lens import HookedTransformer

from interp_steer.audit.sections import Context


@torch.no_grad()
def sae_view(ctx: Context, sae, texts: Sequence[str]) -> dict:
    """The vector's top SAE latents by decoder cosine and by encoder gain, each with its
    activation histogram and top-activating contexts from ``texts``."""
    from interp_steer import sae as S
    from interp_steer.activations import capture

    model, vec, cfg = ctx.model, ctx.vector, ctx.cfg
    if S.sae_hook(sae) != vec.hook:
        return {
            "available": False,
            "verdict": f"the SAE reads {S.sae_hook(sae)}, the vector acts at {vec.hook}",
        }
    from interp_steer.activations import encode

    # each text cut to 128 tokens (and the model's context): the contexts shown are short
    limit = min(128, model.cfg.n_ctx)
    ids = [encode(model, t)[:limit] for t in texts]
    ids = [x for x in ids if len(x) > 1]
    acts, where, start = [], [], 0
    for batch, cap, keep in capture(model, ids, vec.hook, 8, 1, False):
        for j in range(keep.shape[0]):
            real = torch.nonzero(keep[j]).flatten()
            acts.append(cap[vec.hook][j][real].float())
            pad = int(batch.pad[j])
            where += [(start + j, int(k) - pad) for k in real]
        start += keep.shape[0]
    x = torch.cat(acts)
    ranked = S.decompose(sae, vec, x, top=cfg.sae_top)
    feats = sae.encode(x.to(sae.W_dec.device)).float().cpu()
    latents = []
    for kind in ("by_decoder_cosine", "by_encoder_gain"):
        for item in ranked.get(kind, []):
            f = item["feature"]
            if any(lt["feature"] == f for lt in latents):
                continue
            a = feats[:, f]
            top = torch.topk(a, min(5, len(a))).indices.tolist()
            contexts = []
            for i in top:
                row, pos = where[i]
                contexts.append(_context(model, ids[row], pos, float(a[i])))
            latents.append(
                {
                    "feature": f,
                    "ranked_by": kind,
                    "cosine": item["cosine"],
                    "gain": item.get("gain"),
                    "fire_rate": float((a > 0).float().mean()),
                    "histogram": np.histogram(a[a > 0].numpy(), bins=12)[0].tolist()
                    if (a > 0).any()
                    else [],
                    "top_contexts": contexts,
                }
            )
    best = ranked["by_decoder_cosine"][0]
    return {
        "available": True,
        "d_sae": int(sae.cfg.d_sae),
        "n_tokens": int(len(x)),
        "latents": latents,
        "verdict": (
            f"top latent by decoder cosine: {best['feature']} (cos {best['cosine']:.2f}); "
            f"{len(latents)} latents shown with their top contexts"
        ),
    }


def _context(model: HookedTransformer, ids: list[int], pos: int, value: float) -> dict:
    """The tokens around ``pos`` with the one that activates marked."""
    lo, hi = max(0, pos - 8), min(len(ids), pos + 4)
    dec = [model.tokenizer.decode([t]) for t in ids[lo:hi]]
    k = pos - lo
    return {
        "before": "".join(dec[:k]),
        "token": dec[k] if k < len(dec) else "",
        "after": "".join(dec[k + 1 :]),
        "activation": value,
    }
