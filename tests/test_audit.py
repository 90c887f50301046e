"""`interp_steer.audit` on a tiny random model: every section, its numbers, resumable cells,
clear errors for bad input, and the HTML as a real browser (headless Chromium) renders it."""

import json
import math

import numpy as np
import pytest
import torch

import interp_steer.audit as audit_module
from interp_steer import build_vector
from interp_steer import sae as S
from interp_steer.audit import AuditConfig, audit
from interp_steer.audit import sections as sections_module
from interp_steer.audit.report import HEADINGS, dump_dom, screenshot
from interp_steer.eval.window import crossing, window
from interp_steer.sae.corpus.chat import plain_texts
from interp_steer.testing import SENTIMENT_PAIRS, tiny_model

HOOK = "blocks.1.hook_resid_pre"
PROMPTS = ["hello there", "the cat sat", "good day to you"]


def _cfg(**kw):
    small = dict(
        r_grid=(0.5, 2.0, 8.0),
        n_prompts=3,
        samples=2,
        max_new_tokens=6,
        code_tokens=8,
        em_samples=1,
        trace_tokens=4,
        n_boot=100,
        eps=(0.5, 1.0),
    )
    return AuditConfig.quick(**{**small, **kw})


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def vec(model):
    return build_vector(model, SENTIMENT_PAIRS, HOOK, progress=False)


@pytest.fixture(scope="module")
def small_sae(model):
    return S.train(
        model,
        HOOK,
        plain_texts()[:200],
        d_sae=128,
        k=8,
        training_tokens=20_000,
        batch_size=512,
        lr=3e-3,
        progress=False,
    )[0]


def _full_audit(model, vec, sae, out, judge):
    """Every section, the SAE view included. Coherence by fluency under the tiny model keeps
    it fast; the default (model-text) measure runs in notebooks/04_audit.ipynb."""
    return audit(
        model,
        vec,
        _cfg(positions="last_and_generated"),
        prompts=PROMPTS,
        success="contains:e",
        coherence="fluency",
        judge=judge,
        sae=sae,
        out=out,
        progress=False,
    )


