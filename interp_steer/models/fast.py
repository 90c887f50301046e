"""Copy-free forward passes for TransformerLens 3.9 modules, patched per model instance.

TL 3.9 rebuilds weight layouts on every forward: the gated MLP and unembed run
``W.T.contiguous()``, attention rearranges W_Q/W_K/W_V/W_O into fresh tensors, and the
pattern is formed explicitly. Profiling SmolLM2 generation put those copies at over half of
each decode step. The replacements below do the same maths and fire the same hooks:

- gated MLP / unembed: plain matmuls against the stored weights (no copy).
- attention Q/K/V: one GEMM against a packed [(q|k|v) heads*d_head, d_model] weight that is
  rebuilt only when a weight's version counter changes (so in-place edits are seen).
- RMSNorm: torch's fused ``F.rms_norm`` unless its hooks are in use.
- KV cache: appends into a preallocated buffer instead of concatenating every step.
- transformer block: ln1 once instead of three times (TL normalises q, k, v inputs apart),
  so the packed QKV GEMM applies (QK-norm, where the model has it, runs after it as in TL).
- attention core: ``F.scaled_dot_product_attention`` whenever nothing listens on
  ``hook_attn_scores`` or ``hook_pattern`` (run_with_cache on those hooks, or a user hook,
  falls back to TL's explicit path, so the hooks still see real patterns). Model variants
  we do not cover (soft-capping, local windows, QK-norm, ALiBi, ...) always use TL's path.
- GEMMs: through `interp_steer.models.gemm.FrozenLinear` (oneDNN-packed or ``F.linear``,
  whichever this machine runs faster per shape).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F  # noqa: N812
from transformer_lens import HookedTransformer
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES

from interp_steer.models.gemm import FrozenLinear, packable


def _versioned(self, name: str, params: tuple, build):
    """``build(pack)`` cached on the modules' parameter versions; rebuilt after in-place edits."""
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return build(False)  # keep autograd through the weights
    # a dtype/device move or a re-assignment gives a new storage, so data_ptr covers those
    key = tuple((p.data_ptr(), p._version) for p in params)
    cached = self.__dict__.get(name)
    if cached is None or cached[0] != key:
        # built outside inference mode so a later forward with gradients may use them
        with torch.inference_mode(False), torch.no_grad():
            cached = (key, build(True))
        self.__dict__[name] = cached
    return cached[1]


def _gated_mlp_forward(self, x):
    if self.cfg.is_layer_norm_activation():
        return type(self).forward(self, x)

    def build(pack):
        # F.linear's [out, in] layout (what HF streams, measured faster for small batches),
        # gate and in stacked into one [2*d_mlp, d_model] GEMM (one weight stream per layer);
        # biases that are exactly zero (Llama-style) are dropped to save two adds per layer.
        w_gate_in = torch.cat([self.W_gate.T, self.W_in.T]).contiguous()
        b_in = None if not self.b_in.any() else self.b_in
        b_out = None if not self.b_out.any() else self.b_out
        return (
            FrozenLinear(w_gate_in, None, pack),
            FrozenLinear(self.W_out.T.contiguous(), b_out, pack),
            b_in,
        )

    gate_in, out, b_in = _versioned(
        self, "_fast_mlp", (self.W_gate, self.W_in, self.W_out, self.b_in, self.b_out), build
    )
    gate, lin = gate_in(x).chunk(2, dim=-1)
    pre_act = self.hook_pre(gate)
    pre_linear = self.hook_pre_linear(lin)
    post = self.act_fn(pre_act) * pre_linear
    post_act = self.hook_post(post if b_in is None else post + b_in)
    return out(post_act)


def _unembed_forward(self, residual):
    def build(pack):
        b_u = None if not self.b_U.any() else self.b_U
        if pack and packable(self.W_U):
            return FrozenLinear(self.W_U.T.contiguous(), b_u, pack)
        # without oneDNN, x @ W_U in the stored layout (a transposed view, no copy)
        return FrozenLinear(self.W_U.T, b_u)

    x = self.hook_in(residual)
    return self.hook_out(_versioned(self, "_fast_unembed", (self.W_U, self.b_U), build)(x))


