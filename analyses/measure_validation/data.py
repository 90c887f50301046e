"""The labelled model text (items, labels, split, sources) and the Config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

LABEL_FILES = ("labels_a.jsonl", "labels_b.jsonl")
ADJUDICATED = "labels_adjudicated.jsonl"


@dataclass
class Config:
    fluency_model: str = "smollm2-135m-instruct"
    # Qwen readers (ModelJudge's coherence digit tree) are candidates too, but scoring the 661
    # items takes about 1 h (0.5B) and 3 h (1.5B) on 2 CPU cores: add them with --readers
    readers: tuple[str, ...] = ()
    # float32 on CPU: bf16 is slow without AVX-512-BF16 / AMX; the eager path keeps 1.5B in ~8 GB
    reader_dtype: str = "float32"
    n_boot: int = 2000
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> Config:
        """Fewer bootstrap resamples, from the same cells."""
        return cls(**{"n_boot": 200, "quick": True, **kw})


def _data_dir():
    return resources.files("interp_steer.data").joinpath("modeltext")


def load_items() -> list[dict]:
    return json.loads(_data_dir().joinpath("items.json").read_text())


def _jsonl(name: str) -> dict[str, dict]:
    text = _data_dir().joinpath(name).read_text()
    return {r["id"]: r for r in map(json.loads, text.splitlines()) if r}


def load_labels() -> dict[str, dict]:
    """Final labels: where the two labellers agree on every field that counts, their shared
    label (coherence the mean of theirs); elsewhere the adjudicated one."""
    a, b = (_jsonl(n) for n in LABEL_FILES)
    adj = _jsonl(ADJUDICATED)
    out = {}
    for i, la in a.items():
        lb = b[i]
        if i in adj:
            out[i] = {**adj[i], "adjudicated": True}
        else:
            out[i] = {**la, "coherence": (la["coherence"] + lb["coherence"]) / 2}
            out[i]["adjudicated"] = False
    return out


def load_split() -> dict[str, str]:
    split = json.loads(_data_dir().joinpath("split.json").read_text())
    return {i: name for name, ids in split.items() for i in ids}


def load_sources() -> dict[str, dict]:
    return json.loads(_data_dir().joinpath("sources.json").read_text())


# ---------------------------------------------------------------- scoring cells
