#!/usr/bin/env bash
# Wall time of one `metarec evaluate` command at a base revision and at the working tree,
# alternated base, head, head, base in one session (so a change in the machine's load shows up
# as a difference between the two runs of one side), with the load average before each run and a
# byte comparison of every run's metrics.json with the first base run's.
#
# Usage: benchmarks/evaluate_ab.sh REV OUTDIR EVALUATE_ARGS...
#   e.g. benchmarks/evaluate_ab.sh a8346c8 /tmp/ab --store runs/ml-100k.duckdb --quick --jobs 2
#   Each run writes OUTDIR/<n>-<side>/ (its --out) and OUTDIR/<n>-<side>.log; store paths
#   must be absolute or relative to the repository root. AB_ORDER="base head" runs one pair.
# The base runs from a worktree of REV with its own src/ first on PYTHONPATH; --out is added here.
set -euo pipefail
rev=$1 out=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
python=$root/.venv/bin/python
mkdir -p "$out"
out=$(cd "$out" && pwd)
base=$(mktemp -d /tmp/metarec-base.XXXXXX)
trap 'git -C "$root" worktree remove --force "$base" >/dev/null 2>&1 || true' EXIT
git -C "$root" worktree add --detach "$base" "$rev" >/dev/null
n=0
for side in ${AB_ORDER:-base head head base}; do
  n=$((n + 1))
  tree=$([ "$side" = base ] && echo "$base" || echo "$root")
  run=$out/$n-$side
  rm -rf "$run"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  (cd "$root" && PYTHONPATH="$tree/src" /usr/bin/time -f "%e" -o "$run.wall" \
    "$python" -m metarec evaluate "$@" --out "$run" >"$run.log" 2>&1)
  same=$(cmp -s "$out/1-base/metrics.json" "$run/metrics.json" && echo identical || echo DIFFERENT)
  echo "$n $side: $(cat "$run.wall") s wall, load average before $load, metrics.json $same"
done
