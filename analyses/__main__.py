"""python -m analyses list | python -m analyses run NAME [its options, e.g. --quick]"""

from __future__ import annotations

import sys

from analyses import ANALYSES, load


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv[0] == "list":
        for name, what in ANALYSES.items():
            print(f"{name:<24}{what}")
        return
    if argv[0] == "run" and len(argv) >= 2:
        load(argv[1]).main(argv[2:])
        return
    raise SystemExit(f"usage: {__doc__}")


if __name__ == "__main__":
    main()
