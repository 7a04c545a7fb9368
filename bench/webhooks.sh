#!/usr/bin/env bash
# Webhook benchmark (issue 10): 10 receiver endpoints, 1,000 publishes, every delivery accounted for.
# Usage: bash bench/webhooks.sh        (bench/README.md, "Webhook benchmark")
#
# 1. bench/webhooks.py's receivers (one process, one port per endpoint), then `cms up --workers 1`
#    on a new data directory with CMS_WEBHOOK_ALLOW_PRIVATE=1 and the worker's metrics on a port.
# 2. `webhooks.py run`: content types, 10 endpoints subscribed to article publishes, a warm-up, then
#    the scenarios, 1,000 new publishes each: `burst` (as fast as the management API takes them),
#    `paced` (50/s = 500 deliveries/s offered) and `failing` (50/s while endpoints 0-2 answer 500
#    for the first 30 s). Stops the CMS.
# 3. PIPELINE=1: bench/pipeline.sh at 100 publishes/s for 20 s on its own new CMS, then the same
#    with 10 endpoints subscribed (webhooks firing), then again with them deactivated.
#
# Env knobs (defaults in brackets; webhooks.py's own are in its docstring):
#   N_ENDPOINTS [10]  N_PUBLISHES [1000]  PUBLISH_CONCURRENCY [8]  SCENARIOS ["burst paced failing"]
#   PACED_RATE [50]  FAIL_RATE [PACED_RATE]  FAIL_ENDPOINTS [3]  FAIL_S [30]
#   DRAIN_TIMEOUT_S [180]  FAIL_DRAIN_TIMEOUT_S [900]
#   RETRY_SCHEDULE [""]   CMS_WEBHOOK_RETRY_SCHEDULE for the CMS ("" = the CMS default
#                         5,300,1800,…: the failing endpoints' deliveries then succeed ~5 min later)
#   PIPELINE [1]          0 = skip step 3;  PIPELINE_RATES ["100:20"]
#   PROFILE [""]          1 = after the scenarios, a burst again under py-spy on the worker
#   PG_LOG_MIN_DURATION_MS [""]  diagnosis: PostgreSQL logs statements slower than this (0: all)
#   BENCH_DATA_ROOT [/tmp/cms-bench-webhooks]  each run's CMS_DATA_DIR is a new directory below it;
#                    earlier runs' directories are kept (deleting them right before a run slows
#                    file creation for minutes on this machine, see bench/README.md "Noise")
#   DELIVERY_PORT [18300]  MANAGEMENT_PORT [18301]  WORKER_METRICS_PORT [18302]
#   RECEIVER_BASE_PORT [18330] (…+N_ENDPOINTS-1)
#   PIPELINE_PORTS ["18310 18311 18312"] (delivery, management, CDN)  PIPELINE_RECEIVER_BASE_PORT [18340]
#   START_TIMEOUT_S [180]  SETTLE_TIMEOUT_S [60]  RUN_TIMEOUT_S [2400]
#   QUIET_MAX_CORES [0.3] QUIET_WAIT_S [60]: before each scenario, wait up to QUIET_WAIT_S for a 2 s
#                    window in which other processes use < QUIET_MAX_CORES (0 = don't wait)
#   CMS_ENV [""]     extra VAR=value settings for both CMS runs
# While it runs, /tmp/bench-running exists (other sessions check it); it is removed at the end if
# this script made it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$ROOT/.venv/bin/python"
CMS="$ROOT/.venv/bin/cms"

