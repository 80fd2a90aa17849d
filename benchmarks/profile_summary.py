"""Top costs of a py-spy profile (``py-spy record --format raw``), inclusive and by method.

    .venv/bin/py-spy record --format raw -o runs/prof.txt -- \
        .venv/bin/python -m metarec evaluate ...
    .venv/bin/python benchmarks/profile_summary.py runs/prof.txt

Prints the share of samples under each (method unit) and, inside them, the functions with the
most inclusive samples (a function counted once per stack).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_PHASES = (
    "tune (",
    "fit_context",
    "validation_launches",
    "make_case",
    "score_case",
    "load_catalog",
    "write_run",
)
_FRAME = re.compile(r"^(?P<name>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        names = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame.strip())
            name = f"{match['name']} ({Path(match['file']).name})" if match else frame.strip()
            names.append(name)
        for name in set(names):
            inclusive[name] += n
        phase = "other"
        for name in names:
            if name.startswith(_PHASES):
                phase = name.split(" ")[0]
        phases[phase] += n
    print(f"{total} samples")
    for phase, n in phases.most_common():
        print(f"  {phase:<22} {n / total:6.1%}")
    print("inclusive:")
    for name, n in inclusive.most_common(args.top):
        print(f"  {n / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
