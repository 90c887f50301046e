"""The ``interp-steer`` command: build, generate, sweep, identifiability, sae-train, figures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def analysis_names() -> list[str] | None:
    """The analyses of this checkout (`analyses.ANALYSES`), or None outside a checkout: the
    analyses are not installed with the package."""
    try:
        from analyses import ANALYSES
    except ImportError:
        return None
    return list(ANALYSES)


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def _model(args):
    from interp_steer import load_model

    return load_model(args.model, device=args.device)


def _pairs(spec: str):
    """A shipped dataset name, or a JSON file with [[positive, negative], ...]."""
    from interp_steer import datasets

    if spec in datasets.available():
        return spec
    p = Path(spec)
    if not p.exists():
        raise SystemExit(
            f"error: {spec!r} is neither a shipped dataset {datasets.available()} nor a file"
        )
    return [tuple(x) for x in json.loads(p.read_text())]


def cmd_build(args) -> None:
    from interp_steer import build_vector

    if args.gguf:  # fail before the work when the hook has no llama.cpp slot
        from interp_steer.export.llama_cpp import llama_cpp_layer

        llama_cpp_layer(args.hook)
    model = _model(args)
    opts = {}
    if args.method == "pca":
        opts["k"] = args.k
    if args.method == "sae_feature":
        from interp_steer import sae

        opts["sae"] = sae.load_default(model, args.hook)
    if args.method == "one_shot":
        data = {"prompt": args.prompt, "promote": args.promote, "suppress": args.suppress}
        data = {k: v for k, v in data.items() if v is not None}
    else:
        data = _pairs(args.data)
    if args.seed is not None:
        opts["seed"] = args.seed
    vec = build_vector(model, data, args.hook, method=args.method, **opts)
    vec.save(args.out)
    print(f"{vec}\nsaved to {args.out}")
    if args.gguf:
        from interp_steer.export.llama_cpp import export_llama_cpp

        export_llama_cpp(vec, args.gguf, alpha=args.gguf_alpha)
        print(f"llama.cpp control vector (x{args.gguf_alpha:g}) saved to {args.gguf}")


def cmd_audit(args) -> None:
    from interp_steer import SteeringVector
    from interp_steer.audit import AuditConfig, audit

    vec = SteeringVector.load(args.vector)
    model = _model(args)
    prompts = None
    if args.prompts:
        prompts = [x.strip() for x in Path(args.prompts).read_text().splitlines() if x.strip()]
        if not prompts:
            raise ValueError(f"{args.prompts} holds no prompts (one per line)")
    kw = {"seed": args.seed, "positions": args.positions}
    if args.r is not None:
        kw["operating_r"] = args.r
    cfg = AuditConfig.quick(**kw) if args.quick else AuditConfig(**kw)
    report = audit(model, vec, cfg, prompts=prompts, success=args.success, out=args.out)
    for name, line in report.verdicts.items():
        print(f"{name}: {line}")
    print(f"report: {Path(args.out) / 'index.html'}")


def cmd_generate(args) -> None:
    from interp_steer import SteeringVector, generate

    model = _model(args)
    vec = SteeringVector.load(args.vector) if args.vector else None
    alphas = args.alpha if vec is not None else [0.0]
    for a in alphas:
        outs = generate(
            model,
            args.prompt,
            vector=vec,
            alphas=a if vec is not None else None,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
            positions=args.positions,
        )
        for p, o in zip(args.prompt, outs):
            print(f"--- alpha={a:+g} | {p}\n{o}\n")


def cmd_sweep(args) -> None:
    from functools import partial

    from interp_steer import SteeringVector, datasets, load_model
    from interp_steer.eval.classifiers import SuccessScorer
    from interp_steer.eval.sweep import sweep

    if args.resume and not args.out:
        raise SystemExit("error: --resume needs --out (where the finished cells are)")
    model = _model(args)
    vectors = {Path(v).stem: SteeringVector.load(v) for v in args.vector}
    prompts = args.prompt or datasets.load(args.prompts_from).prompts
    summary, _ = sweep(
        model,
        vectors,
        args.alphas,
        prompts,
        SuccessScorer(args.success) if args.success else None,
        samples_per_prompt=args.samples,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        out=args.out,
        executor=args.executor,
        workers=args.workers,
        resume=args.resume,
        load=partial(load_model, args.model, device=args.device),
    )
    print(summary.to_string(index=False))


def cmd_sae_train(args) -> None:
    from interp_steer import sae
    from interp_steer.sae.corpus import BROAD_GENRES, DEFAULT_GENRES, GenericCorpusConfig

    model = _model(args)
    given = {
        "architecture": args.architecture,
        "k": args.k,
        "expansion": args.expansion,
        "training_tokens": args.training_tokens,
        "seed": args.seed,
    }
    cfg = sae.SAETrainConfig(**{k: v for k, v in given.items() if v is not None})
    genres = {"default": DEFAULT_GENRES, "broad": BROAD_GENRES}[args.corpus]
    corpus_cfg = GenericCorpusConfig(genres=genres)
    hook = args.hook or sae.default_hook(model)
    path = sae.default_path(model, hook, cfg, corpus_cfg)
    if path.exists() and not args.force:
        print(f"cached SAE at {path} (use --force to retrain)")
    else:
        s, report = sae.train(model, hook, config=cfg, corpus_config=corpus_cfg)
        sae.save(s, path, report)
    print(sae_table(sae.report_of(path)) + f"\n(full report: {path}/interp_steer.json)")
    shipped = sae.shipped_path(model, hook, cfg, corpus_cfg)
    if shipped.exists():
        # a retrain reproduces the shipped SAE when these agree within noise
        print(f"\nthe shipped SAE ({shipped}):\n" + sae_table(sae.report_of(shipped)))
    if args.ship:
        print(f"shipped (float16) as {sae.ship(path, shipped)}")


def sae_table(report: dict) -> str:
    """The report's per-genre numbers as a short table."""
    rows = [("held-out " + g, r) for g, r in report.get("heldout_by_genre", {}).items()]
    rows += [("generic " + g, r) for g, r in (report.get("generic_eval") or {}).items()]
    lines = [f"{'split':<22} {'EV':>6} {'L0':>6} {'dead':>6} {'CE rec.':>8} {'tokens':>9}"]
    for name, r in rows:
        ce = r.get("ce_loss_recovered")
        lines.append(
            f"{name:<22} {r['explained_variance']:6.3f} {r['l0']:6.1f} {r['dead_fraction']:6.3f} "
            f"{'' if ce is None else f'{ce:8.3f}':>8} {r['n_tokens']:9,}"
        )
    return "\n".join(lines)


