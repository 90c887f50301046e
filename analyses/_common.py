"""What every analysis shares: figure + JSON writing, model loading, the CLI skeleton."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from interp_steer._io import atomic_path, write_json  # noqa: E402
from interp_steer.runs.cells import MissingCell, cell, config_hash  # noqa: E402, F401
from interp_steer.runs.provenance import code_version  # noqa: E402

FIGURES = (Path(__file__).resolve().parent.parent / "figures").resolve()


def save_figure(fig, stem: Path, numbers: dict, cfg) -> None:
    """Write ``stem``.png and ``stem``.json (numbers, the config and the code that made them)."""
    # read before the PNG replaces a tracked file, or the first figure of a run would call
    # its own checkout dirty (code_version is read once per process)
    version = code_version()
    # not with_suffix: a model name such as "qwen2.5-coder-0.5b-instruct" has dots in it
    with atomic_path(stem.with_name(stem.name + ".png")) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    write_json(
        stem.with_name(stem.name + ".json"),
        {"config": asdict(cfg), "interp_steer": version, **numbers},
    )


def stem(
    out_dir: Path, analysis: str, model_name: str, quick: bool, name: str | None = None
) -> Path:
    parts = [analysis, model_name] + (["quick"] if quick else []) + ([name] if name else [])
    return Path(out_dir) / "_".join(parts)


def arg_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small grid for a fast check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("figures"))
    ap.add_argument(
        "--allow-dirty",
        action="store_true",
        help="write into figures/ even from a checkout with uncommitted changes",
    )
    return ap


def require_clean(args) -> None:
    """Refuse to write committed figures from a dirty tree: each JSON names its clean commit."""
    if Path(args.out).resolve() == FIGURES and not args.allow_dirty and "+dirty" in code_version():
        raise SystemExit(
            "refusing to write into figures/ from a checkout with uncommitted "
            "changes: commit first, pass --out elsewhere, or --allow-dirty"
        )


def models_parser(doc: str, default: str) -> argparse.ArgumentParser:
    """`arg_parser` plus --models, for the analyses that run over several models."""
    ap = arg_parser(doc)
    ap.add_argument("--models", help=f"comma-separated (default: {default})")
    return ap


def models_config(args, config_cls):
    """The config of a `models_parser` command line (refusing a dirty tree for figures/)."""
    require_clean(args)
    kw = {"seed": args.seed}
    if args.models:
        kw["models"] = args.models.split(",")
    return (config_cls.quick_config if args.quick else config_cls)(**kw)


def single_model_main(doc: str, config_cls, run, headline, argv=None) -> None:
    """The CLI of an analysis over one model: --model, --quick, --seed, --out."""
    ap = arg_parser(doc)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args(argv)
    require_clean(args)
    make = config_cls.quick_config if args.quick else config_cls
    cfg = make(model=args.model, seed=args.seed)
    print(headline(run(cfg, args.out), cfg))
