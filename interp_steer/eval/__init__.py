"""Evaluation: what a steered text is scored with, and the statistics on those scores.

- `metrics`: coherence, perplexity, KL, diversity, capability (code tasks, run in `sandbox`).
- `classifiers`: concept scorers (VADER, MiniLM probes).
- `judges`: misalignment judges (embedding judge, model judges reading a digit tree).
- `stats`: the one home of the project's statistics (Wilson, TOST and its power, AUROC,
  Cohen's d, cluster bootstrap, Holm).
- `sweep`: a strength sweep that scores each strength with the measures above.
- `sandbox`: runs model-written code under bubblewrap and rlimits.
"""