def _run_analysis(name: str, quick: bool, seed: int) -> None:
    if analysis_names() is None:
        raise SystemExit(
            "error: the analyses live in the repository, not the package: run from a checkout"
        )
    from analyses import load

    mod = load(name)
    argv = ["--quick"] if quick else []
    mod.main([*argv, "--seed", str(seed)])


def cmd_identifiability(args) -> None:
    _run_analysis("identifiability", args.quick, args.seed)


def _analysis_cell(_model, cell) -> list[dict]:
    import time

    t0 = time.time()
    _run_analysis(cell.id, cell.args["quick"], cell.args["seed"])
    return [{"analysis": cell.id, "seconds": time.time() - t0}]


def cmd_figures(args) -> None:
    """Each analysis is one cell: with --executor ray they run in parallel, one per worker,
    and --resume skips the analyses a killed run had finished."""
    from interp_steer.runs.executor import Cell, ResultStore, run_grid

    names = args.only or analysis_names()
    if names is None:
        raise SystemExit(
            "error: the analyses live in the repository, not the package: run from a checkout"
        )
    cells = [Cell(n, {"quick": args.quick, "seed": args.seed}) for n in names]
    store = ResultStore(
        Path("figures") / ".runs" / f"figures{'_quick' if args.quick else ''}_seed{args.seed}",
        {"figures": "analyses", "quick": args.quick, "seed": args.seed},
    )
    done = run_grid(
        cells,
        _analysis_cell,
        executor=args.executor,
        workers=args.workers,
        store=store,
        resume=args.resume,
        progress=False,
    )
    for rows in done:
        print(f"{rows[0]['analysis']}: {rows[0]['seconds']:.0f} s")


