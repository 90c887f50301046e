"""The studies and checks that regenerate the figures, one package or module each.

Every analysis has the same face: a ``Config`` dataclass (``Config.quick_config()`` for a
small run), ``run(cfg, out_dir, ...)`` that computes into resumable cells and writes its
JSON and figures, ``headline(...)`` for the terminal, and ``main(argv)`` for its command
line (``--quick``, ``--seed``, ``--out``, ``--allow-dirty``). ``python -m analyses list``
names them; ``python -m analyses run NAME [options]`` runs one (options go to its ``main``).
"""

from __future__ import annotations

import importlib

# name -> what it regenerates (the order of `list`)
ANALYSES = {
    "identifiability": "steering vectors are not identifiable (seed 001)",
    "synthetic_data": "steered synthetic data for safety detectors (seed 002)",
    "emergent_misalignment": "one-shot vectors and emergent misalignment (seeds 003, 000)",
    "steering_window": "the viable steering window across model sizes (seed 004)",
    "sae_vs_steering": "steering vectors against SAE interventions at equal KL",
    "measure_validation": "the text measures validated on labelled model text",
    "judge_agreement": "agreement between misalignment judges on the EM answers",
    "judge_audit": "the EM judge audited against blind labels",
}


def load(name: str):
    """The analysis module ``name`` (a key of `ANALYSES`)."""
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; have {', '.join(ANALYSES)}")
    return importlib.import_module(f"analyses.{name}")
