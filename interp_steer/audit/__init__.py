"""`audit`: one report that tells a practitioner whether a steering vector can be trusted.

Five sections, each reusing the project's own modules and each with CIs and a one-line
verdict: where the vector acts (a per-token trace from the real KV-cached passes), the
dose–response and viable window, identifiability (null-space share, efficacy kept under
orthogonal δ), side effects at the operating point (misalignment judge, capability, KL) and
an SAE view (top latents with their top-activating contexts) when an SAE exists for the hook.

``ist.audit(model, vector)`` returns an `AuditReport`; ``report.save("report/")`` writes
``index.html`` (one self-contained file), ``audit.json`` and the figures. With ``out=``,
every section is a resumable cell under ``out/.cells/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp_steer import datasets
from interp_steer._io import atomic_path, write_json, write_text
from interp_steer.audit import report as R
from interp_steer.audit import sections as S
from interp_steer.audit.config import AuditConfig
from interp_steer.audit.sae_view import sae_view
from interp_steer.eval.classifiers import SuccessScorer, success_scorer
from interp_steer.eval.coherence import coherence_measure
from interp_steer.runs.cells import cell, config_hash
from interp_steer.runs.provenance import code_version
from interp_steer.units import typical_norm
from interp_steer.vectors import SteeringVector, check_hook, model_fingerprint

__all__ = ["AuditConfig", "AuditReport", "audit"]


@dataclass
class AuditReport:
    """The audit's numbers (``data``, what ``audit.json`` holds) and its figures (PNG, base64)."""

    data: dict
    figures: dict[str, str]

    @property
    def verdicts(self) -> dict[str, str]:
        return {k: v["verdict"] for k, v in self.data["sections"].items()}

    def html(self) -> str:
        return R.render_html(self.data, self.figures)

    def save(self, out: str | Path) -> Path:
        """Write ``index.html``, ``audit.json`` and one PNG per figure into ``out``; returns
        the HTML's path."""
        import base64

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "audit.json", self.data)
        for name, b64 in self.figures.items():
            with atomic_path(out / f"{name}.png") as tmp:
                Path(tmp).write_bytes(base64.b64decode(b64))
        write_text(out / "index.html", self.html())
        return out / "index.html"


def _trait(vector: SteeringVector) -> str | None:
    """The shipped dataset a vector was built from ("sentiment:train" -> "sentiment")."""
    name = str(vector.metadata.get("dataset") or "").split(":")[0]
    return name if name in datasets.available() else None


def _success(vector: SteeringVector, success) -> tuple[Callable | None, str | None]:
    if success is None:
        trait = _trait(vector)
        # weddings has no validated classifier (its probe has no held-out check)
        if trait is not None and trait != "weddings":
            return success_scorer(trait), f"the {trait} classifier (from the vector's dataset)"
        return None, None
    if isinstance(success, str):
        return SuccessScorer(success), success
    if not callable(success):
        raise TypeError(f"success must be a measure name or a callable, got {success!r:.80}")
    return success, getattr(success, "name", type(success).__name__)


def _prompts(vector: SteeringVector, prompts: Sequence[str] | None, n: int) -> list[str]:
    if prompts is None:
        trait = _trait(vector)
        if trait is not None:
            prompts = datasets.load(trait).prompts
        else:
            prompts = datasets.read_data("prompt_sets")["general"]
    prompts = list(prompts)[:n]
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("the prompt set is empty (or holds an empty prompt): pass prompts=")
    return prompts


def _sae(model: HookedTransformer, hook: str, sae):
    """The SAE to read (given, or the cached default for the hook), or (None, why not)."""
    from interp_steer import sae as SA

    if sae is False:
        return None, "skipped (sae=False)"
    if sae is not None:
        return sae, None
    path = SA.default_path(model, hook)
    if (path / "cfg.json").exists() or (path / "sae_weights.safetensors").exists():
        return SA.load(path), None
    return None, (
        f"no SAE for {hook}: train the default one with `interp-steer sae-train` "
        "(or pass sae=) and rerun; the other sections do not need it"
    )