def parser() -> argparse.ArgumentParser:
    from interp_steer.methods import METHODS
    from interp_steer.models import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="interp-steer", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name, fn, help):
        s = sub.add_parser(name, help=help, description=help)
        s.set_defaults(fn=fn)
        s.add_argument("--seed", type=int, default=0)
        return s

    def with_model(s):
        s.add_argument("--model", default=DEFAULT_MODEL, help="embedded name or a TL model name")
        s.add_argument("--device", default="cpu")
        return s

    def with_executor(s):
        from interp_steer.runs.executor import EXECUTORS

        s.add_argument("--executor", default="local", choices=EXECUTORS, help="ray: needs [scale]")
        s.add_argument("--workers", type=int, help="ray: number of workers (default: all CPUs)")
        s.add_argument("--resume", action="store_true", help="skip cells a killed run finished")
        return s

    s = with_model(
        add("build", cmd_build, "Build a steering vector from contrastive data and save it.")
    )
    # no seed unless given: sae_feature takes none, and a --seed it ignored would be swallowed
    s.set_defaults(seed=None)
    s.add_argument("--data", default="sentiment", help="shipped dataset or JSON file of pairs")
    s.add_argument("--hook", required=True, help="e.g. blocks.10.hook_resid_pre")
    s.add_argument("--method", default="mean_diff", choices=METHODS)
    s.add_argument("--k", type=int, default=1, help="pca: number of components")
    s.add_argument("--prompt", help="one_shot: the prompt")
    s.add_argument("--promote", help="one_shot: completion to promote")
    s.add_argument("--suppress", help="one_shot: completion to suppress")
    s.add_argument("-o", "--out", required=True, help="output .safetensors path")
    s.add_argument("--gguf", help="also write a llama.cpp control vector (.gguf) here")
    s.add_argument("--gguf-alpha", type=float, default=1.0, help="scale baked into --gguf")

    s = with_model(add("audit", cmd_audit, "Audit a steering vector: one HTML + JSON report."))
    s.add_argument("--vector", required=True, help="a saved SteeringVector (.safetensors)")
    s.add_argument("--out", default="report", help="folder for index.html, audit.json, cells")
    s.add_argument("--quick", action="store_true", help="minutes instead of the full grid")
    s.add_argument("--success", help="vader | trait:NAME | contains:word1,word2")
    s.add_argument("--prompts", help="a text file of prompts, one per line")
    s.add_argument("--r", type=float, help="the operating strength (default: chosen)")
    s.add_argument(
        "--positions",
        default="all",
        # interventions.POSITION_NAMES (a test checks), written out to keep startup free of torch
        choices=["all", "all_but_first", "prompt", "generated", "last_and_generated"],
    )

    s = with_model(add("generate", cmd_generate, "Generate text, optionally steered."))
    s.add_argument("--prompt", action="append", required=True, help="repeatable")
    s.add_argument("--vector", help="a saved SteeringVector")
    s.add_argument("--alpha", type=_floats, default=[1.0], help="comma-separated strengths")
    s.add_argument(
        "--positions",
        default="all",
        # interventions.POSITION_NAMES (a test checks), written out to keep startup free of torch
        choices=["all", "all_but_first", "prompt", "generated", "last_and_generated"],
    )
    s.add_argument("--max-new-tokens", type=int, default=60)
    s.add_argument("--temperature", type=float, default=0.0)

    s = with_model(add("sweep", cmd_sweep, "Strength sweep: success, coherence, diversity, KL."))
    s.add_argument("--vector", action="append", required=True, help="repeatable")
    s.add_argument("--alphas", type=_floats, required=True)
    s.add_argument("--prompt", action="append", help="repeatable; default: --prompts-from")
    s.add_argument(
        "--prompts-from", default="sentiment", help="shipped dataset whose prompts to use"
    )
    s.add_argument("--success", help="vader | trait:NAME | contains:word1,word2")
    s.add_argument("--samples", type=int, default=4)
    s.add_argument("--max-new-tokens", type=int, default=48)
    s.add_argument("--out", help="path stem for CSV/JSON output (and its .cells/ store)")
    with_executor(s)

    s = add("identifiability", cmd_identifiability, "Run the identifiability analysis (figures/).")
    s.add_argument("--quick", action="store_true")

    s = with_model(add("sae-train", cmd_sae_train, "Train (and cache) an SAE with sae-lens."))
    s.add_argument("--hook", help="default: middle layer hook_resid_pre")
    s.add_argument(
        "--ship",
        action="store_true",
        help="also copy it (float16, sha256 sums) into interp_steer/data/saes, where "
        "load_default finds it without training",
    )
    s.add_argument("--architecture", choices=["topk", "standard"], help="default: topk")
    s.add_argument("--k", type=int, help="topk latents per token (default 64)")
    s.add_argument("--expansion", type=int, help="d_sae / d_model (default 4)")
    s.add_argument("--training-tokens", type=int, help="default 6,000,000 (~3 passes)")
    s.add_argument(
        "--corpus",
        choices=["default", "broad"],
        default="default",
        help="generic corpus genres: default (code, docs, prose, books, chat) or broad "
        "(+ wiki, factbook, speeches)",
    )
    s.add_argument("--force", action="store_true")

    s = add("figures", cmd_figures, "Regenerate the analyses' figures and JSON in figures/.")
    s.add_argument("--quick", action="store_true")
    s.add_argument("--only", action="append", choices=analysis_names())
    with_executor(s)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


if __name__ == "__main__":
    main()
