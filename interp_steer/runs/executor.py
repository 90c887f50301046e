"""Run a grid of independent cells in this process or on Ray, into a resumable results store.

A grid is a list of `Cell`s: a stable id plus the arguments of one unit of work, e.g. one
(vector, strength chunk) of a sweep. ``work(model, cell) -> rows`` computes a cell; its rows
(a list of JSON-able dicts) are written atomically to ``<store>/<cell id>.jsonl`` as soon as
the cell finishes, so a killed run loses only the cells in flight, and ``resume=True`` skips
every cell that has a part.

- ``executor="local"``: one process, cells in order, the model loaded once.
- ``executor="ray"``: one actor per worker, each holding its own model across cells. Ray
  connects to the cluster in ``RAY_ADDRESS`` (``ray start --head`` on one machine, workers
  ``ray start --address=HEAD:6379``) or starts a local instance when none is given.

Cells must not depend on each other or on the order they run in (give each sampled row its own
seed, as `interp_steer.generation.generate` does): then both executors return the same rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp_steer._io import write_json, write_text

Executor = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = get_args(Executor)
Rows = list[dict]
# what a worker is given: the model itself, a zero-argument loader (so workers load their own
# copy from the cache instead of receiving it over the wire), or None for model-free work
ModelSource = HookedTransformer | Callable[[], HookedTransformer] | None


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``id`` names its results part: letters, digits, '-', '_', '.', '='."""

    id: str
    args: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.id or any(not (c.isalnum() or c in "-_.=") for c in self.id):
            raise ValueError(f"cell id {self.id!r} must be non-empty and use [A-Za-z0-9-_.=]")


def config_digest(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Floats in a config (strengths, vector components) come out of float32 matrix products whose
# last bits differ between CPUs and between GEMM backends; a store written on another machine
# still holds the same config when every float agrees to this relative tolerance.
CONFIG_RTOL = 1e-4


def config_mismatch(found, config, path: str = "config") -> str | None:
    """Where two JSON-able configs differ (None when they agree), floats compared to
    `CONFIG_RTOL`: a float vector (a list of numbers) relative to its largest entry."""
    found, config = (
        json.loads(json.dumps(found, default=str)),
        json.loads(json.dumps(config, default=str)),
    )  # the form the manifest stores: tuples become lists, numpy scalars numbers
    return _mismatch(found, config, path)


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _mismatch(a, b, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k} is only in {'the store' if k in a else 'this run'}"
            if (m := _mismatch(a[k], b[k], f"{path}.{k}")) is not None:
                return m
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path} has {len(a)} entries in the store, {len(b)} in this run"
        if a and all(map(_is_number, a + b)):
            scale = max(max(abs(x) for x in a + b), 1e-12)
            worst = max(abs(x - y) for x, y in zip(a, b))
            return None if worst <= CONFIG_RTOL * scale else f"{path} differs by {worst:.3g}"
        for i, (x, y) in enumerate(zip(a, b)):
            if (m := _mismatch(x, y, f"{path}[{i}]")) is not None:
                return m
        return None
    if _is_number(a) and _is_number(b):
        ok = abs(a - b) <= CONFIG_RTOL * max(abs(a), abs(b))
        return None if ok else f"{path}: {a!r} in the store, {b!r} in this run"
    return None if a == b else f"{path}: {a!r} in the store, {b!r} in this run"


