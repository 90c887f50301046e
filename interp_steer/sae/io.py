"""Saving and loading SAEs in sae-lens's own folder format, and the cached default SAE."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

from transformer_lens import HookedTransformer

from interp_steer._io import atomic_dir, write_json
from interp_steer.models import cache_dir
from interp_steer.sae.corpus import GenericCorpusConfig, generic_corpus_path, write_manifest
from interp_steer.sae.features import check_sae, import_sae_lens
from interp_steer.sae.training import SAETrainConfig, train
from interp_steer.vectors import check_hook, model_fingerprint

META_FILE = "interp_steer.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SUMS_FILE = "SHA256SUMS"
# Default SAEs trained by `make sae` ship here in float16 (see `ship`), so that
# `load_default` returns in seconds instead of training for an hour.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "saes"


def save(sae, path: str | Path, report: dict | None = None) -> Path:
    """Save in sae-lens's format (weights + cfg.json), plus our report, atomically."""

    def fill(tmp: Path) -> None:
        sae.save_model(tmp)
        if report is not None:
            write_json(tmp / META_FILE, report)
            manifest = (report.get("corpus") or {}).get("manifest")
            if manifest is not None:  # what the SAE was trained on, beside it
                write_manifest(tmp, manifest)

    return atomic_dir(path, fill)


def load(path_or_release: str | Path, sae_id: str | None = None, device: str = "cpu"):
    """An SAE from a sae-lens folder on disk, or from sae-lens's pretrained registry."""
    sl = import_sae_lens()
    p = Path(path_or_release)
    if p.exists():
        if not (p / "cfg.json").exists():
            raise FileNotFoundError(f"{p} is not a sae-lens SAE folder (no cfg.json)")
        return sl.SAE.load_from_disk(p, device=device)
    if sae_id is None:
        raise FileNotFoundError(
            f"{p} does not exist; for a pretrained SAE pass a release and sae_id"
        )
    try:
        return sl.SAE.from_pretrained(str(path_or_release), sae_id, device=device)
    except Exception as e:  # hub errors come in many types
        raise RuntimeError(
            f"could not load SAE {path_or_release}/{sae_id} from the sae-lens registry "
            f"(is the Hugging Face hub reachable?): {e}"
        ) from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ship(path: str | Path, dest: str | Path) -> Path:
    """Copy a saved SAE into ``dest`` in float16, with sha256 sums.

    Args:
        path: a folder written by `save` (a cached default SAE).
        dest: the shipped folder; `shipped_path` is where `load_default` looks.
    """
    from safetensors.torch import load_file, save_file

    path, dest = Path(path), Path(dest)
    names = [n for n in ("cfg.json", META_FILE, "corpus_manifest.json") if (path / n).exists()]

    def fill(tmp: Path) -> None:
        weights = load_file(path / WEIGHTS_FILE)
        save_file({k: v.half().contiguous() for k, v in weights.items()}, tmp / WEIGHTS_FILE)
        for n in names:
            shutil.copyfile(path / n, tmp / n)
        sums = {n: _sha256(tmp / n) for n in [WEIGHTS_FILE, *names]}
        (tmp / SUMS_FILE).write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))

    # build beside it, then swap: a failure leaves the old copy in place
    shutil.rmtree(dest.with_name(dest.name + ".new"), ignore_errors=True)
    staged = atomic_dir(dest.with_name(dest.name + ".new"), fill)
    if dest.exists():
        old = dest.with_name(dest.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        staged.rename(dest)
        shutil.rmtree(old)
    else:
        staged.rename(dest)
    return dest


def unship(shipped: str | Path, path: str | Path) -> Path:
    """Check a shipped SAE's sha256 sums and write it to ``path`` in float32."""
    from safetensors.torch import load_file, save_file

    shipped = Path(shipped)
    if not (shipped / SUMS_FILE).exists():
        raise ValueError(f"shipped SAE {shipped} has no {SUMS_FILE}: reinstall the package")
    sums = {}
    for line in (shipped / SUMS_FILE).read_text().splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"shipped SAE {shipped}: malformed {SUMS_FILE} line {line!r}")
        sums[name] = digest
    missing = {WEIGHTS_FILE, "cfg.json"} - set(sums)
    if missing:
        raise ValueError(f"shipped SAE {shipped}: {SUMS_FILE} does not cover {sorted(missing)}")
    for name, want in sums.items():
        if _sha256(shipped / name) != want:
            raise ValueError(f"shipped SAE {shipped}: {name} does not match its sha256")

    def fill(tmp: Path) -> None:
        weights = load_file(shipped / WEIGHTS_FILE)
        save_file({k: v.float().contiguous() for k, v in weights.items()}, tmp / WEIGHTS_FILE)
        for name in sums:
            if name != WEIGHTS_FILE:
                shutil.copyfile(shipped / name, tmp / name)
        if (tmp / META_FILE).exists():  # say what these weights are
            report = json.loads((tmp / META_FILE).read_text())
            report["weights"] = f"float16 as shipped in {shipped.name}, upcast to float32"
            write_json(tmp / META_FILE, report)

    return atomic_dir(path, fill)


