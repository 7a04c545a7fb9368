#!/usr/bin/env bash
# Publish-pipeline benchmark: publish -> prerendered file in the object store -> CDN purge
# (p50/p99 at fixed publish rates), and bulk import throughput through POST /v1/bulk.
# The CMS runs as `cms up --workers 1` with the embedded defaults (PostgreSQL, Valkey, local object
# store under BENCH_DATA_DIR/objects) and CMS_CDN_PROVIDER=http pointing at a recording CDN
# (`bench/pipeline.py observe`, which also watches the object store with inotify).
# Usage: bash bench/pipeline.sh
#
# Env knobs (defaults in brackets):
#   RATES ["10:30 100:20"]   publishes/s : seconds, one latency run each, in order
#   PUBLISH_TYPES ["article"] the types each RATES item publishes, in turn: "article landing" adds a
#                    run of landing pages with 20 blocks (`<run>-landing`, issue 14) after each article run
#   BULK_N [5000] BULK_ACTIONS [1000] BULK_CONCURRENCY [2]   (BULK_N=0: no bulk run)
#   DRAIN_TIMEOUT_S [90]     after a run, wait at most this long for the last file and purge
#   BENCH_DATA_ROOT [/tmp/cms-bench-pipeline]  every run gets its own CMS_DATA_DIR below it,
#                    BENCH_DATA_DIR [$BENCH_DATA_ROOT/run-<UTC stamp>] (a new directory); earlier runs'
#                    directories are kept (see bench/README.md: deleting them right before a run
#                    slows file creation on this machine for minutes), delete them yourself
#   DELIVERY_PORT [18100]  MANAGEMENT_PORT [18101]  CDN_PORT [18102]
#   START_TIMEOUT_S [180]  RUN_TIMEOUT_S [1800] (the whole pipeline.py run)
#   QUIET_MAX_CORES [0.3] QUIET_WAIT_S [60]: before each run, wait up to QUIET_WAIT_S for a 2 s
#                    window in which other processes use < QUIET_MAX_CORES (0 = don't wait)
#   SETTLE_TIMEOUT_S [60]    before each run, wait for the CMS to be idle (< 0.1 cores)
#   PROFILE [""]     subset of "rate100 bulk": after the measurements, run it again under
#                    `py-spy record` (worker and management app); PROFILE_RATE [100] PROFILE_S [20]
#   PYSPY [/tmp/pyspy/bin/py-spy]  PYSPY_ARGS [--gil]
#   PG_LOG_MIN_DURATION_MS [""]   diagnosis: PostgreSQL logs statements slower than this (to its data dir)
#   BENCH_COMMIT [""] e.g. HEAD: the CMS from an export of that commit (as run.sh, see bench/lib.sh)
#   CMS_ENV [""]     extra VAR=value settings for `cms up` (e.g. "CMS_WORKER_POLL_MS=50")
#   WEBHOOK_ENDPOINTS [0]  N > 0: start bench/webhooks.py's receivers on WEBHOOK_BASE_PORT [18140] …+N-1,
#                    run the CMS with CMS_WEBHOOK_ALLOW_PRIVATE=1, and after the RATES runs, run them
#                    again while N subscribed endpoints get every publish (see pipeline.py)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$ROOT/.venv/bin/python"
CMS="$ROOT/.venv/bin/cms"

BENCH_DATA_ROOT="${BENCH_DATA_ROOT:-/tmp/cms-bench-pipeline}"
DELIVERY_PORT="${DELIVERY_PORT:-18100}"
MANAGEMENT_PORT="${MANAGEMENT_PORT:-18101}"
CDN_PORT="${CDN_PORT:-18102}"
START_TIMEOUT_S="${START_TIMEOUT_S:-180}"
RUN_TIMEOUT_S="${RUN_TIMEOUT_S:-1800}"
CMS_ENV="${CMS_ENV:-}"
export WEBHOOK_ENDPOINTS="${WEBHOOK_ENDPOINTS:-0}" WEBHOOK_BASE_PORT="${WEBHOOK_BASE_PORT:-18140}"
export PUBLISH_TYPES="${PUBLISH_TYPES:-article}"
export RATES="${RATES:-10:30 100:20}" BULK_N="${BULK_N:-5000}" BULK_ACTIONS="${BULK_ACTIONS:-1000}"
export BULK_CONCURRENCY="${BULK_CONCURRENCY:-2}" DRAIN_TIMEOUT_S="${DRAIN_TIMEOUT_S:-90}"
export QUIET_MAX_CORES="${QUIET_MAX_CORES:-0.3}" QUIET_WAIT_S="${QUIET_WAIT_S:-60}"
export SETTLE_TIMEOUT_S="${SETTLE_TIMEOUT_S:-60}" PROFILE="${PROFILE:-}"
# A fixed bench-only management key (CMS_BOOTSTRAP_KEY, >= 32 chars; loopback only).
BOOTSTRAP_KEY="bench-bootstrap-key-0123456789abcdefghij"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x "$PY" && -x "$CMS" ]] || die "no $ROOT/.venv with the cms command: run 'make up' once (or make the venv)"

