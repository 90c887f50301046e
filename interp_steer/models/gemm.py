"""GEMMs against frozen weights: on CPU float32 the weights are prepacked once for oneDNN
(torch's own ``mkldnn`` linear, the kernel Inductor's CPU freezing uses), and the first call
per weight shape and row bucket times it against ``F.linear`` (MKL's sgemm) and keeps the
faster one: on AMD EPYC the packed kernel is 2-4x faster at decode and prefill shapes, on an
Intel Xeon with AMX it loses at one row (``benchmarks/bench_linear.py``). Choices persist per
machine in the cache. The packed copies cost one extra copy of the linear weights in memory;
autograd through them is not supported, so a forward that needs gradients uses the dense
weights.
"""

from __future__ import annotations

import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F  # noqa: N812

from interp_steer._io import cache_dir, write_json


def _onednn_available() -> bool:
    mk = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(mk, "_linear_pointwise")
        and hasattr(mk, "_reorder_linear_weight")
    )


ONEDNN_AVAILABLE = _onednn_available()


def packable(w) -> bool:
    return ONEDNN_AVAILABLE and w.device.type == "cpu" and w.dtype == torch.float32


# (out features, in features, row bucket) -> whether the packed oneDNN kernel won the timing
_CHOICES: dict[tuple[int, int, int], bool] = {}
# ... and the same decisions kept on disk per CPU, torch build and thread count, so a new
# process (a notebook kernel, a CLI call, a test worker) does not time every shape again;
# deleting the file re-times.
CHOICES_FILE = "gemm_choices.json"


def cpu_model() -> str:
    """The CPU's marketing name: backend choices and ratios depend on the vendor."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _machine_key() -> str:
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _stored_choice(key: tuple[int, int, int]) -> bool | None:
    try:
        stored = json.loads((cache_dir() / CHOICES_FILE).read_text())
        return stored[_machine_key()][",".join(map(str, key))]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or a damaged file: time it


def _store_choice(key: tuple[int, int, int], packed: bool) -> None:
    path = cache_dir() / CHOICES_FILE
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            stored = {}
    except (OSError, ValueError):
        stored = {}
    stored.setdefault(_machine_key(), {})[",".join(map(str, key))] = packed
    try:
        write_json(path, stored)  # atomic: a concurrent writer can lose an entry, not corrupt
    except OSError:
        pass  # a read-only cache only costs the timing again


def row_bucket(rows: int) -> int:
    """Row counts grouped by powers of two (1, 2, 4, ... 4096): one timing per group."""
    return 1 if rows <= 1 else min(1 << (rows - 1).bit_length(), 4096)


def backend_choices() -> dict[str, str]:
    """The GEMM backend chosen so far in this process, per weight shape and row bucket."""
    return {
        f"{o}x{i} rows<={r}": "oneDNN packed" if packed else "F.linear"
        for (o, i, r), packed in sorted(_CHOICES.items())
    }


def _packed_wins(dense, packed, x, budget_s: float = 0.05) -> bool:
    """Whether ``packed(x)`` is faster than ``dense(x)``: both warmed up, then timed in
    alternation (so a burst of load from elsewhere hits both) and compared by their medians.
    Up to 7 pairs, fewer for a slow shape, so one decision costs about ``budget_s``."""
    dense(x), packed(x)  # warm-up (first calls allocate and fault in the packed weight)
    t = time.perf_counter()
    dense(x)
    reps = max(3, min(7, int(budget_s / max(time.perf_counter() - t, 1e-6))))
    times: dict = {dense: [], packed: []}
    for _ in range(reps):
        for fn in (dense, packed):
            t = time.perf_counter()
            fn(x)
            times[fn].append(time.perf_counter() - t)
    return statistics.median(times[packed]) < statistics.median(times[dense])


class FrozenLinear:
    """``F.linear(x, w, b)`` for a frozen weight, through a oneDNN-prepacked copy on CPU when
    that is faster for this weight shape and row count.

    Which kernel wins depends on the CPU: oneDNN's packed GEMM is 2-4x faster than MKL's sgemm
    on AMD EPYC at every shape here, but 0.5x at one row on an Intel Xeon with AMX. So the
    first call per (shape, row bucket) times both on its input (alternating, medians) and the
    faster one is used from then on (`backend_choices`), in this process and, through
    CHOICES_FILE in the cache, in later ones on the same CPU.
    """

    __slots__ = ("w", "b", "packed")

    def __init__(self, w, b=None, pack: bool = False):
        self.w, self.b, self.packed = w, b, None
        if pack and packable(w):
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(w)
                probe = w.new_ones(1, w.shape[1])  # guard against a broken backend build
                if torch.allclose(
                    self.packed_call(probe, packed), F.linear(probe, w, b), rtol=1e-4, atol=1e-4
                ):
                    self.packed = packed
            except RuntimeError:
                pass

    def packed_call(self, x, packed):
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.b, "none", [], "")

    def __call__(self, x):
        if (
            self.packed is not None
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and not (x.requires_grad and torch.is_grad_enabled())
        ):
            key = (*self.w.shape, row_bucket(x.numel() // x.shape[-1]))
            use = _CHOICES.get(key)
            if use is None:
                use = _stored_choice(key)
                if use is None:
                    with torch.no_grad():
                        use = _packed_wins(
                            lambda v: F.linear(v, self.w, self.b),
                            lambda v: self.packed_call(v, self.packed),
                            x,
                        )
                    _store_choice(key, use)
                _CHOICES[key] = use
            if use:
                return self.packed_call(x, self.packed)
        return F.linear(x, self.w, self.b)

    def __deepcopy__(self, memo):  # opaque packed tensors neither copy nor pickle
        return FrozenLinear(self.w.clone(), None if self.b is None else self.b.clone())

    def __reduce__(self):
        return FrozenLinear, (self.w, self.b)
