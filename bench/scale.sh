#!/usr/bin/env bash
# Issue 13 ("Scale to a million entries"): seed N published articles through POST /v1/bulk, then,
# with the delivery cache off, cache-miss latency of every row of the issue's table, meta.total /
# total_relation, bulk entries/s and bytes per entry (PostgreSQL, object store). One data directory,
# seeded incrementally: SIZES="1000 100000" seeds 1,000, measures, adds 99,000, measures.
# At the largest size: every list query once more under auto_explain (EXPLAIN ANALYZE, BUFFERS of
# the CMS's own statements, logged by PostgreSQL) -> $OUTDIR/plans.log.
#
#   BENCH_COMMIT=fc0b3ed bash bench/scale.sh
#
# Knobs: SIZES ["1000 100000"]  REQS [200] WARM [10] (bench/scale.py)  BATCH [1000] CONCURRENCY [2]
#   BENCH_DATA_ROOT [/tmp/cms-bench-scale] (a new run-<stamp> directory below it; nothing deleted)
#   DELIVERY_PORT [18300] MANAGEMENT_PORT [18301] START_TIMEOUT_S [300] SETTLE_TIMEOUT_S [600]
#   EXPLAIN [1]  QUIET_WAIT_S [30] QUIET_MAX_CORES [0.3]
#   To add to an earlier run's data (e.g. 100k -> 300k): HAVE=100000 SIZES=300000
#   BENCH_DATA_DIR=<its data dir> DELIVERY_KEY_FILE=<its results dir>/delivery.key
#   Measure an earlier run's data again, no seeding: HAVE=300000 SIZES=300000 (+ BENCH_DATA_DIR, DELIVERY_KEY_FILE)
#   CHANGE [1]: after measuring each size, add an optional field (note_<time>, new each run) to article: the
#     PUT's time, then its background work until done (scale.py change) -> change-N.json
#   VACUUM [1]: at each size, after settle and wait_quiet and before measuring, `scale.py prep`: VACUUM ANALYZE
#     of published_documents, published_values and entries (filtered totals are counted index-only from
#     published_values: that needs the visibility map; bulk seeding never vacuums) -> prep-N.json
#   PREP [0]: 1 = the same once right after the CMS starts, before any seeding (on earlier data) -> prep.json
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$ROOT/.venv/bin/python"
CMS="$ROOT/.venv/bin/cms"
SIZES="${SIZES-1000 100000}"   # SIZES="" (set, empty): only the explain pass on an earlier run's data (HAVE=…)
BENCH_DATA_ROOT="${BENCH_DATA_ROOT:-/tmp/cms-bench-scale}"
DELIVERY_PORT="${DELIVERY_PORT:-18300}"
MANAGEMENT_PORT="${MANAGEMENT_PORT:-18301}"
START_TIMEOUT_S="${START_TIMEOUT_S:-300}"
SETTLE_TIMEOUT_S="${SETTLE_TIMEOUT_S:-600}"
EXPLAIN="${EXPLAIN:-1}"
VACUUM="${VACUUM:-1}"
QUIET_WAIT_S="${QUIET_WAIT_S:-30}"
QUIET_MAX_CORES="${QUIET_MAX_CORES:-0.3}"
WRK_THREADS=1 WRK_CONNS=1 WARMUP_S=0 DURATION_S=0   # lib.sh's write_meta reads them (wrk is not used)
BOOTSTRAP_KEY="bench-bootstrap-key-0123456789abcdefghij"
source "$HERE/lib.sh"

[[ -x "$PY" && -x "$CMS" ]] || die "no $ROOT/.venv with the cms command"
trap cleanup EXIT
trap 'exit 130' INT TERM
mark_running "bench/scale.sh"
for p in "$DELIVERY_PORT" "$MANAGEMENT_PORT"; do port_free "$p" || die "port $p is already in use"; done

STAMP="$(date -u +%Y-%m-%d_%H%M%SZ)"
OUTDIR="$HERE/results/scale-$STAMP"
RESULTS_JSONL="$OUTDIR/results.jsonl"
mkdir -p "$OUTDIR"
BENCH_DATA_DIR="${BENCH_DATA_DIR:-$BENCH_DATA_ROOT/run-$STAMP}"
HAVE="${HAVE:-0}"
if [[ "$HAVE" -gt 0 ]]; then
  [[ -d "$BENCH_DATA_DIR" && -s "${DELIVERY_KEY_FILE:-}" ]] || die "HAVE=$HAVE needs BENCH_DATA_DIR (existing) and DELIVERY_KEY_FILE"
  cp "$DELIVERY_KEY_FILE" "$OUTDIR/delivery.key"
  # an earlier run stopped with auto_explain on: off before measuring (PostgreSQL is not running)
  [[ ! -f "$BENCH_DATA_DIR/postgres/postmaster.pid" ]] || die "$BENCH_DATA_DIR is in use"
  sed -i '/auto_explain/d' "$BENCH_DATA_DIR/postgres/postgresql.auto.conf"