class ResultStore:
    """One JSONL part per finished cell under ``root``, plus ``manifest.json`` holding the
    config the parts belong to: resuming into a store written for another config is refused
    (floats are compared to `CONFIG_RTOL`, so a store moves between machines)."""

    def __init__(self, root: str | os.PathLike, config: dict):
        self.root = Path(root)
        self.digest = config_digest(config)
        manifest = self.root / "manifest.json"
        if manifest.exists():
            try:
                found = json.loads(manifest.read_text())["config"]
            except (ValueError, KeyError, TypeError):
                found = None  # half-written: rewrite it below
            if found is not None and (why := config_mismatch(found, config)) is not None:
                raise ValueError(
                    f"results store {self.root} holds cells of another config ({why}); "
                    "use another output path or delete it"
                )
            if found is not None:
                return  # keep the manifest as the cells' first run wrote it
        write_json(manifest, {"digest": self.digest, "config": config})

    def part(self, cell_id: str) -> Path:
        return self.root / f"{cell_id}.jsonl"

    def read(self, cell_id: str) -> Rows | None:
        """The cell's rows, or None when it has no readable part (a corrupt one is dropped)."""
        path = self.part(cell_id)
        if not path.exists():
            return None
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line]
        except ValueError as e:
            warnings.warn(f"results part {path} is unreadable ({e}); recomputing it", stacklevel=2)
            path.unlink()
            return None

    def write(self, cell_id: str, rows: Rows) -> None:
        write_text(self.part(cell_id), "".join(json.dumps(r, default=_scalar) + "\n" for r in rows))


def _scalar(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_grid(
    cells: Sequence[Cell],
    work: Callable[[HookedTransformer | None, Cell], Rows],
    model: ModelSource = None,
    executor: Executor = "local",
    workers: int | None = None,
    store: ResultStore | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[Rows]:
    """Each cell's rows, in the order of ``cells``. See the module docstring."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if resume and store is None:
        raise ValueError("resume=True needs a results store (an output path)")
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise ValueError("cell ids must be unique")
    results: dict[str, Rows] = {}
    if resume:
        for c in cells:
            rows = store.read(c.id)
            if rows is not None:
                results[c.id] = rows
    todo = [c for c in cells if c.id not in results]
    bar = tqdm(
        total=len(cells), initial=len(results), desc=f"cells ({executor})", disable=not progress
    )

    def finish(cell: Cell, rows: Rows) -> None:
        # round-trip through JSON so both executors hand back identical plain rows
        rows = json.loads(json.dumps(rows, default=_scalar))
        if store is not None:
            store.write(cell.id, rows)
        results[cell.id] = rows
        bar.update()

    if todo and executor == "local":
        m = materialise(model)
        for c in todo:
            finish(c, work(m, c))
    elif todo:
        for c, rows in _run_ray(todo, work, model, workers):
            finish(c, rows)
    bar.close()
    return [results[c.id] for c in cells]


def materialise(source: ModelSource) -> HookedTransformer | None:
    """The model a `ModelSource` stands for (a module is callable too, so test for it first)."""
    if source is None or isinstance(source, HookedTransformer):
        return source
    return source()


def ray_module():
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            "executor='ray' needs Ray: pip install 'interp_steer[scale]' (ray>=2.60)"
        ) from e
    return ray


def _run_ray(cells: list[Cell], work, model: ModelSource, workers: int | None):
    ray = ray_module()
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        # a local instance gets one CPU per worker; a cluster brings its own resources.
        # Ray renices its workers to 15, so on a busy machine any other process starves them
        # (the cells are the work here, not background chores): keep them at 0 locally.
        local = {} if address else {"_system_config": {"worker_niceness": 0}}
        ray.init(
            address=address or None,
            num_cpus=None if address else (workers or os.cpu_count()),
            include_dashboard=False,
            log_to_driver=False,
            **local,
        )
    n = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    threads = max(1, (os.cpu_count() or 1) // n) if not os.environ.get("RAY_ADDRESS") else None
    source = ray.put(model) if isinstance(model, HookedTransformer) else model
    actor = ray.remote(num_cpus=1)(_Worker)
    actors = [actor.remote(source, work, threads) for _ in range(n)]
    by_id = {c.id: c for c in cells}
    try:
        pool = ActorPool(actors)
        for cell_id, rows in pool.map_unordered(lambda a, c: a.run.remote(c), cells):
            yield by_id[cell_id], rows
    finally:  # free the workers' models (and the instance this call started)
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


class _Worker:
    """A Ray actor: loads (or receives) the model once, then computes cells."""

    def __init__(self, source, work, threads: int | None):
        import torch

        if threads:  # share the machine's cores among the workers instead of oversubscribing
            torch.set_num_threads(threads)
        self.model = materialise(source)
        self.work = work

    def run(self, cell: Cell) -> tuple[str, Rows]:
        return cell.id, self.work(self.model, cell)