export N_ENDPOINTS="${N_ENDPOINTS:-10}" N_PUBLISHES="${N_PUBLISHES:-1000}" PUBLISH_CONCURRENCY="${PUBLISH_CONCURRENCY:-8}"
export SCENARIOS="${SCENARIOS:-burst paced failing}" PACED_RATE="${PACED_RATE:-50}" FAIL_ENDPOINTS="${FAIL_ENDPOINTS:-3}" FAIL_S="${FAIL_S:-30}"
export DRAIN_TIMEOUT_S="${DRAIN_TIMEOUT_S:-180}" FAIL_DRAIN_TIMEOUT_S="${FAIL_DRAIN_TIMEOUT_S:-900}"
export RETRY_SCHEDULE="${RETRY_SCHEDULE:-}" PROFILE="${PROFILE:-}"
PIPELINE="${PIPELINE:-1}"
PIPELINE_RATES="${PIPELINE_RATES:-100:20}"
BENCH_DATA_ROOT="${BENCH_DATA_ROOT:-/tmp/cms-bench-webhooks}"
DELIVERY_PORT="${DELIVERY_PORT:-18300}"
MANAGEMENT_PORT="${MANAGEMENT_PORT:-18301}"
WORKER_METRICS_PORT="${WORKER_METRICS_PORT:-18302}"
export RECEIVER_BASE_PORT="${RECEIVER_BASE_PORT:-18330}"
PIPELINE_PORTS="${PIPELINE_PORTS:-18310 18311 18312}"
PIPELINE_RECEIVER_BASE_PORT="${PIPELINE_RECEIVER_BASE_PORT:-18340}"
START_TIMEOUT_S="${START_TIMEOUT_S:-180}"
RUN_TIMEOUT_S="${RUN_TIMEOUT_S:-2400}"
export QUIET_MAX_CORES="${QUIET_MAX_CORES:-0.3}" QUIET_WAIT_S="${QUIET_WAIT_S:-60}" SETTLE_TIMEOUT_S="${SETTLE_TIMEOUT_S:-60}"
CMS_ENV="${CMS_ENV:-}"
# A fixed bench-only management key (CMS_BOOTSTRAP_KEY, >= 32 chars; loopback only).
BOOTSTRAP_KEY="bench-bootstrap-key-0123456789abcdefghij"
source "$HERE/lib.sh"

[[ -x "$PY" && -x "$CMS" ]] || die "no $ROOT/.venv with the cms command: run 'make up' once (or make the venv)"

