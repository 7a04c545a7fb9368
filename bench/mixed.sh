#!/usr/bin/env bash
# Mixed delivery benchmark (issue 9, "Delivery that holds"): delivery reads while 50 publishes/s go
# to the same type, the cache-miss path with the delivery cache off, and the ceiling, in one run.
# Usage: bash bench/mixed.sh        (bench/README.md, "Mixed reads and publishes")
#
# 1. `cms up --workers 1` on a new data directory, seeded by bench/seed.py (1,000 articles, 950
#    published), checked as run.sh checks it.
# 2. Without publishes (context, BASELINE=1): by-slug rotating, the list.
# 3. With publishes: the same two loads, one after the other, each while bench/mixed.py republishes
#    articles at RATE/s (PATCH a unique title, then publish; open loop) and probes every
#    PROBE_EVERY-th publish until the list shows it.
# 4. `cms up` again on the same data (no reseed) with CMS_DELIVERY_CACHE_MB=0: by-slug rotating and
#    the list, every request computed.
# 5. The ceiling (bench/ceiling_app.py) alone, same wrk settings.
# Each load: WARMUP_S of wrk (discarded), then wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION_S}s --latency.
#
# Env knobs (defaults in brackets):
#   WARMUP_S [5]  DURATION_S [15]  WRK_THREADS [2]  WRK_CONNS [32]
#   RATE [50]  PROBE_EVERY [10]  PROBE_INTERVAL_MS [20]  PROBE_TIMEOUT_S [5]
#   BASELINE [1]     0 = skip the rows without publishes
#   ONLY [""]        a subset of: base_slug base_list mixed_slug mixed_list nocache_slug nocache_list ceiling
#   BENCH_DATA_ROOT [/tmp/cms-bench-mixed]  each run's CMS_DATA_DIR is a new directory below it,
#                    BENCH_DATA_DIR [$BENCH_DATA_ROOT/run-<UTC stamp>]; earlier runs' directories are
#                    kept (deleting them right before a run slows file creation for minutes on this
#                    machine, see bench/README.md): delete them yourself when nothing is measuring
#   DELIVERY_PORT [18200]  MANAGEMENT_PORT [18201]  CEILING_PORT [18282]
#   START_TIMEOUT_S [180]  SETTLE_TIMEOUT_S [120]
#   QUIET_MAX_CORES [0.3] QUIET_WAIT_S [60]: before each load, wait up to QUIET_WAIT_S for a 2 s
#                    window in which other processes use < QUIET_MAX_CORES (0 = don't wait)
#   PROFILE [""]     row names (mixed_slug mixed_list nocache_slug nocache_list): after that phase's
#                    measurements, load the row again for PROFILE_S [10] s (with its publisher)
#                    under py-spy on the delivery worker; PYSPY [/tmp/pyspy/bin/py-spy] PYSPY_ARGS [--gil]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$ROOT/.venv/bin/python"
CMS="$ROOT/.venv/bin/cms"

WARMUP_S="${WARMUP_S:-5}"
DURATION_S="${DURATION_S:-15}"
WRK_THREADS="${WRK_THREADS:-2}"
WRK_CONNS="${WRK_CONNS:-32}"
export RATE="${RATE:-50}" PROBE_EVERY="${PROBE_EVERY:-10}" PROBE_INTERVAL_MS="${PROBE_INTERVAL_MS:-20}"
export PROBE_TIMEOUT_S="${PROBE_TIMEOUT_S:-5}"
BASELINE="${BASELINE:-1}"
ONLY="${ONLY:-}"
BENCH_DATA_ROOT="${BENCH_DATA_ROOT:-/tmp/cms-bench-mixed}"
DELIVERY_PORT="${DELIVERY_PORT:-18200}"
MANAGEMENT_PORT="${MANAGEMENT_PORT:-18201}"
CEILING_PORT="${CEILING_PORT:-18282}"
START_TIMEOUT_S="${START_TIMEOUT_S:-180}"
SETTLE_TIMEOUT_S="${SETTLE_TIMEOUT_S:-120}"
QUIET_MAX_CORES="${QUIET_MAX_CORES:-0.3}"
QUIET_WAIT_S="${QUIET_WAIT_S:-60}"
PROFILE="${PROFILE:-}"
PROFILE_S="${PROFILE_S:-10}"
PYSPY="${PYSPY:-/tmp/pyspy/bin/py-spy}"
PYSPY_ARGS="${PYSPY_ARGS---gil}"
# A fixed bench-only management key (CMS_BOOTSTRAP_KEY, >= 32 chars; loopback only).
BOOTSTRAP_KEY="bench-bootstrap-key-0123456789abcdefghij"
source "$HERE/lib.sh"

