"""What a user runs first: README.md's Use snippet(s) and `make demo`'s `interp_steer.demo`.

The README is parsed at test time (every ```python block under its "Use" heading), so the
test follows the README as it is edited rather than a copy of it. The snippet runs in a
temporary working directory with `interp_steer.generate` wrapped to record its calls, so
the checks need not know the snippet's variable names: every generation that has an
unsteered row (alpha 0) and a steered row of the same prompt must have changed that row's
text. The demo runs as `make demo` runs it (a subprocess), and its stdout and stderr are
checked: steered text differs from unsteered, the printed r = |alpha v| / |resid| agrees
with the printed norms, and no Python warning is printed.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = re.compile(r"(use|quick ?start)\b", re.I)  # the heading whose snippets users copy
FENCE = re.compile(r"^\s*(```+|~~~+)\s*(\S*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def readme_snippets(path: Path = README) -> list[str]:
    """The ```python blocks under the first "Use"/"Quickstart" heading, up to the next heading
    of the same or a higher level (lines inside fences are never headings)."""
    level, blocks, fence, block = None, [], None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if fence is not None:  # inside a fenced block
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not m.group(2):
                if level is not None and block is not None:
                    blocks.append("\n".join(block))
                fence, block = None, []
            elif block is not None:
                block.append(line)
            continue
        if m:
            fence = m.group(1)
            block = [] if m.group(2).lower() in ("python", "py", "python3") else None
            continue
        h = HEADING.match(line)
        if h:
            if level is not None and len(h.group(1)) <= level:
                break
            if level is None and SECTION.match(h.group(2)):
                level = len(h.group(1))
    assert level is not None, f"{path.name} has no 'Use' / 'Quickstart' heading"
    assert blocks, f"{path.name}'s Use section has no ```python block"
    return blocks


def undefined_names(src: str) -> list[str]:
    """Names a snippet reads but never binds (nor imports) and that are not builtins."""
    tree = ast.parse(src)
    bound, read = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return sorted(read - bound)


def test_readme_use_snippets_define_every_name():
    """A user pastes the snippet as it stands: it must not read a name it never defines."""
    for i, src in enumerate(readme_snippets()):
        missing = undefined_names(src)
        assert not missing, f"README Use snippet {i} uses names it never defines: {missing}"


@pytest.mark.integration
def test_readme_use_snippets_run_and_steer(tmp_path, monkeypatch):
    import interp_steer as ist

    calls = []
    real_generate = ist.generate

    def recording_generate(model, prompts, vector=None, alphas=None, *args, **kwargs):
        out = real_generate(model, prompts, vector, alphas, *args, **kwargs)
        calls.append((prompts, vector, alphas, out))
        return out

    monkeypatch.setattr(ist, "generate", recording_generate)
    monkeypatch.chdir(tmp_path)  # whatever the snippet saves lands here
    ns: dict = {"__name__": "__readme__"}
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        for i, src in enumerate(readme_snippets()):
            exec(compile(src, f"README.md (Use snippet {i})", "exec"), ns)
    check_snippet_run(ns, calls, tmp_path, stdout.getvalue())


def check_snippet_run(ns: dict, calls: list, folder: Path, printed: str) -> None:
    """The snippet's namespace, its recorded `generate` calls (prompts, vector, alphas,
    texts), the folder it ran in and what it printed."""
    from interp_steer import SteeringVector

    assert not re.search(r"\b(nan|inf)\b", printed, re.I), f"the snippet printed:\n{printed}"
    vectors = [v for v in ns.values() if isinstance(v, SteeringVector)]
    assert vectors, "the snippet builds no SteeringVector"
    for v in vectors:
        assert torch.isfinite(v.directions).all() and float(v.norm()) > 0, v
    for name, value in ns.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.isfinite(value).all(), f"{name} has non-finite values"

    for f in sorted(folder.glob("*.safetensors")):  # saved vectors load back bit-exactly
        loaded = SteeringVector.load(f)
        assert any(torch.equal(loaded.directions, v.directions) for v in vectors), f.name

    compared = 0
    for prompts, vector, alphas, out in calls:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        assert len(out) == len(prompts) and all(isinstance(t, str) and t.strip() for t in out), (
            f"empty or missing generations: {out!r}"
        )
        if vector is None or alphas is None or isinstance(alphas, int | float):
            continue
        alphas = [float(a) for a in alphas]
        for j, a in enumerate(alphas):
            for k, b in enumerate(alphas):
                if a == 0 and b != 0 and prompts[j] == prompts[k]:
                    compared += 1
                    assert out[k] != out[j], (
                        f"alpha={b} left the text of {prompts[k]!r} unchanged: {out[k]!r}"
                    )
    assert compared, "the snippet shows no generation with an unsteered and a steered row"