else
  [[ ! -e "$BENCH_DATA_DIR" ]] || die "$BENCH_DATA_DIR exists; set BENCH_DATA_DIR to a new directory"
fi
mkdir -p "$BENCH_DATA_ROOT"
log "raw output in $OUTDIR, data in $BENCH_DATA_DIR"
write_meta "$OUTDIR/meta.json" "$STAMP" "cms up --workers 1, CMS_DELIVERY_CACHE_MB=0" "{\"sizes\": \"$SIZES\"}"

D="http://127.0.0.1:$DELIVERY_PORT"
M="http://127.0.0.1:$MANAGEMENT_PORT"
up() { # LOGNAME
  start_cms "$OUTDIR/$1" CMS_DELIVERY_CACHE_MB=0 || { tail -30 "$OUTDIR/$1" >&2; die "the CMS did not start"; }
  SERVER_PIDS="$CMS_PID $(daemons)"
}
up cms.log
if [[ "${PREP:-0}" == 1 ]]; then
  log "prep: VACUUM ANALYZE on $BENCH_DATA_DIR"
  "$PY" "$HERE/scale.py" prep "$BENCH_DATA_DIR" "$OUTDIR/prep.json"
fi

have="$HAVE"
for n in $SIZES; do
  if [[ "$n" -gt "$have" ]]; then   # (n = HAVE: measure the earlier run's data again, no seeding)
    log "seeding articles $have..$((n - 1)) through POST /v1/bulk"
    "$PY" "$HERE/scale.py" seed "$M" "$BOOTSTRAP_KEY" "$have" "$n" "$OUTDIR/seed-$n.json" 2>&1 | tee -a "$OUTDIR/seed.log" >&2
    [[ -s "$OUTDIR/seed-$n.json" ]] || die "seeding to $n failed (see $OUTDIR/seed.log)"
    [[ "$have" -gt 0 ]] || "$PY" "$HERE/scale.py" key "$M" "$BOOTSTRAP_KEY" "$OUTDIR/delivery.key"
  fi
  have="$n"
  t0=$SECONDS; settle; log "settled after $((SECONDS - t0)) s"
  echo "{\"n\": $n, \"settle_s\": $((SECONDS - t0))}" > "$OUTDIR/settle-$n.json"
  wait_quiet
  if [[ "$VACUUM" == 1 ]]; then   # the visibility map for index-only counts (published_values)
    t0=$SECONDS; log "VACUUM ANALYZE published_documents, published_values, entries"
    "$PY" "$HERE/scale.py" prep "$BENCH_DATA_DIR" "$OUTDIR/prep-$n.json"
    log "VACUUM took $((SECONDS - t0)) s"
  fi
  "$PY" "$HERE/scale.py" measure "$D" "$M" "$OUTDIR/delivery.key" "$BOOTSTRAP_KEY" "$n" "$OUTDIR/latency-$n.json"
  "$PY" "$HERE/scale.py" sizes "$BENCH_DATA_DIR" "$n" "$OUTDIR/sizes-$n.json"
  if [[ "${CHANGE:-1}" == 1 ]]; then   # a content-type change: the request, then the background work
    "$PY" "$HERE/scale.py" change "$M" "$BOOTSTRAP_KEY" "$n" "$OUTDIR/change-$n.json"
  fi
done

if [[ "$EXPLAIN" == 1 ]]; then
  log "auto_explain on (ANALYZE, BUFFERS), the CMS again, every row 3 times"
  "$PY" "$HERE/scale.py" explain "$BENCH_DATA_DIR" on
  stop_cms; up cms-explain.log
  pglog="$BENCH_DATA_DIR/postgres/log"   # the embedded PostgreSQL's log file
  before="$(stat -c %s "$pglog" 2>/dev/null || echo 0)"
  REQS=3 WARM=0 "$PY" "$HERE/scale.py" measure "$D" "$M" "$OUTDIR/delivery.key" "$BOOTSTRAP_KEY" "$have" "$OUTDIR/explain-latency-$have.json"
  sleep 1
  tail -c +"$((before + 1))" "$pglog" > "$OUTDIR/plans.log" || true
  log "plans: $OUTDIR/plans.log ($(wc -l < "$OUTDIR/plans.log") lines)"
  "$PY" "$HERE/scale.py" explain "$BENCH_DATA_DIR" off
fi
stop_cms
log "done: $OUTDIR"
