#!/usr/bin/env bash
# Reproduce the tables of docs/BENCHMARKS.md. Usage: benchmarks/run_benchmarks.sh [quick|full] [WORKDIR]
# Reads the licensed datasets from ../shared/data (never copied into the repo); writes stores and
# run folders under WORKDIR (default: runs/). Each run prints its wall time.
set -euo pipefail
mode=${1:-quick}
work=${2:-runs}
data=../shared/data
bin=.venv/bin
export OMP_NUM_THREADS=1  # the tables were measured with one torch thread per process
flag=$([ "$mode" = quick ] && echo --quick || echo "")
mkdir -p "$work"

ingest() {  # ingest SOURCE FORMAT NAME: once per store (re-running changes nothing anyway)
  [ -f "$work/$3.duckdb" ] || "$bin/metarec" ingest "$1" --format "$2" --store "$work/$3.duckdb"
}

ingest "$data/ml-100k" recbole ml-100k
ingest "$data/ml-1m" recbole ml-1m
ingest "$data/douban" douban douban
ingest "$data/dbook" dbook dbook
[ -f "$work/bookstore.duckdb" ] || {
  "$bin/metarec" simulate --out "$work/bookstore-data" --seed 0
  "$bin/metarec" ingest "$work/bookstore-data" --format table --store "$work/bookstore.duckdb"
}

run() {  # run NAME ARGS...: one evaluation, timed
  local name=$1; shift
  /usr/bin/time -f "$name: %e s wall" "$bin/metarec" evaluate --out "$work/$name-$mode" $flag "$@"
}

run ml-100k --store "$work/ml-100k.duckdb"
run ml-1m --store "$work/ml-1m.duckdb"
run douban --store "$work/douban.duckdb" --test-category Book
run bookstore --store "$work/bookstore.duckdb" --config "$work/bookstore-data/metarec.toml"
run dbook --store "$work/dbook.duckdb" --protocol melu
"$bin/python" benchmarks/benchmark_tables.py "$work"/{ml-100k,ml-1m,douban,bookstore}-"$mode"
