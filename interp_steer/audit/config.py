"""What an audit measures, and how much of it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from interp_steer.interventions import PositionName as Positions


@dataclass(frozen=True)
class AuditConfig:
    """The sizes and grids of an audit. `quick` is the ≤ 5-minute version for SmolLM2 on 2 CPU
    cores; the defaults are the full one.

    Attributes:
        r_grid: strengths in the project's unit r (‖αv‖ / median token norm at the hook,
            position 0 excluded); 0 is added as the unsteered reference.
        operating_r: the strength the identifiability and side-effect sections use; None picks
            the first success majority of the dose–response (or, without one, the largest r
            that keeps capability).
        n_prompts: open prompts (the vector's dataset's, else the shipped general set).
        samples: samples per prompt and strength (temperature 1, top-p 0.95).
        max_new_tokens: tokens per generation.
        positions: where the vector is added.
        eps: sizes of the orthogonal perturbations δ (‖δ‖ = eps · ‖v‖), drawn from the
            activation null space.
        code_tokens: tokens per answer to a capability (code) task.
        em_samples: answers per emergent-misalignment question at the operating point.
        trace_tokens: generated tokens in the per-token trace.
        sae_top: latents shown in the SAE view.
        n_boot: bootstrap replicates for every CI.
        seed: the seed of every draw.
    """

    r_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0)
    operating_r: float | None = None
    n_prompts: int = 16
    samples: int = 4
    max_new_tokens: int = 48
    positions: Positions = "all"
    eps: tuple[float, ...] = (0.25, 0.5, 1.0)
    code_tokens: int = 96
    em_samples: int = 50
    trace_tokens: int = 16
    sae_top: int = 6
    n_boot: int = 1000
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.r_grid or any(r <= 0 for r in self.r_grid):
            raise ValueError(f"r_grid must hold positive strengths, got {self.r_grid}")
        if list(self.r_grid) != sorted(set(self.r_grid)):
            raise ValueError(f"r_grid must be increasing without repeats, got {self.r_grid}")
        names = (
            "n_prompts",
            "samples",
            "max_new_tokens",
            "code_tokens",
            "em_samples",
            "trace_tokens",
        )
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.operating_r is not None and not self.operating_r > 0:
            raise ValueError(f"operating_r must be positive, got {self.operating_r}")

    @classmethod
    def quick(cls, **kw) -> AuditConfig:
        """A small grid that finishes in minutes on 2 CPU cores (SmolLM2)."""
        small = dict(
            r_grid=(0.1, 0.3, 0.8, 2.0),
            n_prompts=6,
            samples=2,
            max_new_tokens=32,
            eps=(0.5, 1.0),
            em_samples=4,
            trace_tokens=12,
            n_boot=300,
        )
        return replace(cls(), **{**small, **kw})
