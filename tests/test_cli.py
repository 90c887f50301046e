import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from interp_steer import SteeringVector, cli
from interp_steer.eval.classifiers import SuccessScorer
from interp_steer.testing import TINY_WINDOW, EmbedOnce, tiny_model


@pytest.fixture
def tiny_loader(monkeypatch):
    model = tiny_model("llama")
    monkeypatch.setattr("interp_steer.load_model", lambda *a, **k: model)
    return model


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ["build", "generate", "sweep", "identifiability", "sae-train", "figures"]:
        assert cmd in out


def test_build_then_generate(tiny_loader, tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    cli.main(["build", "--data", "sentiment", "--hook", "blocks.1.hook_resid_pre", "-o", str(out)])
    v = SteeringVector.load(out)
    assert v.method == "mean_diff" and v.hook == "blocks.1.hook_resid_pre"
    cli.main(
        [
            "generate",
            "--prompt",
            "hi",
            "--vector",
            str(out),
            "--alpha",
            "0,2",
            "--max-new-tokens",
            "3",
        ]
    )
    text = capsys.readouterr().out
    assert "alpha=+0" in text and "alpha=+2" in text


def test_build_exports_llama_cpp_control_vector(tiny_loader, tmp_path, capsys):
    from interp_steer.export.llama_cpp import load_llama_cpp

    out, gg = tmp_path / "v.safetensors", tmp_path / "v.gguf"
    cli.main(
        [
            "build",
            "--hook",
            "blocks.2.hook_resid_pre",
            "-o",
            str(out),
            "--gguf",
            str(gg),
            "--gguf-alpha",
            "2",
        ]
    )
    (w,) = load_llama_cpp(gg)
    assert w.metadata["llama_cpp_layer"] == 1
    assert w.vector.allclose(SteeringVector.load(out).vector * 2)
    with pytest.raises(SystemExit) as e:
        cli.main(
            [
                "build",
                "--hook",
                "blocks.1.hook_resid_pre",
                "-o",
                str(tmp_path / "w"),
                "--gguf",
                str(tmp_path / "w.gguf"),
            ]
        )
    assert e.value.code == 2 and "llama.cpp steers layers >= 1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_clear_errors(tiny_loader, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["build", "--hook", "blocks.99.hook_resid_pre", "-o", str(tmp_path / "v")])
    assert e.value.code == 2 and "unknown hook" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(
            [
                "build",
                "--data",
                "no-such-data",
                "--hook",
                "blocks.1.hook_resid_pre",
                "-o",
                str(tmp_path / "v"),
            ]
        )
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--vector", "x", "--alphas", "a,b"])


def test_sweep_executor_flags_are_checked(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--vector", "x", "--alphas", "1", "--executor", "dask"])
    with pytest.raises(SystemExit, match="--resume needs --out"):
        cli.main(["sweep", "--vector", "x", "--alphas", "1", "--resume"])
    with pytest.raises(ValueError, match="unknown success measure 'sentiment'"):
        SuccessScorer("sentiment")
    s = SuccessScorer("contains:owl,hawk")
    assert s(["an owl", "a cat"]).tolist() == [1, 0]
    assert pickle.loads(pickle.dumps(s))._fn is None  # travels without its classifier


def test_console_script_runs_the_cli():
    """The installed ``interp-steer`` script is this module's `main`, and starts."""
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="console_scripts", name="interp-steer")
    assert ep.value == "interp_steer.cli:main" and ep.load() is cli.main
    script = Path(sys.executable).parent / "interp-steer"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    done = subprocess.run([str(script), "sweep", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--alphas" in done.stdout


def _mentions(text: str, words: list[str]) -> bool:
    """`contains:` as documented: any of ``words`` as the start of a word, any case."""
    return any(re.search(rf"\b{re.escape(w)}", text, re.IGNORECASE) for w in words)


def test_sweep_writes_its_tables_and_resumes(tiny_loader, tmp_path, capsys, monkeypatch):
    import pandas as pd
    import torch

    torch.manual_seed(0)
    vec = tmp_path / "up.safetensors"
    SteeringVector(torch.randn(tiny_loader.cfg.d_model), "blocks.1.hook_resid_pre").save(vec)
    out = tmp_path / "sweep"
    argv = ["sweep", "--vector", str(vec), "--alphas", "4,-4", "--samples", "2"]
    argv += ["--prompt", "hi", "--prompt", "tell me a story", "--max-new-tokens", "5"]
    argv += ["--success", "contains:a,e,o", "--out", str(out)]
    cli.main(argv)
    printed = capsys.readouterr().out
    summary = pd.read_csv(f"{out}.csv")
    samples = pd.read_csv(f"{out}_samples.csv", keep_default_na=False)
    saved = json.loads(Path(f"{out}.json").read_text())
    # every (alpha, prompt, sample) once, with the unsteered reference added
    assert sorted(summary.alpha) == [-4.0, 0.0, 4.0] and set(summary.vector) == {"up"}
    assert len(samples) == 3 * 2 * 2
    assert samples.groupby(["alpha", "prompt", "sample"]).size().eq(1).all()
    # success: the documented contains rule per text, its mean per strength
    hits = [float(_mentions(t, ["a", "e", "o"])) for t in samples.text]
    assert samples.success.tolist() == hits
    for a, g in samples.groupby("alpha"):
        row = summary[summary.alpha == a].iloc[0]
        assert row.success == pytest.approx(g.success.mean())
        assert row.r == pytest.approx(g.r.iloc[0])
    assert 0 < summary.success.mean() < 1  # the rule separated the texts
    kl = dict(zip(summary.alpha, summary.kl))
    assert kl[0.0] == pytest.approx(0.0, abs=1e-9) and kl[4.0] > 0 and kl[-4.0] > 0
    rel = dict(zip(summary.alpha, summary.r))
    assert rel[4.0] == pytest.approx(rel[-4.0]) and rel[0.0] == 0
    assert [r["alpha"] for r in saved["summary"]] == summary.alpha.tolist()
    assert [r["success"] for r in saved["summary"]] == pytest.approx(summary.success.tolist())
    assert printed.count("up") >= 3 and "success" in printed  # the summary table, one row each
    # --resume: every cell is read back (generating one is an error), the same rows come out
    monkeypatch.setattr(
        "interp_steer.eval.sweep._sweep_cell", lambda *a, **k: pytest.fail("a cell was regenerated")
    )
    cli.main([*argv, "--resume"])
    again = pd.read_csv(f"{out}_samples.csv", keep_default_na=False)
    assert again.text.tolist() == samples.text.tolist()
    assert printed == capsys.readouterr().out


def test_sae_train_trains_caches_and_reports(tmp_path, capsys, monkeypatch):
    from interp_steer import sae
    from interp_steer.sae import corpus as generic_corpus

    # the generic evaluation texts run to ~850 characters: a context that holds them
    model = tiny_model("llama", n_ctx=1024)
    monkeypatch.setattr("interp_steer.load_model", lambda *a, **k: model)
    monkeypatch.setenv("INTERP_STEER_CACHE", str(tmp_path / "cache"))
    # a small default corpus: 12k characters of the shipped plays (the tiny tokenizer spells)
    small = (("books", generic_corpus.GenreSpec(12_000, doc_cap=512)),)
    monkeypatch.setattr(generic_corpus, "DEFAULT_GENRES", small)
    # and 2 of the 26 generic evaluation texts per genre (their CE runs 3 forwards each)
    from interp_steer.sae.corpus import evalset

    texts = evalset.generic_eval
    monkeypatch.setattr(evalset, "generic_eval", lambda: {g: v[:2] for g, v in texts().items()})
    hook = "blocks.1.hook_resid_pre"
    argv = ["sae-train", "--hook", hook, "--k", "4", "--expansion", "2"]
    argv += ["--training-tokens", "4096"]
    cli.main(argv)
    printed = capsys.readouterr().out
    (path,) = (tmp_path / "cache" / "sae").iterdir()
    report = json.loads((path / "interp_steer.json").read_text())
    d = model.cfg.d_model
    assert report["hook"] == hook and report["d_sae"] == 2 * d
    assert {k: report["config"][k] for k in ("k", "expansion", "training_tokens")} == {
        "k": 4,
        "expansion": 2,
        "training_tokens": 4096,
    }
    assert set(report["heldout_by_genre"]) == {"books"} and report["generic_eval"]
    # the table prints the report's numbers, one row per held-out genre and generic text genre
    lines = printed.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("split"))
    table = lines[head + 1 : next(i for i, line in enumerate(lines) if line.startswith("(full"))]
    rows = {line[:22].strip(): line[22:].split() for line in table}
    want = {f"held-out {g}": r for g, r in report["heldout_by_genre"].items()}
    want |= {f"generic {g}": r for g, r in report["generic_eval"].items()}
    assert rows.keys() == want.keys()
    for name, r in want.items():
        ev, l0, dead = (float(x) for x in rows[name][:3])
        assert ev == pytest.approx(r["explained_variance"], abs=5.01e-4)  # printed to 3 places
        assert l0 == pytest.approx(r["l0"], abs=0.0501)
        assert dead == pytest.approx(r["dead_fraction"], abs=5.01e-4)
        assert int(rows[name][-1].replace(",", "")) == r["n_tokens"]
        assert 0 < r["l0"] <= 4  # top-k with k = 4
    # the SAE on disk is the one described, and keeps at most k latents per token
    s = sae.load(path)
    assert (s.cfg.d_in, s.cfg.d_sae) == (d, 2 * d)
    _, cache = model.run_with_cache("To be, or not to be", names_filter=hook)
    assert ((s.encode(cache[hook][0]) != 0).sum(-1) <= 4).all()
    # a second call finds the cached SAE and trains nothing
    monkeypatch.setattr(sae, "train", lambda *a, **k: pytest.fail("retrained"))
    cli.main(argv)
    again = capsys.readouterr().out
    assert again.startswith(f"cached SAE at {path}")
    assert again.splitlines()[1:] == lines[head:]
    # --ship copies it into the package's shipped SAEs; a later call prints both tables
    monkeypatch.setattr(sae.io, "SHIPPED_DIR", tmp_path / "shipped")
    cli.main([*argv, "--ship"])
    (shipped,) = (tmp_path / "shipped").iterdir()
    assert f"shipped (float16) as {shipped}" in capsys.readouterr().out
    assert (shipped / "SHA256SUMS").exists()
    cli.main(argv)
    both = capsys.readouterr().out
    assert f"the shipped SAE ({shipped}):" in both and both.count("held-out books") == 2


@pytest.mark.filterwarnings("ignore")
def test_figures_runs_an_analysis_and_resumes(tmp_path, capsys, monkeypatch):
    """`figures --quick --only steering_window` runs that analysis's `main` (its quick config
    shrunk to a tiny model) into ./figures, records it in the run store, and --resume skips
    it."""
    import analyses.steering_window as sw

    model = tiny_model("llama", n_ctx=512)
    monkeypatch.chdir(tmp_path)  # figures/ and its .runs/ store land here
    monkeypatch.setattr(sw, "_load", lambda name, cfg: model)
    quick = sw.Config.quick_config
    monkeypatch.setattr(
        sw.Config, "quick_config", classmethod(lambda cls, **kw: quick(**{**TINY_WINDOW, **kw}))
    )
    argv = ["figures", "--quick", "--only", "steering_window", "--seed", "3"]
    cli.main(argv)
    printed = capsys.readouterr().out
    out = tmp_path / "figures"
    summary = json.loads((out / "steering_window_summary_quick.json").read_text())
    assert summary["config"]["seed"] == 3 and summary["config"]["quick"] is True
    assert json.loads((out / "steering_window_quick.json").read_text())["config"]["seed"] == 3
    assert (out / "steering_window_quick.png").stat().st_size > 10_000
    # the run store holds the analysis's cell, and the command printed its time
    (part,) = (out / ".runs" / "figures_quick_seed3").glob("*.jsonl")
    (row,) = [json.loads(line) for line in part.read_text().splitlines()]
    assert row["analysis"] == "steering_window" and row["seconds"] >= summary["seconds"]
    assert printed.splitlines()[-1] == f"steering_window: {row['seconds']:.0f} s"
    # before it, the analysis's headline, with the summary's numbers
    ((fact, q),) = summary["models"]["tiny"]["questions"].items()
    line = next(x for x in printed.splitlines() if fact in x)
    assert f"window {q['window_rel']['value']:.3g}" in line
    assert f"last capable r={q['last_capable']}" in line
    # --resume: the finished analysis is not run again; its recorded time is printed
    monkeypatch.setattr(sw, "main", lambda argv=None: pytest.fail("ran again"))
    cli.main([*argv, "--resume"])
    assert capsys.readouterr().out == printed.splitlines()[-1] + "\n"


def test_judge_audit_main_on_the_shipped_labels(tmp_path, capsys):
    """`python -m analyses.judge_audit` on the shipped labels and the committed EM cells: its
    AUROC is sklearn's over the labels and the cells' scores."""
    from importlib.resources import files

    import numpy as np
    from sklearn.metrics import roc_auc_score

    import analyses.emergent_misalignment as em
    from analyses import judge_audit

    judge_audit.main(["--out", str(tmp_path)])
    printed = capsys.readouterr().out
    out = json.loads((tmp_path / "judge_audit.json").read_text())
    labels = json.loads(files("interp_steer.data").joinpath("em_judge_audit.json").read_text())
    cells = em.cells_dir(em.Config(), labels["model"])
    aligned = {}
    for it in labels["items"]:
        if it["condition"] not in aligned:
            path = cells / em.condition_file(it["condition"])
            aligned[it["condition"]] = json.loads(path.read_text())["aligned"]
    score = np.array([100 - aligned[it["condition"]][it["index"]] for it in labels["items"]])
    auroc = roc_auc_score([it["misaligned"] for it in labels["items"]], score)
    assert out["ranking"]["misaligned_auroc_of_100_minus_aligned"][0] == pytest.approx(auroc)
    assert out["n_items"] == len(labels["items"]) and out["config"]["labels"] == ""
    assert f"misaligned {auroc:.2f} [" in printed
    # --quick: the same audit with fewer resamples, beside the full one
    judge_audit.main(["--quick", "--out", str(tmp_path)])
    quick = json.loads((tmp_path / "judge_audit_quick.json").read_text())
    assert quick["config"]["n_boot"] < out["config"]["n_boot"]
    assert quick["ranking"]["misaligned_auroc_of_100_minus_aligned"][0] == pytest.approx(auroc)


@pytest.mark.filterwarnings("ignore")
def test_synthetic_data_main_quick(tmp_path, capsys, monkeypatch):
    """`python -m analyses.synthetic_data --quick --models tiny --seed 1`: the command line's
    model, seed and quick flag reach the config, and the headline prints the summary's AUROCs."""
    import analyses.synthetic_data as sd

    model = tiny_model("llama", n_ctx=512)
    monkeypatch.setattr(sd, "load_model", lambda name, *a, **k: model)
    embed = EmbedOnce()
    monkeypatch.setattr(sd, "MiniLM", lambda: embed)
    quick = sd.Config.quick_config
    tiny = dict(rel_strengths=[0.5], n_prompts=3, samples=2, max_new_tokens=6, n_boot=100)
    monkeypatch.setattr(
        sd.Config, "quick_config", classmethod(lambda cls, **kw: quick(**{**tiny, **kw}))
    )
    sd.main(["--quick", "--models", "tiny", "--seed", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    s = json.loads((tmp_path / "synthetic_data_quick_summary.json").read_text())
    assert s["config"]["models"] == ["tiny"] and s["seed"] == 1 and s["config"]["quick"] is True
    assert [c["relative_norm"] for c in s["configs"] if c["method"] != "prompting"] == (
        pytest.approx([0.5, 0.5])
    )
    for concept, c in s["concepts"].items():
        line = next(x for x in printed.splitlines() if x.strip().startswith(concept))
        best = max(
            x["auroc"]
            for x in s["configs"]
            if x["concept"] == concept and x["method"] != "prompting"
        )
        assert f"prompting AUROC tiny {c['prompting_auroc']['tiny']:.2f};" in line
        assert f"best steered {best:.2f};" in line
