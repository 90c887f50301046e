"""Resumable cells: one JSON file per unit of work, written atomically with the commit that
computed it, so a killed run loses only the cell in flight."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from interp_steer._io import write_json
from interp_steer.runs.provenance import code_version


class MissingCell(LookupError):
    """A cell that a run told not to compute would have to compute."""


def cell(path: Path, compute: Callable[[], dict], allow_compute: bool = True) -> dict:
    """Load a finished cell, or compute it and write it atomically (with the commit that
    computed it). An unreadable cell file (a crash mid-write cannot leave one, a hand edit
    can) is recomputed.

    Args:
        path: the cell's JSON file.
        compute: makes the cell's dict when it is missing.
        allow_compute: False raises `MissingCell` instead of computing.
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        pass
    if not allow_compute:
        raise MissingCell(str(path))
    result = {**compute(), "_commit": code_version()}
    write_json(Path(path), result)
    return result


def config_hash(cfg, exclude: tuple[str, ...] = ()) -> str:
    """A short hash of the config fields (a dataclass) that change what the cells hold."""
    d = {k: v for k, v in asdict(cfg).items() if k not in exclude}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
