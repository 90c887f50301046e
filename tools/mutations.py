"""Hand-made mutation check of the core modules: does the suite notice a plausible bug?

Each mutant replaces one exact snippet in one module (the script refuses a snippet that is
not found exactly once), runs the test files that cover that module with ``-x``, and records
"killed" (the tests failed) or "survived". The module is restored after every mutant, also on
Ctrl-C. Usage: ``python tools/mutations.py [--json out.json] [name ...]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


IV = "interp_steer/interventions.py"
GEN = "interp_steer/generation.py"
ST = "interp_steer/eval/stats.py"
ACT = "interp_steer/activations.py"
T_IV = ("tests/test_interventions.py", "tests/test_properties.py")
# positions only matter under padding and the KV cache: the generation tests exercise them
T_POS = T_IV + ("tests/test_generation.py",)
T_GEN = ("tests/test_generation.py", "tests/test_properties.py")
T_ST = ("tests/test_stats.py",)

MUTANTS = [
    # interventions: the one edit path
    Mutant("drop the edit in edit_at", IV, "        new = edit(x)\n", "        new = x\n", T_IV),
    Mutant(
        "edit_at ignores the position mask",
        IV,
        "return new if mask is None else torch.where(mask[..., None], new, x)",
        "return new",
        T_IV,
    ),
    Mutant(
        "steer subtracts",
        IV,
        "return x + cache[key][:, None, :]",
        "return x - cache[key][:, None, :]",
        T_IV,
    ),
    Mutant(
        "clamp forgets to remove the old coordinate",
        IV,
        "return x - (x @ u.T) @ u + (coef @ u)[:, None, :]",
        "return x + (coef @ u)[:, None, :]",
        T_IV,
    ),
    Mutant(
        "'generated' includes the last prompt token",
        IV,
        'if positions == "generated":\n        return pos >= plen[:, None]',
        'if positions == "generated":\n        return pos >= plen[:, None] - 1',
        T_POS,
    ),
    Mutant(
        "'prompt' ignores padding",
        IV,
        "return real & (pos < plen[:, None])",
        "return pos < plen[:, None]",
        T_POS,
    ),
    Mutant(
        "negative positions count from the padded end",
        IV,
        "want = torch.where(idx[None] < 0, plen[:, None] + idx[None], idx[None])",
        "want = torch.where(idx[None] < 0, p + idx[None], idx[None])",
        T_POS,
    ),
    Mutant(
        "KV-cache offset not advanced",
        GEN,
        "                state.offset += step_in.shape[1]\n",
        "",
        T_GEN,
    ),
    Mutant(
        "orthonormal_rows keeps QR's sign",
        IV,
        "sign = torch.where(r.diagonal() < 0, -1.0, 1.0).to(q.dtype)",
        "sign = torch.ones_like(r.diagonal()).to(q.dtype)",
        T_IV,
    ),
    Mutant(
        "per-row strengths broadcast per direction",
        IV,
        "            return a[:, None].expand(b, k)  # one strength per batch row",
        "            return a[None, :1].expand(b, k)",
        T_IV,
    ),
    # generation
    Mutant(
        "finished rows keep sampling",
        GEN,
        "                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)\n",
        "",
        T_GEN,
    ),
    Mutant(
        "row seeds shared by every row",
        GEN,
        "return [seed + r for r in range(b)]",
        "return [seed for r in range(b)]",
        T_GEN,
    ),
    Mutant(
        "nucleus drops the token that crosses top_p",
        GEN,
        "drop = p.cumsum(-1) - p >= top_p",
        "drop = p.cumsum(-1) >= top_p",
        T_GEN,
    ),
    Mutant(
        "temperature ignored",
        GEN,
        "probs = torch.softmax(logits.float() / temperature, -1)",
        "probs = torch.softmax(logits.float(), -1)",
        T_GEN,
    ),
    Mutant(
        "decode keeps text after EOS",
        GEN,
        "            row = row[: row.index(eos)]\n",
        "            pass\n",
        T_GEN,
    ),
    Mutant(
        "_draw uses the first block only",
        GEN,
        "bi = torch.searchsorted(bcdf, target, right=True).clamp_max(nb - 1)",
        "bi = torch.zeros_like(target, dtype=torch.long)",
        T_GEN,
    ),
    # activations: the skip-first rule
    Mutant(
        "skip-first rule skipped",
        ACT,
        "keep = batch.mask & (pos - batch.pad[:, None] >= skip_first)",
        "keep = batch.mask",
        ("tests/test_activations.py", "tests/test_identifiability.py"),
    ),
    # stats
    Mutant(
        "TOST bounds swapped",
        ST,
        "return float(ttost_paired(b, a, -margin, margin)[0])",
        "return float(ttost_paired(b, a, margin, -margin)[0])",
        T_ST,
    ),
    Mutant(
        "Welch TOST with equal variances",
        ST,
        'return float(ttost_ind(b, a, -margin, margin, usevar="unequal")[0])',
        'return float(ttost_ind(b, a, -margin, margin, usevar="pooled")[0])',
        T_ST,
    ),
    Mutant(
        "AUROC ranks the negatives",
        ST,
        "u = scipy_stats.rankdata(score)[pos].sum() - n1 * (n1 + 1) / 2",
        "u = scipy_stats.rankdata(score)[~pos].sum() - n0 * (n0 + 1) / 2",
        T_ST,
    ),
    Mutant(
        "AUROC ties not averaged",
        ST,
        "u = scipy_stats.rankdata(score)[pos].sum()",
        "u = scipy_stats.rankdata(score, method='ordinal')[pos].sum()",
        T_ST,
    ),
    Mutant(
        "Cohen's d with the wrong pooled SD",
        ST,
        "pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))",
        "pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)",
        T_ST,
    ),
    Mutant(
        "Wilson at the wrong level",
        ST,
        'return proportion_confint(k, n, alpha=1 - conf, method="wilson")',
        'return proportion_confint(k, n, alpha=(1 - conf) / 2, method="wilson")',
        T_ST,
    ),
    Mutant(
        "paired t on the difference's sign",
        ST,
        "return float(scipy_stats.ttest_rel(b, a).pvalue)",
        "return float(scipy_stats.ttest_ind(b, a).pvalue)",
        T_ST,
    ),
    Mutant(
        "TOST power ignores the true difference",
        ST,
        "    return _tost_power(margin, sd / np.sqrt(n), n - 1, true_diff, alpha)",
        "    return _tost_power(margin, sd / np.sqrt(n), n - 1, 0.0, alpha)",
        T_ST,
    ),
]


def run(m: Mutant, timeout: int) -> tuple[str, float]:
    path = ROOT / m.path
    src = path.read_text()
    if src.count(m.old) != 1:
        raise SystemExit(f"{m.name}: the snippet occurs {src.count(m.old)} times in {m.path}")
    t0 = time.time()
    try:
        path.write_text(src.replace(m.old, m.new))
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
        ]
        try:
            r = subprocess.run(cmd + list(m.tests), cwd=ROOT, capture_output=True, timeout=timeout)
            verdict = "killed" if r.returncode != 0 else "survived"
        except subprocess.TimeoutExpired:
            verdict = "killed (timeout)"
    finally:
        path.write_text(src)
    return verdict, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="run only the mutants whose name contains these")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--timeout", type=int, default=900)
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or any(n in m.name for n in args.names)]
    rows = []
    for m in chosen:
        verdict, secs = run(m, args.timeout)
        rows.append({"mutant": m.name, "module": m.path, "verdict": verdict, "seconds": secs})
        print(f"{verdict:>16}  {secs:6.1f}s  {m.path}: {m.name}", flush=True)
    killed = sum(r["verdict"].startswith("killed") for r in rows)
    print(f"{killed} of {len(rows)} mutants killed")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