def _attn_weights(self):
    """Packed QKV linear, W_O linear, and the number of K/V heads.

    Biases that are exactly zero (Llama-style) come back as None to skip the add.
    """
    grouped = hasattr(self, "_W_K") and not self.cfg.ungroup_grouped_query_attention
    wk, bk = (self._W_K, self._b_K) if grouped else (self.W_K, self.b_K)
    wv, bv = (self._W_V, self._b_V) if grouped else (self.W_V, self.b_V)

    def build(pack):
        def qkv(w):  # [heads, d_model, d_head] -> [(heads d_head), d_model], F.linear layout
            return w.permute(0, 2, 1).reshape(-1, w.shape[1])

        w = torch.cat([qkv(self.W_Q), qkv(wk), qkv(wv)])
        b = torch.cat([self.b_Q.reshape(-1), bk.reshape(-1), bv.reshape(-1)])
        w_o = self.W_O.reshape(-1, self.W_O.shape[-1]).T.contiguous()  # [d_model, heads*d_head]
        b_o = None if not self.b_O.any() else self.b_O
        return (
            FrozenLinear(w, None if not b.any() else b, pack),
            FrozenLinear(w_o, b_o, pack),
            wk.shape[0],
        )

    params = (self.W_Q, self.b_Q, wk, bk, wv, bv, self.W_O, self.b_O)
    return _versioned(self, "_fast_attn", params, build)


def _fast_qkv(self, query_input, key_input, value_input):
    if (
        self.cfg.use_split_qkv_input
        or self.cfg.use_attn_in
        or getattr(self.cfg, "load_in_4bit", False)
        or query_input.ndim != 3
        or not (query_input is key_input is value_input)
    ):
        return type(self).calculate_qkv_matrices(self, query_input, key_input, value_input)
    qkv_linear, _, n_kv = _attn_weights(self)
    bsz, pos, _ = query_input.shape
    h, dh = self.cfg.n_heads, self.cfg.d_head
    qkv = qkv_linear(query_input)
    q, k, v = qkv.split([h * dh, n_kv * dh, n_kv * dh], dim=-1)
    q = self.hook_q(q.view(bsz, pos, h, dh))
    k = self.hook_k(k.view(bsz, pos, n_kv, dh))
    v = self.hook_v(v.view(bsz, pos, n_kv, dh))
    if self.cfg.use_qk_norm:  # Gemma 3, Qwen 3: per-head norms after the hooks, as TL does
        q = self._apply_qk_norm(q, self.q_norm)
        k = self._apply_qk_norm(k, self.k_norm)
    return q, k, v


def _plain_attention(cfg) -> bool:
    return (
        cfg.positional_embedding_type in ("rotary", "standard")
        and cfg.attention_dir == "causal"
        and not cfg.use_attn_result
        and not cfg.use_local_attn
        and not cfg.use_qk_norm
        and not cfg.use_logn_attn
        and not cfg.use_dynamic_ntk_rope
        and not getattr(cfg, "use_attention_sinks", False)
        and getattr(cfg, "clip_qkv", None) is None
        and cfg.attn_scores_soft_cap <= 0
        and cfg.original_architecture
        not in ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
    )


class _Layout:
    """Per-forward attention layout (positions, rotary cos/sin, mask), shared by all layers.

    Every layer of one forward gets the same attention_mask object, offset and lengths, so
    the layout is built once per forward, not once per layer. The slot holds a reference to
    the mask, so an identity match really is the same tensor.
    """

    key: tuple | None = None
    mask_ref = None
    value: tuple | None = None


_LAYOUT = _Layout()