# BENCH_COMMIT (e.g. HEAD): the CMS from an export of that commit, as lib.sh does for run.sh (the same
# /tmp/cms-src-<sha>); inherited when webhooks.sh starts this script (BENCH_COMMIT_SRC set).
export BENCH_GIT_HEAD="${BENCH_GIT_HEAD:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
if [[ -n "${BENCH_COMMIT:-}" && -z "${BENCH_COMMIT_SRC:-}" ]]; then
  BENCH_COMMIT_SHA="$(git -C "$ROOT" rev-parse --short "$BENCH_COMMIT")" || die "BENCH_COMMIT=$BENCH_COMMIT is no commit"
  BENCH_COMMIT_SRC="/tmp/cms-src-$BENCH_COMMIT_SHA"
  if [[ ! -d "$BENCH_COMMIT_SRC/cms/app" ]]; then
    rm -rf "$BENCH_COMMIT_SRC.tmp"; mkdir -p "$BENCH_COMMIT_SRC.tmp/cms"
    git -C "$ROOT" archive "$BENCH_COMMIT_SHA" app graphql workers storage | tar -x -C "$BENCH_COMMIT_SRC.tmp/cms"
    mv "$BENCH_COMMIT_SRC.tmp" "$BENCH_COMMIT_SRC"
  fi
  export BENCH_COMMIT_SHA BENCH_COMMIT_SRC PYTHONPATH="$BENCH_COMMIT_SRC${PYTHONPATH:+:$PYTHONPATH}"
  log "the CMS runs from commit $BENCH_COMMIT_SHA ($BENCH_COMMIT_SRC), not the working tree"
fi