def report_of(path: str | Path) -> dict | None:
    f = Path(path) / META_FILE
    return json.loads(f.read_text()) if f.exists() else None


def default_hook(model: HookedTransformer) -> str:
    return f"blocks.{model.cfg.n_layers // 2}.hook_resid_pre"


def default_path(
    model: HookedTransformer,
    hook: str | None = None,
    config: SAETrainConfig | None = None,
    corpus_config: GenericCorpusConfig | None = None,
) -> Path:
    """Where `load_default` caches the SAE trained with ``config`` on the generic corpus
    built with ``corpus_config``."""
    hook = hook or default_hook(model)
    cfg = config or SAETrainConfig()
    # the generic corpus's key covers its config, the model and the source packages' versions
    blob = json.dumps(
        [
            model_fingerprint(model),
            hook,
            # the unset parameter at its old default keeps keys of existing caches unchanged
            {**asdict(cfg), "k": cfg.k or 64, "l1_coefficient": cfg.l1_coefficient or 5.0},
            generic_corpus_path(model, corpus_config).name,
        ]
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    name = model.cfg.model_name.replace("/", "_")
    return cache_dir() / "sae" / f"{name}-{hook}-{cfg.architecture}-{key}"


def shipped_path(
    model: HookedTransformer,
    hook: str | None = None,
    config: SAETrainConfig | None = None,
    corpus_config: GenericCorpusConfig | None = None,
) -> Path:
    """Where the default SAE for these settings ships in the package (it may not exist).

    Keyed like `default_path` except for the corpus: by its config, not by the versions of
    the installed packages it was read from, so a shipped SAE serves every environment."""
    hook = hook or default_hook(model)
    cfg = config or SAETrainConfig()
    blob = json.dumps(
        [
            model_fingerprint(model),
            hook,
            {**asdict(cfg), "k": cfg.k or 64, "l1_coefficient": cfg.l1_coefficient or 5.0},
            asdict(corpus_config or GenericCorpusConfig()),
        ],
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    name = model.cfg.model_name.replace("/", "_")
    return SHIPPED_DIR / f"{name}-{hook}-{cfg.architecture}-{key}"


def _load_cached(model: HookedTransformer, path: Path, then: str):
    """The SAE cached at ``path``, or None when there is none or it no longer loads (then it
    is removed, with a warning that names what happens next)."""
    if not path.exists():
        return None
    try:
        sae = load(path, device=str(model.cfg.device))
        check_sae(model, sae)
        return sae
    except Exception as e:  # a damaged cache: say so, then rebuild it
        warnings.warn(
            f"cached SAE {path} is unreadable ({type(e).__name__}: {e}); {then} it", stacklevel=3
        )
        shutil.rmtree(path, ignore_errors=True)
        return None


def load_default(
    model: HookedTransformer,
    hook: str | None = None,
    config: SAETrainConfig | None = None,
    progress=True,
    corpus_config: GenericCorpusConfig | None = None,
):
    """The default SAE for ``model`` at ``hook`` (trained with ``config`` on the generic
    corpus built with ``corpus_config``), training and caching it first if needed.

    A cached SAE that no longer loads (truncated weights, a missing config) is rebuilt, with a
    warning. With ``$INTERP_STEER_NO_SAE_TRAINING`` set (the test suite sets it), a call that
    would train raises instead."""
    hook = hook or default_hook(model)
    check_hook(model, hook)
    path = default_path(model, hook, config, corpus_config)
    shipped = shipped_path(model, hook, config, corpus_config)
    if not path.exists() and shipped.exists():
        unship(shipped, path)
    sae = _load_cached(model, path, "unshipping" if shipped.exists() else "retraining")
    if sae is None and shipped.exists():  # a damaged cache of a shipped SAE: unship it again
        unship(shipped, path)
        sae = _load_cached(model, path, "retraining")
    if sae is not None:
        return sae
    if os.environ.get("INTERP_STEER_NO_SAE_TRAINING"):
        # set by the test suite: an hour of training must fail there, not stall the run
        raise RuntimeError(
            f"no cached or shipped SAE for {model.cfg.model_name} at {hook} (looked in {path} "
            f"and {shipped}), and INTERP_STEER_NO_SAE_TRAINING is set: training refused"
        )
    print(
        f"interp_steer: no cached SAE for {model.cfg.model_name} at {hook}; training one "
        f"with sae-lens (the generic corpus's activations and training take about an hour on a 2-core CPU for SmolLM2), cached in {path}"
    )
    sae, report = train(model, hook, config=config, progress=progress, corpus_config=corpus_config)
    save(sae, path, report)
    sae = load(path, device=str(model.cfg.device))
    check_sae(model, sae)
    return sae