def audit(
    model: HookedTransformer,
    vector: SteeringVector,
    config: AuditConfig | None = None,
    prompts: Sequence[str] | None = None,
    success: str | Callable | None = None,
    coherence: str | Callable = "model-text",
    judge: Callable | None = None,
    sae=None,
    out: str | Path | None = None,
    progress: bool = True,
) -> AuditReport:
    """Audit ``vector`` on ``model``.

    Args:
        model: the model the vector was built for (another model's vector raises).
        vector: a single-direction `SteeringVector`, used as given (negate it to audit the
            other direction).
        config: sizes and grids (`AuditConfig`; `AuditConfig.quick()` for minutes).
        prompts: open prompts to steer; default: the vector's dataset's, else the shipped
            general set.
        success: a measure name (``vader``, ``trait:NAME``, ``contains:A,B``) or a callable
            texts -> scores in [0, 1]; default: the vector's dataset's classifier, if any.
        coherence: ``"model-text"`` (the measure validated on blind-labelled model text),
            ``"fluency"`` (`metrics.coherence`, fast but known to pass salad) or a callable
            (prompts, texts) -> [0, 1].
        judge: the misalignment judge, ``(questions, answers) -> (aligned 0-100, coherent)``;
            default: `EmbeddingJudge` (trained on the shipped labels when first needed).
        sae: an sae-lens SAE at the vector's hook; default: the cached default SAE if there
            is one; False skips the section.
        out: a folder for resumable cells and the report (``report.save(out)``).
        progress: show a progress bar over the sections.
    """
    cfg = config or AuditConfig()
    if not isinstance(vector, SteeringVector):
        raise TypeError(f"vector must be a SteeringVector, got {type(vector).__name__}")
    if vector.directions.shape[0] != 1:
        raise ValueError(
            f"the audit takes one direction; this vector has {vector.directions.shape[0]}"
        )
    check_hook(model, vector.hook)
    if vector.model_fingerprint and vector.model_fingerprint != model_fingerprint(model):
        raise ValueError(
            f"this vector was built for another model (fingerprint {vector.model_fingerprint}, "
            f"this model's {model_fingerprint(model)}): audit it on the model it came from"
        )
    prompts = _prompts(vector, prompts, cfg.n_prompts)
    scorer, success_name = _success(vector, success)
    sae_obj, sae_missing = _sae(model, vector.hook, sae)
    norm = typical_norm(model, vector.hook, prompts)
    coh_fn, coh_name = coherence_measure(model, coherence)
    ctx = S.Context(
        model, vector, cfg, prompts, norm, scorer, success_name, coh_fn, coh_name, judge
    )
    judge_name = (
        getattr(judge, "name", "embedding_judge") if judge is not None else "embedding_judge"
    )
    key = (
        config_hash(cfg) + "-" + _digest(vector, prompts, f"{success_name}|{coh_name}|{judge_name}")
    )
    cells = Path(out) / ".cells" / key if out is not None else None

    def run(name: str, fn: Callable[[], dict]) -> dict:
        return cell(cells / f"{name}.json", fn) if cells is not None else fn()

    bar = tqdm(total=5, desc="audit", disable=not progress)
    dose = run("dose_response", lambda: S.dose_response(ctx))
    bar.update()
    r_op, why = S.choose_operating_r(ctx, dose)
    sections = {"trace": run("trace", lambda: S.trace(ctx, r_op))}
    bar.update()
    sections["dose_response"] = dose
    sections["identifiability"] = run("identifiability", lambda: S.identifiability(ctx, r_op))
    bar.update()
    sections["side_effects"] = run("side_effects", lambda: S.side_effects(ctx, r_op, dose))
    bar.update()
    if sae_obj is None:
        sections["sae_view"] = {"available": False, "verdict": sae_missing}
    else:
        texts = [t for ts in _eval_texts().values() for t in ts]
        sections["sae_view"] = run("sae_view", lambda: sae_view(ctx, sae_obj, texts))
    bar.update()
    bar.close()
    for s in sections.values():
        s.pop("_commit", None)
    data = {
        "model": model.cfg.model_name,
        "vector": {
            "name": _trait(vector) or vector.metadata.get("dataset") or vector.method,
            "hook": vector.hook,
            "method": vector.method,
            "norm": float(vector.norm()),
        },
        "typical_norm": norm,
        "operating_r": r_op,
        "operating_alpha": ctx.alpha(r_op),
        "operating_choice": why,
        "prompts": prompts,
        "config": asdict(cfg),
        "interp_steer": code_version(),
        "sections": sections,
    }
    figures = {
        "trace": R.png(R.trace_figure(sections["trace"])),
        "dose_response": R.png(R.dose_figure(dose)),
    }
    if any(p["retained"] for p in sections["identifiability"]["perturbations"]):
        figures["identifiability"] = R.png(R.identifiability_figure(sections["identifiability"]))
    report = AuditReport(data, figures)
    if out is not None:
        report.save(out)
    return report


def _digest(vector: SteeringVector, prompts: list[str], success_name: str | None) -> str:
    import hashlib

    h = hashlib.sha256(vector.directions.float().numpy().tobytes())
    h.update(json.dumps([vector.hook, prompts, success_name]).encode())
    return h.hexdigest()[:10]


def _eval_texts() -> dict[str, list[str]]:
    from interp_steer.sae.corpus import generic_eval_texts

    return generic_eval_texts()