# --- processes this script started: stopped by PID only (as in run.sh) ----------------------
STARTED_PIDS=()
stop_pid() { # pid [grace_s]: SIGTERM, wait, then SIGKILL
  local pid="$1" grace="${2:-15}" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 4; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignored SIGTERM for ${grace}s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  log "stopped pid $pid"
}
CMS_PID=""
stop_cms() {
  [[ -n "$CMS_PID" ]] || return 0
  stop_pid "$CMS_PID" 40   # `cms up` stops granian (10 s each) and the embedded services itself
  CMS_PID=""
  # If it had to be killed, the embedded PostgreSQL / Valkey daemons of our data dir may still run.
  local pm="$BENCH_DATA_DIR/postgres/postmaster.pid" vk="$BENCH_DATA_DIR/valkey/valkey.pid" p
  if [[ -f "$pm" ]]; then
    p="$(head -1 "$pm")"
    if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then log "embedded PostgreSQL (pid $p) still running: stopping it"; kill -INT "$p" 2>/dev/null || true; fi
  fi
  if [[ -f "$vk" ]]; then
    p="$(head -1 "$vk")"
    if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then log "embedded Valkey (pid $p) still running: stopping it"; kill -TERM "$p" 2>/dev/null || true; fi
  fi
}
cleanup() {
  local pid
  # The benchmark itself first (it may be mid-run), then the CMS, then the observer (the CDN the
  # worker purges must outlive the worker).
  [[ -n "${RUN_PID:-}" ]] && stop_pid "$RUN_PID" 5
  stop_cms
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid" 5; done
  STARTED_PIDS=()
  if [[ "${MADE_MARKER:-0}" == 1 ]]; then rm -f "$MARKER"; MADE_MARKER=0; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# /tmp/bench-running while it runs (other sessions check it): made only if absent (webhooks.sh,
# which starts this script, keeps its own), and then removed by cleanup.
MARKER=/tmp/bench-running
MADE_MARKER=0
if [[ ! -e "$MARKER" ]]; then echo "bench/pipeline.sh pid $$" > "$MARKER"; MADE_MARKER=1; fi

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
for p in "$DELIVERY_PORT" "$MANAGEMENT_PORT" "$CDN_PORT"; do
  port_free "$p" || die "port $p is already in use (set DELIVERY_PORT / MANAGEMENT_PORT / CDN_PORT)"
done
for ((i = 0; i < WEBHOOK_ENDPOINTS; i++)); do
  port_free $((WEBHOOK_BASE_PORT + i)) || die "port $((WEBHOOK_BASE_PORT + i)) is already in use (set WEBHOOK_BASE_PORT)"
done

wait_http() { # url timeout_s [pid]: 200 within the time, and pid (if given) still alive
  local url="$1" t="$2" pid="${3:-}" i
  for ((i = 0; i < t * 4; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then log "pid $pid exited while waiting for $url"; return 1; fi
    sleep 0.25
  done
  log "no 200 from $url within ${t}s"; return 1
}

export BENCH_STAMP="$(date -u +%Y-%m-%d_%H%M%SZ)"
BENCH_DATA_DIR="${BENCH_DATA_DIR:-$BENCH_DATA_ROOT/run-$BENCH_STAMP}"
[[ ! -e "$BENCH_DATA_DIR" ]] || die "$BENCH_DATA_DIR exists; set BENCH_DATA_DIR to a new directory"
RESULTS="$HERE/results"
OUTDIR="$RESULTS/pipeline-$BENCH_STAMP"
mkdir -p "$OUTDIR"
log "raw output in $OUTDIR"

# A new directory for every run, and nothing deleted: on ext4 without a journal (this machine's
# root filesystem) every new file's inode search skips the inodes freed in the last 30 s to 5 min,
# and deleting the previous run's ~12,000 files right before this one made the worker's file writes
# several times slower (perf: a quarter of all CPU in the kernel's recently_deleted()).
if compgen -G "$BENCH_DATA_ROOT/run-*" > /dev/null; then
  log "earlier runs' data under $BENCH_DATA_ROOT: $(du -sh "$BENCH_DATA_ROOT" 2>/dev/null | cut -f1) (delete them when no benchmark is about to run)"
fi
mkdir -p "$BENCH_DATA_DIR"; touch "$BENCH_DATA_DIR/.cms-bench"
RECORDS="$OUTDIR/observer.records"; : > "$RECORDS"
WATCH_DIR=""   # one directory per published type, comma-separated
for t in $PUBLISH_TYPES; do WATCH_DIR="${WATCH_DIR:+$WATCH_DIR,}$BENCH_DATA_DIR/objects/entries/$t/en"; done
[[ ",$WATCH_DIR," == *"/entries/article/en,"* ]] || WATCH_DIR="$BENCH_DATA_DIR/objects/entries/article/en,$WATCH_DIR"

# --- 1. the observer (recording CDN + object-store watcher), before the CMS can purge anything
"$PY" "$HERE/pipeline.py" observe "$RECORDS" "$WATCH_DIR" "$CDN_PORT" > "$OUTDIR/observer.log" 2>&1 &
OBS_PID=$!; STARTED_PIDS+=("$OBS_PID")
wait_http "http://127.0.0.1:$CDN_PORT/" 10 "$OBS_PID" || die "the observer did not start (see $OUTDIR/observer.log)"
log "observer pid $OBS_PID: CDN on 127.0.0.1:$CDN_PORT, watching $WATCH_DIR once it exists"

# --- 1b. the webhook receivers (WEBHOOK_ENDPOINTS > 0), also before the CMS
if ((WEBHOOK_ENDPOINTS > 0)); then
  export WEBHOOK_RECORDS="$OUTDIR/receivers.records"; : > "$WEBHOOK_RECORDS"
  "$PY" "$HERE/webhooks.py" receive "$WEBHOOK_RECORDS" "$WEBHOOK_BASE_PORT" "$WEBHOOK_ENDPOINTS" > "$OUTDIR/receivers.log" 2>&1 &
  RX_PID=$!; STARTED_PIDS+=("$RX_PID")
  for ((i = 0; i < 40; i++)); do grep -q ' ready ' "$WEBHOOK_RECORDS" && break; sleep 0.25; done
  grep -q ' ready ' "$WEBHOOK_RECORDS" || die "the webhook receivers did not start (see $OUTDIR/receivers.log)"
  log "webhook receivers pid $RX_PID on 127.0.0.1:$WEBHOOK_BASE_PORT…$((WEBHOOK_BASE_PORT + WEBHOOK_ENDPOINTS - 1))"
  CMS_ENV="CMS_WEBHOOK_ALLOW_PRIVATE=1 $CMS_ENV"
fi

# --- 2. the CMS --------------------------------------------------------------------------------
D="http://127.0.0.1:$DELIVERY_PORT"
M="http://127.0.0.1:$MANAGEMENT_PORT"
log "starting cms up (data dir $BENCH_DATA_DIR, delivery :$DELIVERY_PORT, management :$MANAGEMENT_PORT)"
# Rate limits lifted (the default 600/60 s per management key would turn the load into 429s).
# shellcheck disable=SC2086  # CMS_ENV is a list of VAR=value words
env CMS_DATA_DIR="$BENCH_DATA_DIR" CMS_BOOTSTRAP_KEY="$BOOTSTRAP_KEY" \
    CMS_HOST=127.0.0.1 CMS_DELIVERY_PORT="$DELIVERY_PORT" CMS_MANAGEMENT_PORT="$MANAGEMENT_PORT" \
    CMS_RATE_LIMIT_DELIVERY=1000000000/1 CMS_RATE_LIMIT_MANAGEMENT=1000000000/1 \
    CMS_CDN_PROVIDER=http CMS_CDN_HTTP_URLS="http://127.0.0.1:$CDN_PORT" \
    CMS_DATABASE_URL= CMS_REDIS_URL= $CMS_ENV \
    "$CMS" up --workers 1 > "$OUTDIR/cms.log" 2>&1 &
CMS_PID=$!
log "cms up pid $CMS_PID (log $OUTDIR/cms.log)"
if ! { wait_http "$D/readyz" "$START_TIMEOUT_S" "$CMS_PID" && wait_http "$M/readyz" 30 "$CMS_PID"; }; then
  tail -30 "$OUTDIR/cms.log" >&2; die "the CMS did not start"
fi

daemons() {
  echo "$(head -1 "$BENCH_DATA_DIR/postgres/postmaster.pid" 2>/dev/null || true) $(head -1 "$BENCH_DATA_DIR/valkey/valkey.pid" 2>/dev/null || true)"
}
# CPU accounting (bench/cpuacct.py): ours = this script's tree (pipeline.py, the observer, cms up)
# + the daemons; the server = cms up + the daemons.
export BENCH_ROOTS="$$ $(daemons)"
export BENCH_SERVER_PIDS="$CMS_PID $(daemons)"
WORKER="$(pgrep -P "$CMS_PID" -f 'cms.app.cli worker' | head -1 || true)"
SCHEDULER="$(pgrep -P "$CMS_PID" -f 'cms.app.cli scheduler' | head -1 || true)"
MGMT_MAIN="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:management' | head -1 || true)"
MGMT_WORKER="$(pgrep -P "${MGMT_MAIN:-0}" | head -1 || true)"
DELIVERY_MAIN="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:delivery' | head -1 || true)"
read -r PG_PID VK_PID <<< "$(daemons)"
export BENCH_COMPONENTS="worker=${WORKER:-} management=${MGMT_MAIN:-} management_worker=${MGMT_WORKER:-} delivery=${DELIVERY_MAIN:-} scheduler=${SCHEDULER:-} postgres=${PG_PID:-} valkey=${VK_PID:-}${RX_PID:+ receivers=$RX_PID}"
log "components: $BENCH_COMPONENTS"

# --- 3. the benchmark ----------------------------------------------------------------------------
rc=0
timeout -k 10 "$RUN_TIMEOUT_S" "$PY" "$HERE/pipeline.py" run "$M" "$BOOTSTRAP_KEY" "$BENCH_DATA_DIR" "$OUTDIR" "$RECORDS" \
  2> >(tee "$OUTDIR/pipeline.log" >&2) &
RUN_PID=$!
wait "$RUN_PID" || rc=$?
RUN_PID=""
grep -E 'ERROR|Traceback|CdnPurgeError|failed' "$OUTDIR/cms.log" | head -20 > "$OUTDIR/cms-errors.txt" || true
[[ -s "$OUTDIR/cms-errors.txt" ]] && { log "errors in the CMS log (first 20, see $OUTDIR/cms-errors.txt):"; cat "$OUTDIR/cms-errors.txt" >&2; }
log "stopping the CMS"
stop_cms
log "pipeline.py rc=$rc"
exit "$rc"