MARKER=/tmp/bench-running
MADE_MARKER=0
RUN_PID=""
on_exit() {
  [[ -n "$RUN_PID" ]] && stop_pid "$RUN_PID" 5
  cleanup   # the CMS first, then the receivers (lib.sh)
  if [[ "$MADE_MARKER" == 1 ]]; then rm -f "$MARKER"; fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM
if [[ ! -e "$MARKER" ]]; then echo "bench/webhooks.sh pid $$" > "$MARKER"; MADE_MARKER=1; fi

for p in "$DELIVERY_PORT" "$MANAGEMENT_PORT" "$WORKER_METRICS_PORT" \
         $(seq "$RECEIVER_BASE_PORT" $((RECEIVER_BASE_PORT + N_ENDPOINTS - 1))); do
  port_free "$p" || die "port $p is already in use (see the port knobs at the top of webhooks.sh)"
done

export BENCH_STAMP="$(date -u +%Y-%m-%d_%H%M%SZ)"
OUTDIR="$HERE/results/webhooks-$BENCH_STAMP"
mkdir -p "$OUTDIR"
log "raw output in $OUTDIR"
# A new data directory for every run, and nothing deleted (see pipeline.sh and bench/README.md).
BENCH_DATA_DIR="$BENCH_DATA_ROOT/run-$BENCH_STAMP"
[[ ! -e "$BENCH_DATA_DIR" ]] || die "$BENCH_DATA_DIR exists"
if compgen -G "$BENCH_DATA_ROOT/*-20*" > /dev/null; then
  log "earlier runs' data under $BENCH_DATA_ROOT: $(du -sh "$BENCH_DATA_ROOT" 2>/dev/null | cut -f1) (delete it when no benchmark is about to run)"
fi
mkdir -p "$BENCH_DATA_DIR"; touch "$BENCH_DATA_DIR/.cms-bench"

# --- 1. receivers, then the CMS ------------------------------------------------------------------
RECORDS="$OUTDIR/receivers.records"; : > "$RECORDS"
"$PY" "$HERE/webhooks.py" receive "$RECORDS" "$RECEIVER_BASE_PORT" "$N_ENDPOINTS" > "$OUTDIR/receivers.log" 2>&1 &
RX_PID=$!; STARTED_PIDS+=("$RX_PID")
for ((i = 0; i < 40; i++)); do grep -q ' ready ' "$RECORDS" && break; sleep 0.25; done
grep -q ' ready ' "$RECORDS" || die "the receivers did not start (see $OUTDIR/receivers.log)"
log "receivers pid $RX_PID on 127.0.0.1:$RECEIVER_BASE_PORT…$((RECEIVER_BASE_PORT + N_ENDPOINTS - 1))"

extra=(CMS_WEBHOOK_ALLOW_PRIVATE=1 CMS_WORKER_METRICS_PORT="$WORKER_METRICS_PORT")
[[ -n "$RETRY_SCHEDULE" ]] && extra+=(CMS_WEBHOOK_RETRY_SCHEDULE="$RETRY_SCHEDULE")
# shellcheck disable=SC2206  # CMS_ENV is a list of VAR=value words
extra+=($CMS_ENV)
if ! start_cms "$OUTDIR/cms.log" "${extra[@]}"; then tail -30 "$OUTDIR/cms.log" >&2; die "the CMS did not start"; fi
export WORKER_METRICS_URL="http://127.0.0.1:$WORKER_METRICS_PORT/metrics"

read -r PG_PID VK_PID <<< "$(daemons)"
WORKER="$(pgrep -P "$CMS_PID" -f 'cms.app.cli worker' | head -1 || true)"
MGMT_MAIN="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:management' | head -1 || true)"
DELIVERY_MAIN="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:delivery' | head -1 || true)"
SCHEDULER="$(pgrep -P "$CMS_PID" -f 'cms.app.cli scheduler' | head -1 || true)"
export BENCH_ROOTS="$$ $PG_PID $VK_PID"
export BENCH_SERVER_PIDS="$CMS_PID $PG_PID $VK_PID"
export BENCH_COMPONENTS="worker=${WORKER:-} management=${MGMT_MAIN:-} delivery=${DELIVERY_MAIN:-} scheduler=${SCHEDULER:-} postgres=${PG_PID:-} valkey=${VK_PID:-} receivers=$RX_PID"
log "components: $BENCH_COMPONENTS"

# --- 2. the scenarios -------------------------------------------------------------------------------
rc=0
M="http://127.0.0.1:$MANAGEMENT_PORT"
timeout -k 10 "$RUN_TIMEOUT_S" "$PY" "$HERE/webhooks.py" run "$M" "$BOOTSTRAP_KEY" "$BENCH_DATA_DIR" "$OUTDIR" "$RECORDS" \
  > >(tee "$OUTDIR/report.md") 2> >(tee "$OUTDIR/webhooks.log" >&2) &
RUN_PID=$!
wait "$RUN_PID" || rc=$?
RUN_PID=""
curl -fsS --max-time 5 "$WORKER_METRICS_URL" > "$OUTDIR/worker-metrics.txt" 2>/dev/null || true
grep -E 'ERROR|Traceback' "$OUTDIR/cms.log" | head -20 > "$OUTDIR/cms-errors.txt" || true
[[ -s "$OUTDIR/cms-errors.txt" ]] && { log "errors in the CMS log (first 20, see $OUTDIR/cms-errors.txt):"; cat "$OUTDIR/cms-errors.txt" >&2; }
log "webhooks.py rc=$rc; stopping the CMS"
# The CMS, then the receivers; not lib.sh's `cleanup`, which would also remove /tmp/bench-running
# before the pipeline step (it did until 2026-12-07: the pipeline rows ran unmarked).
stop_cms
for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
STARTED_PIDS=()

# --- 3. publish -> CDN at 100/s, without and with webhooks firing ----------------------------------
if [[ "$PIPELINE" == 1 ]]; then
  read -r PD PM PC <<< "$PIPELINE_PORTS"
  log "pipeline.sh: RATES=$PIPELINE_RATES without webhooks, with $N_ENDPOINTS endpoints, and after deactivating them"
  prc=0
  env RATES="$PIPELINE_RATES" BULK_N=0 WEBHOOK_ENDPOINTS="$N_ENDPOINTS" WEBHOOK_BASE_PORT="$PIPELINE_RECEIVER_BASE_PORT" \
      DELIVERY_PORT="$PD" MANAGEMENT_PORT="$PM" CDN_PORT="$PC" PROFILE= \
      BENCH_DATA_DIR="$BENCH_DATA_ROOT/pipeline-$BENCH_STAMP" CMS_ENV="$CMS_ENV" \
      bash "$HERE/pipeline.sh" > >(tee "$OUTDIR/pipeline-report.md") 2> >(tee "$OUTDIR/pipeline.log" >&2) &
  RUN_PID=$!
  wait "$RUN_PID" || prc=$?
  RUN_PID=""
  log "pipeline.sh rc=$prc"
  ((prc == 0)) || rc=$prc
fi
log "done (rc=$rc); reports: $OUTDIR/report.md$([[ "$PIPELINE" == 1 ]] && echo " and $OUTDIR/pipeline-report.md")"
exit "$rc"
