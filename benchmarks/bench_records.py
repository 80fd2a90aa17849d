"""A finished run's records (bootstrap intervals) recomputed from its unit files, timed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_records.py RUN \\
        [--methods metarec-ridge,als,popularity]

``RUN`` is a folder written by ``metarec evaluate`` (its ``units/`` and ``config.json``). Each
method's records are what :func:`metarec.evaluation.records.method_records` makes of its units,
exactly as the harness calls it after the method's last unit. The summary (last line, JSON)
holds the seconds per method, how many methods' records equal the run's ``metrics.json`` byte for
byte, the largest difference of any mean or interval bound from it, and a sha256 over the
records, so ``benchmarks/against.sh`` shows the speed ratio and what changed. The units are
read whatever code wrote them (their keys are not checked): records depend only on the arrays.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

from metarec.config import EvalConfig
from metarec.evaluation.harness import _method_results
from metarec.evaluation.records import method_records
from metarec.evaluation.units import UnitResult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--methods", default="metarec-ridge,als,popularity")
    args = parser.parse_args()
    config = EvalConfig(**json.loads((args.run / "config.json").read_text())["evaluation"])
    families = {}
    finished = {}
    for path in sorted((args.run / "units").glob("*.json")):
        document = json.loads(path.read_text())
        unit = (document["fold"], document["method"])
        loaded = UnitResult.load(path.with_suffix(""), document["key"])
        assert loaded is not None, path
        finished[unit] = loaded
    records = json.loads((args.run / "metrics.json").read_text())["records"]
    families = {r["method"]: r["family"] for r in records}
    shots_list = list(dict.fromkeys(r["shots"] for r in records))
    seconds: dict[str, float] = {}
    same = 0
    largest = 0.0  # the largest difference of any number from the run's own metrics.json
    digest = hashlib.sha256()
    for name in args.methods.split(","):
        results = _method_results(name, sorted(finished), finished)
        started = time.perf_counter()
        out = method_records(name, families[name], *results, shots_list, config)
        seconds[name] = round(time.perf_counter() - started, 3)
        digest.update(json.dumps(out, sort_keys=True).encode())
        stored = [r for r in records if r["method"] == name]
        same += json.dumps(out, sort_keys=True) == json.dumps(stored, sort_keys=True)
        assert len(out) == len(stored), name
        for new, old in zip(out, stored, strict=True):
            assert new.keys() == old.keys() and new["metric"] == old["metric"], name
            for field in ("mean", "ci_low", "ci_high"):
                if not (math.isnan(new[field]) and math.isnan(old[field])):
                    largest = max(largest, abs(new[field] - old[field]))
        print(f"{name}: {len(out)} records in {seconds[name]:.1f} s", flush=True)
    summary = {
        "seconds": seconds,
        "total": round(sum(seconds.values()), 3),
        "methods_as_in_metrics_json": same,  # byte for byte, of len(seconds)
        "largest_difference": largest,
        "records_sha256": digest.hexdigest()[:16],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