want() { [[ -z "$ONLY" || " $ONLY " == *" $1 "* ]] && { [[ "$BASELINE" == 1 ]] || [[ "$1" != base_* ]]; }; }

[[ -x "$PY" && -x "$CMS" ]] || die "no $ROOT/.venv with the cms command: run 'make up' once (or make the venv)"
ensure_wrk
trap cleanup EXIT
trap 'exit 130' INT TERM
mark_running "bench/mixed.sh"   # /tmp/bench-running while it runs (lib.sh)
for p in "$DELIVERY_PORT" "$MANAGEMENT_PORT" "$CEILING_PORT"; do
  port_free "$p" || die "port $p is already in use (set DELIVERY_PORT / MANAGEMENT_PORT / CEILING_PORT)"
done

STAMP="$(date -u +%Y-%m-%d_%H%M%SZ)"
RESULTS="$HERE/results"
OUTDIR="$RESULTS/mixed-$STAMP"
RESULTS_JSONL="$OUTDIR/results.jsonl"
mkdir -p "$OUTDIR"; : > "$RESULTS_JSONL"
log "raw output in $OUTDIR"

# A new data directory for every run, and nothing deleted (see pipeline.sh and bench/README.md).
BENCH_DATA_DIR="${BENCH_DATA_DIR:-$BENCH_DATA_ROOT/run-$STAMP}"
[[ ! -e "$BENCH_DATA_DIR" ]] || die "$BENCH_DATA_DIR exists; set BENCH_DATA_DIR to a new directory"
if compgen -G "$BENCH_DATA_ROOT/run-*" > /dev/null; then
  log "earlier runs' data under $BENCH_DATA_ROOT: $(du -sh "$BENCH_DATA_ROOT" 2>/dev/null | cut -f1) (delete it when no benchmark is about to run)"
fi
mkdir -p "$BENCH_DATA_DIR"; touch "$BENCH_DATA_DIR/.cms-bench"

D="http://127.0.0.1:$DELIVERY_PORT"
M="http://127.0.0.1:$MANAGEMENT_PORT"
LIST_PATH="/api/v1/entries/article?limit=20&sort=-published_at&include=author"   # run.sh's row 3
LIST_URL="$D$LIST_PATH"
SLUGS_LUA="$HERE/slugs.lua"
LABEL_SLUG="by-slug, 950 slugs rotating"
LABEL_LIST="list 20, -published_at, include=author"

# cms_components: COMPONENTS for lib.sh `measure` (each CMS part's cores in every row's "cpu").
cms_components() {
  local pg vk mgmt
  read -r pg vk <<< "$(daemons)"
  mgmt="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:management' | head -1 || true)"
  COMPONENTS="delivery=${DELIVERY_MAIN:-} management=${mgmt:-} worker=$(pgrep -P "$CMS_PID" -f 'cms.app.cli worker' | head -1 || true)"
  COMPONENTS+=" scheduler=$(pgrep -P "$CMS_PID" -f 'cms.app.cli scheduler' | head -1 || true) postgres=${pg:-} valkey=${vk:-}"
  log "components: $COMPONENTS"
}

