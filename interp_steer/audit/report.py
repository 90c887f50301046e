"""The audit's figures, its one-file HTML report (inline PNGs, no JavaScript, no network) and
a headless-Chromium screenshot of it."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HEADINGS = {
    "trace": "1. Where it acts",
    "dose_response": "2. Dose–response and the viable window",
    "identifiability": "3. Identifiability",
    "side_effects": "4. Side effects at the operating point",
    "sae_view": "5. SAE view",
}


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def trace_figure(t: dict):
    rel = np.array(t["relative_change"])
    toks = [repr(x)[1:-1][:10] for x in t["tokens"]]
    fig, (ax0, ax1) = plt.subplots(
        2, 1, figsize=(max(8, 0.28 * len(toks)), 5.2), height_ratios=[1, 4], sharex=True
    )
    ax0.bar(range(len(toks)), t["edit_norm"], color="C3")
    ax0.set_ylabel("‖edit‖\nat hook", fontsize=8)
    ax0.axvline(t["n_prompt_tokens"] - 0.5, color="k", lw=0.8, ls="--")
    im = ax1.imshow(rel, aspect="auto", cmap="viridis", interpolation="nearest")
    ax1.axvline(t["n_prompt_tokens"] - 0.5, color="w", lw=0.8, ls="--")
    ax1.set_ylabel("layer (resid_post)")
    ax1.set_yticks(range(rel.shape[0]))
    ax1.tick_params(axis="y", labelsize=7)
    ax1.set_xticks(range(len(toks)), toks, rotation=90, fontsize=7, family="monospace")
    fig.colorbar(im, ax=[ax0, ax1], label="‖Δ resid‖ / ‖resid‖", shrink=0.8)
    ax0.set_title(
        f"per-token trace at r = {t['r']:.2f} (α = {t['alpha']:.3g}); prompt | generated",
        fontsize=9,
    )
    return fig


def dose_figure(d: dict):
    rows = d["strengths"]
    r = np.array([s["r"] for s in rows])
    x = np.where(r == 0, r[1] / 2, r)  # r = 0 drawn at the left edge of the log axis
    fig, ax = plt.subplots(figsize=(8, 4.2))

    def band(key, label, color):
        v = np.array([s[key] for s in rows], float)
        ax.plot(x, v[:, 0], "o-", color=color, label=label)
        ax.fill_between(x, v[:, 1], v[:, 2], color=color, alpha=0.15)

    if "success" in rows[0]:
        band("success", f"success ({d['success_measure']})", "C0")
    band("coherence", f"coherence ({d['coherence_measure']})", "C1")
    band("capability", "capability (code tasks)", "C2")
    ax.set_xscale("log")
    ax.set_xticks(x, ["0"] + [f"{v:g}" for v in r[1:]])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("r = ‖αv‖ / typical token norm (leftmost point: unsteered)")
    ax.set_ylabel("rate")
    ax2 = ax.twinx()
    ax2.plot(x, [s["kl"] for s in rows], "k:", label="KL (nats)")
    ax2.set_ylabel("next-token KL from unsteered (nats)")
    w = d.get("window")
    if w and w["first_majority_r"] is not None and w["last_capable_r"] is not None:
        ax.axvspan(w["first_majority_r"], w["last_capable_r"], color="C0", alpha=0.08)
    if w:
        ax.axhline(w["success_level"], color="C0", lw=0.7, ls="--")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax.set_title("dose–response (95% CIs over prompts; capability: Wilson)", fontsize=9)
    return fig


def identifiability_figure(s: dict):
    ps = [p for p in s["perturbations"] if p["retained"]]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    if not ps:
        ax.text(0.5, 0.5, "no efficacy to retain", ha="center", transform=ax.transAxes)
        return fig
    eps = [p["eps"] for p in ps]
    ret = np.array([p["retained"] for p in ps], float)
    coh = np.array([p["coherence"] for p in ps], float)
    xs = np.arange(len(eps))
    ax.errorbar(
        xs - 0.1,
        ret[:, 0],
        yerr=[ret[:, 0] - ret[:, 1], ret[:, 2] - ret[:, 0]],
        fmt="o",
        capsize=3,
        label="efficacy retained (v + δ over v)",
    )
    ax.errorbar(
        xs + 0.1,
        coh[:, 0],
        yerr=[coh[:, 0] - coh[:, 1], coh[:, 2] - coh[:, 0]],
        fmt="s",
        capsize=3,
        color="C1",
        label="coherence of v + δ",
    )
    ax.axhline(1, color="grey", lw=0.8, ls="--")
    ax.set_xticks(xs, [f"‖δ‖ = {e:g}‖v‖" for e in eps])
    ax.legend(fontsize=8)
    ax.set_title(f"null-space perturbations at r = {s['r']:.2f}", fontsize=9)
    return fig


def _e(x) -> str:
    return html.escape(str(x))


def _num(v) -> str:
    if isinstance(v, list) and len(v) == 3 and all(isinstance(a, int | float) for a in v):
        a, lo, hi = (0.0 if abs(x) < 1e-9 else x for x in v)
        return f"{a:.3g} [{lo:.3g}, {hi:.3g}]"
    if isinstance(v, float):
        return f"{v:.3g}"
    return _e(v)


def render_html(report: dict, figures: dict[str, str]) -> str:
    """The report as one self-contained HTML page."""
    s = report["sections"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Steering audit: {_e(report['vector']['name'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:3px 7px}"
        ".verdict{background:#f3f6fa;border-left:4px solid #36c;padding:6px 10px}"
        "mark{background:#fd6}code,pre{font-size:88%}pre{white-space:pre-wrap}img{max-width:100%}</style></head><body>",
        f"<h1>Steering audit: {_e(report['vector']['name'])}</h1>",
        f"<p>Model <code>{_e(report['model'])}</code>, hook <code>{_e(report['vector']['hook'])}</code>, "
        f"‖v‖ = {report['vector']['norm']:.3g}, typical token norm {report['typical_norm']:.3g} "
        f"(r = ‖αv‖ / that norm). Operating point r = {report['operating_r']:.3g} "
        f"({_e(report['operating_choice'])}).</p>",
        "<h2>Verdicts</h2><ul>",
    ]
    for key, title in HEADINGS.items():
        parts.append(f"<li><b>{_e(title)}</b>: {_e(s[key]['verdict'])}</li>")
    parts.append("</ul>")

    t = s["trace"]
    parts += [
        f"<h2>{HEADINGS['trace']}</h2><p class='verdict'>{_e(t['verdict'])}</p>",
        f"<img alt='per-token trace' src='data:image/png;base64,{figures['trace']}'>",
        "<p>Tokens of one greedy generation (the first prompt). Top: the size of the edit at "
        "the hook, read in the real KV-cached passes; bottom: how far each layer's residual "
        "moved from the unsteered one at the same tokens.</p>",
    ]
    d = s["dose_response"]
    parts += [
        f"<h2>{HEADINGS['dose_response']}</h2><p class='verdict'>{_e(d['verdict'])}</p>",
        f"<img alt='dose-response' src='data:image/png;base64,{figures['dose_response']}'>",
        "<table><tr><th>r</th><th>α</th><th>success</th><th>coherence</th><th>capability</th>"
        "<th>KL</th><th>example</th></tr>",
    ]
    for row in d["strengths"]:
        parts.append(
            f"<tr><td>{row['r']:.3g}</td><td>{row['alpha']:.3g}</td>"
            f"<td>{_num(row.get('success', '—'))}</td><td>{_num(row['coherence'])}</td>"
            f"<td>{_num(row['capability'])}</td><td>{row['kl']:.3g}</td>"
            f"<td><small>{_e(row['example'][:160])}</small></td></tr>"
        )
    parts.append("</table>")
    i = s["identifiability"]
    parts += [
        f"<h2>{HEADINGS['identifiability']}</h2><p class='verdict'>{_e(i['verdict'])}</p>",
        f"<p>Null space: {i['null_dim']} of {i['d_model']} dimensions ({_e(i['rule'])}, "
        f"{i['n_tokens']} prompt tokens).</p>",
    ]
    if "identifiability" in figures:
        parts.append(
            f"<img alt='perturbations' src='data:image/png;base64,{figures['identifiability']}'>"
        )
    e = s["side_effects"]
    parts += [
        f"<h2>{HEADINGS['side_effects']}</h2><p class='verdict'>{_e(e['verdict'])}</p>",
        f"<p>Judge: {_e(e['judge'])}; {e['n']} answers, coherent fraction "
        f"{e['coherent_fraction']:.0%}. <i>{_e(e['caveat'])}</i></p>",
    ]
    for ex in e["flagged_examples"]:
        parts.append(f"<pre>{_e(ex)}</pre>")
    v = s["sae_view"]
    parts.append(f"<h2>{HEADINGS['sae_view']}</h2><p class='verdict'>{_e(v['verdict'])}</p>")
    for lt in v.get("latents", []):
        parts.append(
            f"<h3>latent {lt['feature']} (cosine {lt['cosine']:.2f}; fires on "
            f"{lt['fire_rate']:.1%} of tokens; activation histogram {lt['histogram']})</h3><ul>"
        )
        for c in lt["top_contexts"]:
            parts.append(
                f"<li><code>{_e(c['before'])}<mark>{_e(c['token'])}</mark>{_e(c['after'])}</code>"
                f" ({c['activation']:.2f})</li>"
            )
        parts.append("</ul>")
    parts += [
        "<h2>Provenance</h2>",
        f"<p>interp_steer {_e(report['interp_steer'])}; seed {report['config']['seed']}.</p>",
        f"<pre>{_e(json.dumps(report['config'], indent=1))}</pre></body></html>",
    ]
    return "\n".join(parts)


def screenshot(
    page: Path, out: Path, width: int = 1200, height: int = 5200, timeout: float = 120
) -> Path:
    """A PNG of ``page`` rendered by headless Chromium (Debian's ``chromium``); RuntimeError
    if it fails or takes longer than ``timeout`` seconds."""
    _chromium(
        [f"--window-size={width},{height}", f"--screenshot={Path(out).resolve()}", page], timeout
    )
    return out


def dump_dom(page: Path, timeout: float = 120) -> str:
    """The page's DOM as Chromium parsed it (what a reader's browser shows); RuntimeError if
    it fails or takes longer than ``timeout`` seconds."""
    return _chromium(["--dump-dom", page], timeout)


def _chromium(args: list, timeout: float) -> str:
    """Run headless Chromium on ``args`` (a `Path` is passed as its file URI) and return its
    stdout; raise RuntimeError naming the failure or the timeout."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("no chromium on PATH: apt-get install chromium (make install does)")
    args = [Path(a).resolve().as_uri() if isinstance(a, Path) else a for a in args]
    # A profile of its own per call: two Chromiums sharing the default profile (two test
    # workers, a notebook beside a test) meet at its singleton lock and one waits on the other.
    with tempfile.TemporaryDirectory(prefix="interp_steer-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ]
        # Its own session, so a timeout kills the whole tree: Chromium's helper processes hold
        # the output pipes, and killing only the parent would leave the read waiting forever.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"chromium did not finish within {timeout} s: {args}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {stderr.strip()[-2000:]}")
    return stdout
