"""The steering-window study's facts, prompts and configuration."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files

import numpy as np

# run order: the within-family pair (the headline) first; the figure sorts by size
MODELS = [
    "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-coder-1.5b-instruct",
    "smollm2-135m-instruct",
    "gemma-3-270m",
]
# Bostock's table (Gemma 3 -it, raw multiplier units of an unnormalised vector).
BOSTOCK = {
    "1B": (0.7, 7.0, 6.3),
    "4B": (2.0, 3.0, 1.0),
    "12B": (None, 3.0, 0.0),
    "27B": (3.0, 3.0, 0.0),
}
# Eight framings of one statement; every one ends with the answer and a full stop, so the
# answer's last token sits right before the final ".".
FRAMES = [
    "{s}",
    "Fact: {s}",
    "It is well known that {l}",
    "Everyone knows that {l}",
    "Here is a true statement: {s}",
    "Q: {q}\nA: {s}",
    "According to the encyclopedia, {l}",
    "Trivia: {s}",
]
PROBE = "{q} Answer in one word."
READS = ("last", "answer")
# Cells written before cells recorded their own commit all came from this one.
RUN_START_COMMIT = "0.1.0+g157752028b9e"


def facts() -> list[dict]:
    return json.loads(files("interp_steer.data").joinpath("facts.json").read_text())["facts"]


def statements(fact: dict, answer: str) -> list[str]:
    s = fact["statement"].format(answer)
    low = s[0].lower() + s[1:] if s.split()[0] in ("The", "A", "An") else s
    return [f.format(s=s, l=low, q=fact["question"]) for f in FRAMES]


@dataclass
class Config:
    models: list[str] = field(default_factory=lambda: list(MODELS))
    # the 1.5B model runs in bfloat16: 7 GB peak instead of 20 GB, and faster on this CPU
    dtypes: dict[str, str] = field(
        default_factory=lambda: {"qwen2.5-coder-1.5b-instruct": "bfloat16"}
    )
    depth: float = 0.75
    rel_strengths: list[float] = field(
        default_factory=lambda: [round(float(r), 4) for r in np.geomspace(0.05, 5.0, 15)]
    )
    samples: int = 50
    code_tasks: int = 10
    code_samples: int = 5
    screen_samples: int = 20
    known_threshold: float = 0.8
    questions_per_model: int = 2
    temperature: float = 0.7
    answer_tokens: int = 12
    code_tokens: int = 72
    floor: float = 0.5
    min_code_rate: float = 0.2
    n_boot: int = 1000
    batch_size: int = 64
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        base = dict(
            models=["smollm2-135m-instruct"],
            rel_strengths=[0.1, 0.5, 2.0],
            samples=6,
            code_tasks=3,
            code_samples=2,
            screen_samples=4,
            questions_per_model=1,
            n_boot=200,
            quick=True,
        )
        return cls(**{**base, **kw})