# checks KIND: the CMS answers what the loads expect (KIND cached|nocache names the check files).
checks() {
  local k="$1" ok=0 s
  CURL_H=(); check "$k-unauthenticated" "$D/api/v1/entries/article/by-slug/article-0500" 401 "d['status'] == 401" \
    || log "WARNING: delivery answered without a key"
  CURL_H=(-H "Authorization: Bearer $DK")
  check "$k-draft_hidden" "$D/api/v1/entries/article/by-slug/article-0007" 404 "d['status'] == 404" \
    || log "WARNING: the draft article-0007 is visible"
  for s in article-0000 article-0500 article-0999; do
    check "$k-slug-$s" "$D/api/v1/entries/article/by-slug/$s" 200 \
      "d['data']['fields']['slug'] == '$s' and len(d['data']['fields']['body']) >= 2000" || ok=1
  done
  check "$k-list" "$LIST_URL" 200 \
    "len(d['data']) == 20 and d['meta']['total'] == 950 and all(e['fields']['author']['fields']['name'] for e in d['data']) and [e['published_at'] for e in d['data']] == sorted((e['published_at'] for e in d['data']), reverse=True)" \
    || ok=1
  return $ok
}

forget_pid() { # PID: no longer ours to stop (it has exited)
  local p keep=()
  for p in "${STARTED_PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
}

# with_publisher NAME CMD...: run CMD while bench/mixed.py republishes at RATE/s (and probes); the
# publisher starts once the machine is quiet and stops right after CMD. Its JSON: $OUTDIR/NAME.publish.json.
with_publisher() {
  local name="$1" pid i rc=0; shift
  rm -f "$OUTDIR/$name.ready"
  "$PY" "$HERE/mixed.py" publish "$M" "$BOOTSTRAP_KEY" "$D" "$DK" "$LIST_PATH" "${name//[^a-z0-9]/}" \
    "$OUTDIR/$name.publish.json" "$OUTDIR/$name.ready" 2> >(tee "$OUTDIR/$name.publisher.log" >&2) &
  pid=$!; STARTED_PIDS+=("$pid")
  for ((i = 0; i < 240; i++)); do [[ -e "$OUTDIR/$name.ready" ]] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if [[ ! -e "$OUTDIR/$name.ready" ]]; then
    stop_pid "$pid" 5; log "$name: the publisher did not start (see $OUTDIR/$name.publisher.log)"; return 1
  fi
  sleep 1   # let the publishes reach their steady state before the warm-up starts
  local before="${COMPONENTS:-}"
  COMPONENTS="$before publisher=$pid"
  "$@" || rc=$?
  COMPONENTS="$before"
  stop_pid "$pid" $((${PROBE_TIMEOUT_S%.*} + 30))
  forget_pid "$pid"
  [[ -s "$OUTDIR/$name.publish.json" ]] || { log "$name: the publisher wrote no results"; return 1; }
  return $rc
}

# mixed_row NAME LABEL TARGET URL [LUA]: bench with the publisher running, its figures in the row.
mixed_row() {
  local name="$1"
  settle
  wait_quiet
  if with_publisher "$name" measure "$@"; then
    "$PY" "$HERE/mixed.py" attach "$RESULTS_JSONL" "$name" "$OUTDIR/$name.publish.json" \
      "$OUTDIR/$name.cpu0.json" "$OUTDIR/$name.cpu1.json"
  else
    grep -q "\"name\": \"$name\"" "$RESULTS_JSONL" || fail_row "$name" "$2" "the publisher failed" "$3"
  fi
}

# profile ROW: load the row again for PROFILE_S s while py-spy samples the delivery worker.
profile() {
  local name="$1" url="$D" lua="$SLUGS_LUA"
  [[ " $PROFILE " == *" $name "* ]] || return 0
  [[ "$name" == *_list ]] && { url="$LIST_URL"; lua=""; }
  if [[ ! -x "$PYSPY" ]]; then
    log "PROFILE: no py-spy at $PYSPY (python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy)"; return 0
  fi
  [[ -n "${DELIVERY_WORKER:-}" ]] || { log "PROFILE: delivery worker pid not found"; return 0; }
  if [[ "$name" == mixed_* ]]; then
    with_publisher "profile-$name" profile_load "$name" "$url" "$lua" || true
  else
    profile_load "$name" "$url" "$lua"
  fi
  if [[ -s "$OUTDIR/profile-$name.txt" ]]; then
    "$PY" "$HERE/pyspy_top.py" "$OUTDIR/profile-$name.txt" 25 | tee "$OUTDIR/profile-$name.top.txt" >&2
  fi
}
profile_load() { # NAME URL LUA: py-spy record on the delivery worker around a wrk run of PROFILE_S
  local name="$1" url="$2" lua="$3" spy
  local -a s=(); [[ -n "$lua" ]] && s=(-s "$lua")
  log "profiling $name for ${PROFILE_S}s (py-spy on the delivery worker, pid $DELIVERY_WORKER)"
  timeout -k 5 $((PROFILE_S + 30)) "$PYSPY" record -d "$PROFILE_S" -r 250 -f raw -o "$OUTDIR/profile-$name.txt" $PYSPY_ARGS \
    --pid "$DELIVERY_WORKER" > "$OUTDIR/py-spy-$name.log" 2>&1 &
  spy=$!; STARTED_PIDS+=("$spy")
  sleep 1
  wrk_run "$PROFILE_S" "$OUTDIR/profile-$name.wrk.txt" "${WRK_H[@]}" "${s[@]}" "$url"
  wait "$spy" || log "py-spy rc=$? (see $OUTDIR/py-spy-$name.log)"
  forget_pid "$spy"
}

