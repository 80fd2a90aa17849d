#!/usr/bin/env bash
# Run one benchmark on a base revision and on the working tree, back to back on this machine, so
# that speed is reported as a ratio measured in one run (never as an absolute target met alone).
#
# Usage: benchmarks/against.sh REV OUTDIR SCRIPT [ARGS...]
#   SCRIPT (a path under benchmarks/) runs twice from a repository root with .venv/bin/python:
#   first in a worktree of REV (its own SCRIPT, its own src/ on PYTHONPATH), then in this tree.
#   Every {work} in ARGS becomes OUTDIR/base or OUTDIR/head. Logs: OUTDIR/{base,head}.log.
#   A SCRIPT that REV does not have yet (a benchmark written with the change it measures) is
#   copied into the base worktree from this tree.
#   The last line of each log should be the script's JSON summary; benchmarks/ratio.py compares.
set -euo pipefail
rev=$1 out=$2 script=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
python=$root/.venv/bin/python
mkdir -p "$out"
base=$(mktemp -d /tmp/metarec-base.XXXXXX)
trap 'git -C "$root" worktree remove --force "$base" >/dev/null 2>&1 || true' EXIT
git -C "$root" worktree add --detach "$base" "$rev" >/dev/null
[ -e "$base/$script" ] || cp "$root/$script" "$base/$script"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for side in base head; do
  tree=$([ "$side" = base ] && echo "$base" || echo "$root")
  args=()
  for arg in "$@"; do args+=("${arg//\{work\}/$out/$side}"); done
  echo "== $side ($([ "$side" = base ] && echo "$rev" || echo "working tree")): $script ${args[*]}"
  (cd "$tree" && PYTHONPATH="$tree/src" /usr/bin/time -f "$side: %e s wall" \
    "$python" "$script" "${args[@]}") >"$out/$side.log" 2>&1
  tail -n 1 "$out/$side.log"
done
"$python" "$root/benchmarks/ratio.py" "$out/base.log" "$out/head.log"