DEMO_ALPHAS = [-0.5, 0.0, 0.5]  # demo.py's default --alphas
DEMO_PROMPTS = 3  # its default --prompts
ALPHA_LINE = re.compile(r"^-- alpha=([+-]\d+\.\d+) \(r=(\d+\.\d+)\)(?: vader=([+-]\d+\.\d+))?$")
NORMS_LINE = re.compile(r"‖v‖ = (\d+\.\d); typical token norm at \S+ = (\d+\.\d) \(median")
PY_WARNING = re.compile(r"^.*:\d+: (\w*Warning): .*$", re.M)  # warnings.showwarning's format


@pytest.mark.integration
def test_demo_steers_and_prints_no_warnings():
    """`make demo`'s first command, as it runs there: a subprocess with default arguments."""
    proc = subprocess.run(
        [sys.executable, "-m", "interp_steer.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    check_demo_output(proc.returncode, proc.stdout, proc.stderr)


def check_demo_output(returncode: int, out: str, err: str) -> None:
    assert returncode == 0, err[-3000:]
    warned = [m.group(0) for m in PY_WARNING.finditer(err)]
    assert not warned, "the demo prints Python warnings:\n" + "\n".join(warned)
    assert "SteeringVector(" in out, out
    norms = NORMS_LINE.search(out)
    assert norms, f"no norms line in:\n{out}"
    v_norm, resid = map(float, norms.groups())
    assert v_norm > 0 and resid > 0, norms.group(0)

    parts = out.split("PROMPT: ")[1:]
    assert len(parts) == DEMO_PROMPTS, out
    for part in parts:
        prompt, *lines = part.rstrip("\n=").split("\n")
        texts, alphas = {}, []
        for line in lines:
            m = ALPHA_LINE.match(line)
            if m:
                alpha, r = float(m.group(1)), float(m.group(2))
                alphas.append(alpha)
                texts[alpha] = []
                # the printed r = |alpha| ||v|| / typical norm, from the printed (rounded) norms
                lo = abs(alpha) * (v_norm - 0.05) / (resid + 0.05) - 5e-4
                hi = abs(alpha) * (v_norm + 0.05) / (resid - 0.05) + 5e-4
                assert lo <= r <= hi, (line, lo, hi)
                if m.group(3) is not None:
                    assert -1 <= float(m.group(3)) <= 1, line
            elif line.startswith("   ") and alphas:
                texts[alphas[-1]].append(line.strip())
            else:
                assert not line.strip() or set(line) == {"="}, f"unexpected line {line!r}"
        assert alphas == DEMO_ALPHAS, (prompt, alphas)
        texts = {a: " ".join(t) for a, t in texts.items()}
        assert all(texts.values()), (prompt, texts)
        for a in DEMO_ALPHAS:
            if a != 0:
                assert texts[a] != texts[0.0], f"alpha={a} did not change {prompt!r}: {texts[a]!r}"


def test_docs_site_builds_strictly(tmp_path):
    """`make docs`: MkDocs with warnings as errors, so a broken link between pages, an unknown
    page in the navigation or a docstring whose Args do not match its signature fails."""
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "site" / "studies" / "identifiability" / "index.html").is_file()


def test_readme_is_a_front_door_whose_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "README.md is over 200 lines: move detail to docs/"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [x for x in links if "://" not in x]
    assert local, "README.md links to no documentation page"
    missing = [x for x in local if not (ROOT / x).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