def _layout(self, offset: int, pq: int, pk: int, attention_mask, device, dtype):
    cfg = self.cfg
    rotary = cfg.positional_embedding_type == "rotary"
    if rotary:
        need = offset + pq if attention_mask is None else int(attention_mask.shape[1])
        if need > self.rotary_cos.shape[0]:
            self._extend_rotary_embeddings(min(cfg.n_ctx, max(need, 2 * self.rotary_cos.shape[0])))
    key = (
        offset,
        pq,
        pk,
        str(device),
        dtype,
        rotary,
        cfg.rotary_base,
        cfg.rotary_dim,
        self.rotary_cos.shape[0] if rotary else 0,
    )
    if _LAYOUT.key == key and _LAYOUT.mask_ref is attention_mask:
        return _LAYOUT.value
    if attention_mask is None:
        pos_ids = torch.arange(offset, offset + pq, device=device)[None]
    else:
        # as TL's get_offset_position_ids: count real tokens, so left padding does not shift
        ids = attention_mask.cumsum(1) - 1
        pos_ids = ids.masked_fill(ids < 0, 0)[:, offset : offset + pq].to(device)
    cos = sin = None
    if rotary:
        cos = self.rotary_cos[pos_ids][:, :, None, :].to(dtype)
        sin = self.rotary_sin[pos_ids][:, :, None, :].to(dtype)
    kpos = torch.arange(pk, device=device)
    qpos = offset + torch.arange(pq, device=device)
    allowed = kpos[None, :] <= qpos[:, None]  # [pq, pk]
    if attention_mask is not None:
        allowed = allowed[None] & attention_mask[:, None, :].bool().to(device)
        # a padding query sees no key; let it see itself so SDPA stays finite (TL zeroes it;
        # no real token reads a padding position, so real outputs are unaffected)
        allowed = (allowed | (kpos[None, :] == qpos[:, None])[None])[:, None]  # [b,1,pq,pk]
    _LAYOUT.key, _LAYOUT.mask_ref, _LAYOUT.value = key, attention_mask, (cos, sin, allowed)
    return _LAYOUT.value


def _rotate(self, x, cos, sin):
    """Rotary embedding of x [b, p, heads, d_head] given cos/sin [b|1, p, 1, rotary_dim]."""
    rd = self.cfg.rotary_dim
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    if self.cfg.rotary_adjacent_pairs:
        flip = torch.stack([-x_rot[..., 1::2], x_rot[..., ::2]], -1).flatten(-2)
    else:
        half = rd // 2
        flip = torch.cat([-x_rot[..., half:], x_rot[..., :half]], -1)
    out = x_rot * cos + flip * sin
    return torch.cat([out, x_pass], -1) if x_pass.shape[-1] else out


def _append_kv(entry, k, v):
    """Append to a TL cache entry through a preallocated, geometrically grown buffer.

    TL's entry.append concatenates the whole cache every step; here the entry's
    past_keys/past_values become views of a buffer, so TL's offset bookkeeping still works.
    """
    if entry.frozen:
        return entry.append(k, v)
    n0, n1 = entry.past_keys.shape[1], entry.past_keys.shape[1] + k.shape[1]
    buf = entry.__dict__.get("_interp_steer_buf")
    if (
        buf is None
        or buf[0].shape[1] < n1
        or entry.past_keys.data_ptr() != buf[0].data_ptr()
        or buf[0].shape[0] != k.shape[0]
    ):
        cap = max(2 * n1, 64)
        bk = k.new_empty(k.shape[0], cap, *k.shape[2:])
        bv = v.new_empty(v.shape[0], cap, *v.shape[2:])
        bk[:, :n0], bv[:, :n0] = entry.past_keys, entry.past_values
        buf = entry.__dict__["_interp_steer_buf"] = (bk, bv)
    bk, bv = buf
    bk[:, n0:n1], bv[:, n0:n1] = k, v
    entry.past_keys, entry.past_values = bk[:, :n1], bv[:, :n1]
    return entry.past_keys, entry.past_values


def _fast_attention_forward(
    self,
    query_input,
    key_input,
    value_input,
    past_kv_cache_entry=None,
    additive_attention_mask=None,
    attention_mask=None,
    position_bias=None,
):
    raw_cache = (
        past_kv_cache_entry is not None
        and past_kv_cache_entry.past_keys.numel() > 0
        and not getattr(past_kv_cache_entry, "_rotated_by_interp_steer", False)
    )
    if (
        raw_cache  # a cache TL's own path started holds un-rotated keys: stay on that path
        or additive_attention_mask is not None
        or position_bias is not None
        or self.hook_attn_scores._forward_hooks
        or self.hook_pattern._forward_hooks
        or self.hook_attn_scores.fwd_hooks
        or self.hook_pattern.fwd_hooks
    ):
        if getattr(past_kv_cache_entry, "_rotated_by_interp_steer", False):
            raise RuntimeError(
                "an attention-pattern hook was added in the middle of a cached generation "
                "that interp_steer's fast path started; add it before generation begins"
            )
        return type(self).forward(
            self,
            query_input,
            key_input,
            value_input,
            past_kv_cache_entry,
            additive_attention_mask,
            attention_mask,
            position_bias,
        )
    if past_kv_cache_entry is not None and not past_kv_cache_entry.past_keys.numel():
        past_kv_cache_entry._rotated_by_interp_steer = True
    q, k, v = self.calculate_qkv_matrices(query_input, key_input, value_input)
    offset = 0 if past_kv_cache_entry is None else past_kv_cache_entry.past_keys.size(1)
    pq = q.shape[1]
    cos, sin, allowed = _layout(self, offset, pq, offset + pq, attention_mask, q.device, q.dtype)
    if cos is not None:
        # Rotate only the new keys and cache them rotated; TL caches raw keys and re-rotates
        # the whole cache at every step.
        q = self.hook_rot_q(_rotate(self, q, cos, sin))
        k = self.hook_rot_k(_rotate(self, k, cos, sin))
    if past_kv_cache_entry is not None:
        k, v = _append_kv(past_kv_cache_entry, k, v)
    z = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2).to(q.dtype),
        v.transpose(1, 2).to(q.dtype),
        attn_mask=allowed,
        scale=1.0 / float(self.attn_scale),
        enable_gqa=k.shape[2] != q.shape[2],
    )
    z = self.hook_z(z.transpose(1, 2))  # [b, pq, heads, d_head]
    return _attn_weights(self)[1](z.reshape(z.shape[0], pq, -1))