@pytest.fixture(scope="module")
def report(model, vec, small_sae, embedding_judge, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    return _full_audit(model, vec, small_sae, out, embedding_judge), out


# ---------------------------------------------------------------- the window, by hand


def test_crossings_are_interpolated_on_log_r():
    r = [0.1, 0.2, 0.4, 0.8]
    # success 0.2 -> 0.6 between r = 0.2 and 0.4: level 0.5 is 3/4 of the way in log r
    assert crossing(r, [0.0, 0.2, 0.6, 0.9], 0.5) == pytest.approx(0.2 * 2**0.75)
    assert crossing(r, [0.6, 0.7, 0.8, 0.9], 0.5) == 0.1  # already there
    assert crossing(r, [0.0, 0.1, 0.2, 0.3], 0.5) is None  # never
    # capability 0.9, 0.8, 0.3, 0.1 against 0.45: last above between 0.2 and 0.4, at 0.7 of it
    assert crossing(r, [0.9, 0.8, 0.3, 0.1], 0.45, "down") == pytest.approx(0.2 * 2**0.7)
    # a dip and a recovery: "last before it falls for good" skips the dip
    assert crossing(r, [0.9, 0.3, 0.9, 0.1], 0.5, "down") == pytest.approx(0.4 * 2**0.5)
    assert crossing(r, [0.9, 0.9, 0.9, 0.9], 0.5, "down") == 0.8
    assert crossing(r, [0.1, 0.9, 0.9, 0.9], 0.5, "down") is None
    with pytest.raises(ValueError, match="positive and increasing"):
        crossing([0.0, 0.1], [0, 1], 0.5)


def test_window_from_the_two_crossings():
    r = [0.1, 0.2, 0.4, 0.8]
    w = window(r, [0.0, 0.2, 0.6, 0.9], [0.9, 0.9, 0.8, 0.1], baseline_capability=0.9)
    first, last = 0.2 * 2**0.75, 0.4 * 2 ** ((0.8 - 0.45) / 0.7)
    assert w["first_majority_r"] == pytest.approx(first)
    assert w["last_capable_r"] == pytest.approx(last)
    assert w["log_window"] == pytest.approx(math.log(last / first))
    assert w["working_strengths"] == 1  # only r = 0.4 lies inside
    # one working strength is a window, not 0 as a difference of grid points would say
    assert window(r, [0, 0, 0.6, 0.6], [0.9, 0.9, 0.9, 0.1], 0.9)["log_window"] > 0
    assert window(r, [0, 0, 0, 0], [0.9] * 4, 0.9)["log_window"] is None


# ---------------------------------------------------------------- the audit


def test_every_section_has_numbers_and_a_verdict(report):
    rep, out = report
    data = json.loads((out / "audit.json").read_text())
    assert set(data["sections"]) == set(HEADINGS)
    for name, section in data["sections"].items():
        assert isinstance(section["verdict"], str) and section["verdict"], name
    assert data["operating_r"] > 0 and data["interp_steer"] and data["config"]["seed"] == 0
    dose = data["sections"]["dose_response"]["strengths"]
    assert [s["r"] for s in dose] == [0.0, 0.5, 2.0, 8.0]
    for s in dose:
        for key in ("success", "coherence", "capability"):
            m, lo, hi = s[key]
            assert lo - 1e-9 <= m <= hi + 1e-9, (key, s[key])
    assert dose[0]["kl"] == pytest.approx(0.0, abs=1e-9) and dose[-1]["kl"] > 0
    # success counts half-way from the unsteered rate to 1
    w = data["sections"]["dose_response"]["window"]
    assert w["success_level"] == pytest.approx((dose[0]["success"][0] + 1) / 2)
    ident = data["sections"]["identifiability"]
    assert 0 <= ident["null_fraction"] <= 1 and len(ident["perturbations"]) == 2
    assert data["sections"]["sae_view"]["available"] and data["sections"]["sae_view"]["latents"]


def test_success_rates_agree_with_an_independent_count(model, vec):
    """The dose section's success at r equals the share of texts containing 'e', regenerated
    here with the same seeds."""
    from interp_steer.generation import generate
    from interp_steer.units import alpha_for, typical_norm

    cfg = _cfg()
    ctx_norm = typical_norm(model, HOOK, PROMPTS)
    got = sections_module.dose_response(
        sections_module.Context(
            model,
            vec,
            cfg,
            PROMPTS,
            ctx_norm,
            lambda ts: np.array(["e" in t for t in ts], float),
            "e",
        )
    )
    rows = [p for p in PROMPTS for _ in range(cfg.samples)]
    texts = generate(
        model,
        rows,
        vec,
        [alpha_for(vec, 2.0, ctx_norm)] * len(rows),
        max_new_tokens=6,
        temperature=1.0,
        top_p=0.95,
        seed=list(range(len(rows))),
    )
    want = np.mean(["e" in t for t in texts])
    assert got["strengths"][2]["success"][0] == pytest.approx(want)


def test_the_trace_records_the_positions_actually_edited(report):
    rep, _ = report
    t = rep.data["sections"]["trace"]
    n = t["n_prompt_tokens"]
    # last_and_generated: the last prompt token and every generated token fed back in
    assert t["edited_positions"] == list(range(n - 1, len(t["tokens"])))
    edits = np.array(t["edit_norm"])
    assert np.allclose(edits[n - 1 :], t["edit_norm_expected"], rtol=1e-3)
    assert np.all(edits[: n - 1] < 1e-4 * t["edit_norm_expected"])
    rel = np.array(t["relative_change"])
    assert np.all(rel[0] < 1e-5)  # blocks.0 comes before the hook at blocks.1


def test_sections_are_resumable_cells(model, vec, small_sae, report, embedding_judge, monkeypatch):
    rep, out = report

    def boom(*a, **k):
        raise AssertionError("a finished section was recomputed")

    for name in ("dose_response", "trace", "identifiability", "side_effects"):
        monkeypatch.setattr(sections_module, name, boom)
    monkeypatch.setattr(audit_module, "sae_view", boom)
    again = _full_audit(model, vec, small_sae, out, embedding_judge)
    assert again.data["sections"] == rep.data["sections"]


def test_bad_input_is_named(model, vec):
    other = tiny_model("gpt2")
    with pytest.raises(ValueError, match="another model"):
        audit(other, vec, _cfg(), prompts=PROMPTS, progress=False)
    bad_hook = type(vec)(vec.directions, "blocks.99.hook_resid_pre", vec.model_fingerprint)
    with pytest.raises(ValueError, match="blocks.99"):
        audit(model, bad_hook, _cfg(), prompts=PROMPTS, progress=False)
    with pytest.raises(ValueError, match="prompt set is empty"):
        audit(model, vec, _cfg(), prompts=[], progress=False)
    with pytest.raises(ValueError, match="unknown success measure"):
        audit(model, vec, _cfg(), prompts=PROMPTS, success="vibes", progress=False)
    two = type(vec)(torch.cat([vec.directions, vec.directions]), HOOK, vec.model_fingerprint)
    with pytest.raises(ValueError, match="coherence must be"):
        audit(model, vec, _cfg(), prompts=PROMPTS, coherence="vibes", progress=False)
    with pytest.raises(ValueError, match="one direction"):
        audit(model, two, _cfg(), prompts=PROMPTS, progress=False)


def test_a_missing_sae_is_said(model, tmp_path, monkeypatch):
    """No SAE for the hook: the section names the hook and how to get one (the rest of the
    audit runs without it: notebooks/04_audit.ipynb audits SmolLM2 with no SAE cached)."""
    from interp_steer.audit import _sae

    monkeypatch.setattr(S, "default_path", lambda *a, **k: tmp_path / "none")
    sae, why = _sae(model, HOOK, None)
    assert sae is None and "no SAE for blocks.1.hook_resid_pre" in why and "sae-train" in why
    assert _sae(model, HOOK, False) == (None, "skipped (sae=False)")


def test_the_report_renders_in_a_real_browser(report):
    """Headless Chromium: the page is not blank, holds every section heading, and needs no
    network or JavaScript (every image is inline)."""
    from PIL import Image

    _, out = report
    page = out / "index.html"
    html = page.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 2
    dom = dump_dom(page)
    for heading in HEADINGS.values():
        assert heading in dom, heading
    shot = screenshot(page, out / "shot.png", height=2400)
    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.std() > 10, "the screenshot is blank"
    assert (pixels < 128).mean() > 0.01, "almost nothing dark (text, figures) on the page"


def test_a_hung_browser_times_out_with_its_helpers_killed(tmp_path, monkeypatch):
    """A Chromium that never finishes, with a helper holding its output pipe (as Chromium's
    own helpers do): the call raises after its timeout instead of waiting on the pipe."""
    import shutil
    import time

    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nsleep 300 &\nsleep 300\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish within 1 s"):
        dump_dom(tmp_path / "p.html", timeout=1)
    assert time.monotonic() - t0 < 30
