"""Cold and warm `load_model()` times for the embedded models.

Cold = conversion from the GGUF into an empty cache dir; warm = the cached safetensors.
Run: python -m benchmarks.bench_load [--models smollm2-135m-instruct gemma-3-270m]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CODE = """
import time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
from interp_steer import load_model
t1 = time.perf_counter()
load_model({name!r})
print(f"{{t1 - t0:.2f}} {{time.perf_counter() - t1:.2f}}")
"""


def _run(name: str, cache: str) -> tuple[float, float]:
    env = dict(os.environ, INTERP_STEER_CACHE=cache)
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(name=name)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct"])
    args = ap.parse_args()
    print(f"{'model':<24} {'import s':>9} {'cold load s':>12} {'warm load s':>12}")
    for name in args.models:
        with tempfile.TemporaryDirectory() as cache:
            _, cold = _run(name, cache)
            imp, warm = min((_run(name, cache) for _ in range(3)), key=lambda r: r[1])
        print(f"{name:<24} {imp:>9.2f} {cold:>12.2f} {warm:>12.2f}")
    print("warm target: <= 3 s (fresh process, import excluded)")


if __name__ == "__main__":
    main()