def _rms_norm_forward(self, x):
    # fused kernel unless something listens on the norm's own hooks
    if (
        self.hook_scale._forward_hooks
        or self.hook_normalized._forward_hooks
        or (x.dtype not in (torch.float32, torch.float64))
    ):
        return type(self).forward(self, x)
    return F.rms_norm(x, (x.shape[-1],), self.w, self.eps)


def _plain_block(cfg) -> bool:
    return (
        not cfg.use_attn_in
        and not cfg.use_split_qkv_input
        and not cfg.parallel_attn_mlp
        and not cfg.attn_only
        and not cfg.use_hook_mlp_in
        and cfg.original_architecture not in POST_NORM_ARCHITECTURES
    )


def _fast_block_forward(
    self, resid_pre, shortformer_pos_embed=None, past_kv_cache_entry=None, attention_mask=None
):
    if shortformer_pos_embed is not None:
        return type(self).forward(
            self, resid_pre, shortformer_pos_embed, past_kv_cache_entry, attention_mask
        )
    # TL normalises the same residual three times (for q, k and v inputs); once is enough.
    resid_pre = self.hook_resid_pre(resid_pre)
    x = self.ln1(resid_pre)
    attn_out = self.attn(
        query_input=x,
        key_input=x,
        value_input=x,
        past_kv_cache_entry=past_kv_cache_entry,
        attention_mask=attention_mask,
    )
    if self.cfg.use_normalization_before_and_after:  # Gemma 2/3: norms after attn and MLP
        attn_out = self.ln1_post(attn_out)
    resid_mid = self.hook_resid_mid(resid_pre + self.hook_attn_out(attn_out))
    # TL's apply_mlp: the MLP, ln2_post where the model has one, then hook_mlp_out
    return self.hook_resid_post(resid_mid + self.apply_mlp(self.ln2(resid_mid)))


def patch_fast_forward(model: HookedTransformer) -> HookedTransformer:
    """Swap in the copy-free forwards above, in place, where the model's config allows."""
    from transformer_lens.components import RMSNorm, Unembed
    from transformer_lens.components.abstract_attention import AbstractAttention
    from transformer_lens.components.mlps.gated_mlp import GatedMLP
    from transformer_lens.components.transformer_block import TransformerBlock

    plain = _plain_attention(model.cfg)
    for mod in model.modules():
        if type(mod) is TransformerBlock and _plain_block(model.cfg):
            mod.forward = types.MethodType(_fast_block_forward, mod)
        elif type(mod) is GatedMLP:
            mod.forward = types.MethodType(_gated_mlp_forward, mod)
        elif type(mod) is RMSNorm:
            mod.forward = types.MethodType(_rms_norm_forward, mod)
        elif type(mod) is Unembed:
            mod.forward = types.MethodType(_unembed_forward, mod)
        elif isinstance(mod, AbstractAttention) and type(mod).__name__ in (
            "Attention",
            "GroupedQueryAttention",
        ):
            mod.calculate_qkv_matrices = types.MethodType(_fast_qkv, mod)
            if plain:
                mod.forward = types.MethodType(_fast_attention_forward, mod)
    return model