# http_statuses PHASE: the CMS's own count of answers by app and status (cms_http_requests_total on
# both apps' /metrics), appended to $OUTDIR/http-status.txt: 5xx or 429 during the loads show here.
http_statuses() {
  local phase="$1" port app
  for app in delivery management; do
    port="$DELIVERY_PORT"; [[ $app == management ]] && port="$MANAGEMENT_PORT"
    curl -fsS --max-time 10 -o "$OUTDIR/metrics-$phase-$app.txt" "http://127.0.0.1:$port/metrics" || true
  done
  "$PY" - "$phase" "$OUTDIR"/metrics-"$phase"-*.txt >> "$OUTDIR/http-status.txt" <<'PY' || true
import re, sys
phase, counts = sys.argv[1], {}
for path in sys.argv[2:]:
    for line in open(path):
        m = re.match(r'cms_http_requests_total\{(.*)\} ([0-9.e+]+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            key = (labels.get("app", "?"), labels.get("status", "?"))
            counts[key] = counts.get(key, 0) + float(m.group(2))
print(f"{phase}: " + (", ".join(f"{app} {status}: {n:,.0f}" for (app, status), n in sorted(counts.items())) or "no counts"))
PY
  tail -1 "$OUTDIR/http-status.txt" >&2
}

# cms_errors LOG: the CMS log's errors, kept next to it (and shown).
cms_errors() {
  local logf="$1" out="${1%.log}-errors.txt"
  grep -nE 'ERROR|Traceback|Exception| 5[0-9][0-9] ' "$logf" | head -50 > "$out" || true
  if [[ -s "$out" ]]; then log "errors in $logf (first 50 in $out):"; head -20 "$out" >&2; fi
}

# --- 1-3. the CMS with its cache: seed, loads without and with publishes ------------------------
phase1=0; for s in base_slug base_list mixed_slug mixed_list; do want "$s" && phase1=1; done
phase2=0; for s in nocache_slug nocache_list; do want "$s" && phase2=1; done
DK=""
if [[ $phase1 == 1 || $phase2 == 1 ]]; then
  cms_ok=1
  start_cms "$OUTDIR/cms.log" || cms_ok=0
  if [[ $cms_ok == 1 ]]; then
    log "seeding through the management API"
    SEED_T0=$SECONDS
    if ! "$PY" "$HERE/seed.py" "$M" "$BOOTSTRAP_KEY" "$OUTDIR/delivery-key" 2> >(tee "$OUTDIR/seed.log" >&2); then
      cms_ok=0; log "seeding failed (see $OUTDIR/seed.log)"
    fi
    SEED_S=$((SECONDS - SEED_T0))
  else
    tail -30 "$OUTDIR/cms.log" >&2
  fi
  if [[ $cms_ok == 1 ]]; then
    DK="$(cat "$OUTDIR/delivery-key")"
    SERVER_PIDS="$CMS_PID $(daemons)"
    WRK_H=(-H "Authorization: Bearer $DK")
    delivery_pids
    cms_components
    settle
    checks cached || cms_ok=0
    # The ceiling returns the CMS's own by-slug answer (as run.sh's), saved before any republish.
    cp "$OUTDIR/check-cached-slug-article-0500.body" "$OUTDIR/by-slug.json" 2>/dev/null || true
  fi
  if [[ $cms_ok == 1 ]]; then
    want base_slug && bench base_slug "$LABEL_SLUG, no publishes" "" "$D" "$SLUGS_LUA"
    want base_list && bench base_list "$LABEL_LIST, no publishes" "" "$LIST_URL"
    want mixed_slug && mixed_row mixed_slug "$LABEL_SLUG, during $RATE publishes/s" 0.5 "$D" "$SLUGS_LUA"
    want mixed_list && mixed_row mixed_list "$LABEL_LIST, during $RATE publishes/s" 0.25 "$LIST_URL"
    profile mixed_slug; profile mixed_list
    http_statuses cached
  else
    for s in base_slug base_list mixed_slug mixed_list; do
      want "$s" && fail_row "$s" "$s" "the CMS did not start, seed or pass its checks; see $OUTDIR/cms.log"
    done
  fi
  log "stopping the CMS"
  stop_cms
  cms_errors "$OUTDIR/cms.log"
fi

# --- 4. the same data with the delivery cache off -------------------------------------------------
if [[ $phase2 == 1 ]]; then
  ok2=0
  if [[ -n "$DK" ]]; then
    ok2=1
    start_cms "$OUTDIR/cms-nocache.log" CMS_DELIVERY_CACHE_MB=0 || ok2=0
  fi
  if [[ $ok2 == 1 ]]; then
    SERVER_PIDS="$CMS_PID $(daemons)"
    delivery_pids
    cms_components
    settle
    checks nocache || ok2=0
  fi
  if [[ $ok2 == 1 ]]; then
    want nocache_slug && bench nocache_slug "$LABEL_SLUG, cache off (CMS_DELIVERY_CACHE_MB=0)" 0.3 "$D" "$SLUGS_LUA"
    want nocache_list && bench nocache_list "$LABEL_LIST, cache off (CMS_DELIVERY_CACHE_MB=0)" 0.1 "$LIST_URL"
    profile nocache_slug; profile nocache_list
    http_statuses nocache
  else
    for s in nocache_slug nocache_list; do
      want "$s" && fail_row "$s" "$s" "the CMS (cache off) did not start or pass its checks; see $OUTDIR/cms-nocache.log"
    done
  fi
  log "stopping the CMS"
  stop_cms
  [[ -e "$OUTDIR/cms-nocache.log" ]] && cms_errors "$OUTDIR/cms-nocache.log"
fi
WRK_H=(); COMPONENTS=""

# --- 5. the ceiling ------------------------------------------------------------------------------
want ceiling && ceiling_row "$OUTDIR/by-slug.json"

# --- report --------------------------------------------------------------------------------------
write_meta "$OUTDIR/meta.json" "$STAMP" \
  "one granian worker each, --loop uvloop; the CMS via 'cms up --workers 1' (delivery, management, worker, scheduler, embedded PostgreSQL + Valkey under $BENCH_DATA_DIR), then again with CMS_DELIVERY_CACHE_MB=0; then the ceiling alone" \
  "{\"seed_s\": ${SEED_S:-null}, \"publisher\": {\"rate\": $RATE, \"probe_every\": $PROBE_EVERY, \"probe_interval_ms\": $PROBE_INTERVAL_MS, \"probe_timeout_s\": $PROBE_TIMEOUT_S}, \"list_path\": \"$LIST_PATH\"}"
echo
echo "## Mixed: delivery during $RATE publishes/s, cache off, ceiling; $STAMP (wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION_S}s --latency after ${WARMUP_S}s warm-up, 127.0.0.1)"
echo
"$PY" "$HERE/mixed.py" report "$RESULTS_JSONL" "$OUTDIR/meta.json" "$RESULTS/mixed-$STAMP.json"
if [[ -s "$OUTDIR/http-status.txt" ]]; then
  echo; echo "CMS answers by status (its /metrics, whole phase incl. seeding and checks):"; sed 's/^/- /' "$OUTDIR/http-status.txt"
fi
echo
echo "results: $RESULTS/mixed-$STAMP.json   raw wrk output and logs: $OUTDIR"
