#!/usr/bin/env bash
# Credentials and rate limits (issue 12): what authentication and the rate limiters cost, and the
# OAuth token endpoint's throughput. One run, the CMS started once per phase on the same data
# (PHASES, default "on1 off1 on2 off2": alternating, so that a drift of the machine or of the data
# shows as on1 ≠ on2 instead of passing for the limiters' cost), always with CMS_PUBLIC_DELIVERY=1:
#   on*   both rate limits on, never binding (1000000000/1, as lib.sh's start_cms sets them)
#   off*  CMS_RATE_LIMIT_MANAGEMENT=off CMS_RATE_LIMIT_DELIVERY=off (no bookkeeping at all)
# Rows of each phase (each after `settle`: the worker has worked off the earlier writes' events):
#   slug_key_<phase>    by-slug rotating (bench/slugs.lua), a cache hit, with the delivery key
#   slug_anon_<phase>   the same without a key (anonymous, allowed by CMS_PUBLIC_DELIVERY=1)
#   write_<phase>       POST /v1/entries/note (bench/writes.lua: a new entry per request, so no
#                       409s), closed loop, the bootstrap key
#   token               (first phase only) POST /oauth/token, client credentials by HTTP Basic
#                       (bench/token.lua), after one checked answer 200 with an access_token
#
# Usage: BENCH_COMMIT=HEAD bash bench/auth.sh
# Env knobs (defaults in brackets): WARMUP_S [5] DURATION_S [15] WRK_THREADS [2] WRK_CONNS [32]
#   BENCH_DATA_ROOT [/tmp/cms-bench-auth] (a new run-<stamp> directory each run, none deleted)
#   DELIVERY_PORT [18400] MANAGEMENT_PORT [18401] START_TIMEOUT_S [180] SETTLE_TIMEOUT_S [120]
#   QUIET_MAX_CORES [0.3] QUIET_WAIT_S [60]  PHASES ["on1 off1 on2 off2"] (names on*/off*)
#   ROWS ["slug_key slug_anon write token"] the rows to run in every phase (token: first phase only)
#   PROFILE [""] row names (slug_key slug_anon write token): after the last phase's rows, load
#   each again for PROFILE_S [10] s under py-spy (PYSPY, PYSPY_ARGS as in run.sh); write and
#   token sample the management worker, the slug rows the delivery worker.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$ROOT/.venv/bin/python"
CMS="$ROOT/.venv/bin/cms"

WARMUP_S="${WARMUP_S:-5}"
DURATION_S="${DURATION_S:-15}"
WRK_THREADS="${WRK_THREADS:-2}"
WRK_CONNS="${WRK_CONNS:-32}"
BENCH_DATA_ROOT="${BENCH_DATA_ROOT:-/tmp/cms-bench-auth}"
DELIVERY_PORT="${DELIVERY_PORT:-18400}"
MANAGEMENT_PORT="${MANAGEMENT_PORT:-18401}"
START_TIMEOUT_S="${START_TIMEOUT_S:-180}"
SETTLE_TIMEOUT_S="${SETTLE_TIMEOUT_S:-120}"
QUIET_MAX_CORES="${QUIET_MAX_CORES:-0.3}"
QUIET_WAIT_S="${QUIET_WAIT_S:-60}"
PHASES="${PHASES:-on1 off1 on2 off2}"
ROWS="${ROWS:-slug_key slug_anon write token}"
PROFILE="${PROFILE:-}"
PROFILE_S="${PROFILE_S:-10}"
PYSPY="${PYSPY:-/tmp/pyspy/bin/py-spy}"
PYSPY_ARGS="${PYSPY_ARGS---gil}"
BOOTSTRAP_KEY="bench-bootstrap-key-0123456789abcdefghij"
source "$HERE/lib.sh"

[[ -x "$PY" && -x "$CMS" ]] || die "no $ROOT/.venv with the cms command"
ensure_wrk
trap cleanup EXIT
trap 'exit 130' INT TERM
mark_running "bench/auth.sh"
for p in "$DELIVERY_PORT" "$MANAGEMENT_PORT"; do
  port_free "$p" || die "port $p is already in use (set DELIVERY_PORT / MANAGEMENT_PORT)"
done

STAMP="$(date -u +%Y-%m-%d_%H%M%SZ)"
RESULTS="$HERE/results"
OUTDIR="$RESULTS/auth-$STAMP"
RESULTS_JSONL="$OUTDIR/results.jsonl"
mkdir -p "$OUTDIR"; : > "$RESULTS_JSONL"
log "raw output in $OUTDIR"
BENCH_DATA_DIR="${BENCH_DATA_DIR:-$BENCH_DATA_ROOT/run-$STAMP}"
[[ ! -e "$BENCH_DATA_DIR" ]] || die "$BENCH_DATA_DIR exists; set BENCH_DATA_DIR to a new directory"
mkdir -p "$BENCH_DATA_DIR"

D="http://127.0.0.1:$DELIVERY_PORT"
M="http://127.0.0.1:$MANAGEMENT_PORT"
SLUG_URL="$D/api/v1/entries/article/by-slug/article-0500"
MK=(-H "Authorization: Bearer $BOOTSTRAP_KEY")

# management_pid: MANAGEMENT_WORKER, the management app's granian worker (for py-spy).
management_pid() {
  local main; main="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:management' | head -1 || true)"
  MANAGEMENT_WORKER="$(pgrep -P "${main:-0}" | head -1 || true)"
}

# up PHASE: start the CMS on the shared data dir with that phase's settings; checks.
up() {
  local phase="$1" rl=()
  [[ "$phase" == off* ]] && rl=(CMS_RATE_LIMIT_MANAGEMENT=off CMS_RATE_LIMIT_DELIVERY=off)
  start_cms "$OUTDIR/cms-$phase.log" CMS_PUBLIC_DELIVERY=1 "${rl[@]}" || { tail -30 "$OUTDIR/cms-$phase.log" >&2; die "the CMS did not start ($phase)"; }
  SERVER_PIDS="$CMS_PID $(daemons)"
  delivery_pids; management_pid
  # each CMS part's cores in every row (lib.sh `measure`, as mixed.sh does)
  local pg vk mgmt
  read -r pg vk <<< "$(daemons)"
  mgmt="$(pgrep -P "$CMS_PID" -f 'cms.app.asgi:management' | head -1 || true)"
  COMPONENTS="delivery=${DELIVERY_MAIN:-} management=${mgmt:-} worker=$(pgrep -P "$CMS_PID" -f 'cms.app.cli worker' | head -1 || true)"
  COMPONENTS+=" postgres=${pg:-} valkey=${vk:-}"
}

want_row() { [[ " $ROWS " == *" $1 "* ]]; }
# rows PHASE: the rows of one phase.
rows() {
  local p="$1" limits="limits on"
  [[ "$p" == off* ]] && limits="limits off"
  CURL_H=(-H "Authorization: Bearer $DK")
  check "slug_key_$p" "$SLUG_URL" 200 "d['data']['fields']['slug'] == 'article-0500'" || die "by-slug with the key failed"
  CURL_H=()
  check "slug_anon_$p" "$SLUG_URL" 200 "d['data']['fields']['slug'] == 'article-0500'" || die "anonymous by-slug failed (CMS_PUBLIC_DELIVERY=1)"
  CURL_H=("${MK[@]}")
  check "write_$p" "$M/v1/entries/note" 201 "d['data']['fields']['text'] == 'check'" \
    -X POST -H "Content-Type: application/json" --data '{"fields":{"text":"check"}}' || die "a management write failed"
  curl -sS -D "$OUTDIR/headers-slug-$p.txt" -o /dev/null -H "Authorization: Bearer $DK" "$SLUG_URL" || true
  if [[ "$p" != off* ]]; then
    grep -qi '^ratelimit:' "$OUTDIR/headers-slug-$p.txt" || log "WARNING: no RateLimit header on by-slug with limits on"
  else
    ! grep -qi '^ratelimit:' "$OUTDIR/headers-slug-$p.txt" || log "WARNING: a RateLimit header with limits off"
  fi
  CURL_H=()
  WRK_H=(-H "Authorization: Bearer $DK")
  want_row slug_key && settle && bench "slug_key_$p" "by-slug rotating, delivery key, $limits ($p)" "" "$D" "$HERE/slugs.lua"
  WRK_H=()
  want_row slug_anon && settle && bench "slug_anon_$p" "by-slug rotating, anonymous (CMS_PUBLIC_DELIVERY=1), $limits ($p)" "" "$D" "$HERE/slugs.lua"
  WRK_H=("${MK[@]}")
  want_row write && settle && bench "write_$p" "POST /v1/entries/note, bootstrap key, management $limits ($p)" "" "$M" "$HERE/writes.lua"
  if [[ "$p" == "${PHASES%% *}" ]] && want_row token; then
    WRK_H=(-H "Authorization: Basic $BASIC")
    settle; bench token "POST /oauth/token, client credentials (HTTP Basic)" rps:1000 "$M" "$HERE/token.lua"
  fi
  WRK_H=()
}

profile_one() { # NAME
  local name="$1" pid url lua spy
  local -a h=()
  case "$name" in
    slug_key) pid="$DELIVERY_WORKER"; url="$D"; lua="$HERE/slugs.lua"; h=(-H "Authorization: Bearer $DK") ;;
    slug_anon) pid="$DELIVERY_WORKER"; url="$D"; lua="$HERE/slugs.lua" ;;
    write) pid="$MANAGEMENT_WORKER"; url="$M"; lua="$HERE/writes.lua"; h=("${MK[@]}") ;;
    token) pid="$MANAGEMENT_WORKER"; url="$M"; lua="$HERE/token.lua"; h=(-H "Authorization: Basic $BASIC") ;;
    *) log "PROFILE: unknown row $name"; return 0 ;;
  esac
  [[ -x "$PYSPY" ]] || { log "PROFILE: no py-spy at $PYSPY"; return 0; }
  [[ -n "$pid" ]] || { log "PROFILE: no worker pid for $name"; return 0; }
  log "profiling $name for ${PROFILE_S}s (py-spy, pid $pid)"
  timeout -k 5 $((PROFILE_S + 30)) "$PYSPY" record -d "$PROFILE_S" -r 250 -f raw -o "$OUTDIR/profile-$name.txt" $PYSPY_ARGS \
    --pid "$pid" > "$OUTDIR/py-spy-$name.log" 2>&1 &
  spy=$!; STARTED_PIDS+=("$spy")
  sleep 1
  wrk_run "$PROFILE_S" "$OUTDIR/profile-$name.wrk.txt" "${h[@]}" -s "$lua" "$url"
  wait "$spy" || log "py-spy rc=$? (see $OUTDIR/py-spy-$name.log)"
  [[ -s "$OUTDIR/profile-$name.txt" ]] && "$PY" "$HERE/pyspy_top.py" "$OUTDIR/profile-$name.txt" 25 | tee "$OUTDIR/profile-$name.top.txt" >&2
  return 0
}

first=1
for phase in $PHASES; do
  if [[ $first == 0 ]]; then stop_cms; fi
  up "$phase"
  if [[ $first == 1 ]]; then
    log "seeding through the management API"
    "$PY" "$HERE/seed.py" "$M" "$BOOTSTRAP_KEY" "$OUTDIR/delivery-key" 2> >(tee "$OUTDIR/seed.log" >&2) || die "seeding failed"
    DK="$(cat "$OUTDIR/delivery-key")"
    CURL_H=("${MK[@]}")
    curl -fsS -o "$OUTDIR/note-type.body" -X PUT "${MK[@]}" -H "Content-Type: application/json" \
      --data '{"name": "Note", "display_field": "text", "fields": [{"id": "text", "type": "text", "required": true}]}' \
      "$M/v1/content-types/note" || die "could not create the content type note"
    check oauth_client "$M/v1/oauth-clients" 201 "d['data']['client_id'] and d['data']['client_secret']" \
      -X POST -H "Content-Type: application/json" --data '{"name": "bench", "scopes": ["content:read"]}' \
      || die "could not create the OAuth client"
    BASIC="$("$PY" -c 'import base64,json,sys; d=json.load(open(sys.argv[1]))["data"]; print(base64.b64encode((d["client_id"]+":"+d["client_secret"]).encode()).decode())' "$OUTDIR/check-oauth_client.body")"
    CURL_H=()
    check token_once "$M/oauth/token" 200 "d['access_token'] and d['token_type'] == 'Bearer'" \
      -X POST -H "Authorization: Basic $BASIC" -H "Content-Type: application/x-www-form-urlencoded" \
      --data 'grant_type=client_credentials' || die "POST /oauth/token did not answer 200 with an access_token"
    settle
    first=0
  fi
  rows "$phase"
done
for name in $PROFILE; do profile_one "$name"; done
stop_cms

write_meta "$OUTDIR/meta.json" "$STAMP" \
  "the CMS via 'cms up --workers 1' with CMS_PUBLIC_DELIVERY=1, started once per phase ($PHASES) on the same data under $BENCH_DATA_DIR" \
  "{\"phases\": \"$PHASES\"}"
echo
echo "## Credentials and rate limits, $STAMP (wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION_S}s --latency after ${WARMUP_S}s warm-up)"
echo
"$PY" "$HERE/wrkparse.py" report "$RESULTS_JSONL" "$OUTDIR/meta.json" "$RESULTS/auth-$STAMP.json"
echo
"$PY" - "$RESULTS_JSONL" <<'PY'
import json, sys
r = {x["name"]: x for x in map(json.loads, open(sys.argv[1])) if x.get("valid")}
ran = {x["name"] for x in map(json.loads, open(sys.argv[1]))}
def rps(n): return r[n]["rps"] if n in r else None
def cmp(what, a, b, target):
    if a not in ran or b not in ran:
        return  # a row that did not run (ROWS)
    if rps(a) is None or rps(b) is None:
        print(f"| {what} | {a} vs {b} | n/a | | {target} |"); return
    d = rps(b) / rps(a) - 1
    print(f"| {what} | {a} {rps(a):,.0f} vs {b} {rps(b):,.0f} | {d:+.1%} | | {target} |")
print("| comparison | req/s | second vs first | | target |\n|---|---|--:|---|---|")
phases = []
for x in map(json.loads, open(sys.argv[1])):
    for stem in ("slug_key_", "slug_anon_", "write_"):
        if x["name"].startswith(stem) and x["name"][len(stem):] not in phases:
            phases.append(x["name"][len(stem):])
for p in phases:
    cmp(f"auth cost, {p}", f"slug_key_{p}", f"slug_anon_{p}", "< 10%")
ons = [p for p in phases if p.startswith("on")]
offs = [p for p in phases if p.startswith("off")]
for on, off in zip(ons, offs):
    cmp(f"management limiter, {on} vs {off}", f"write_{on}", f"write_{off}", "< 5%")
    cmp(f"delivery limiter, {on} vs {off}", f"slug_key_{on}", f"slug_key_{off}", "")
def mean(names):
    v = [rps(n) for n in names if rps(n) is not None]
    return sum(v) / len(v) if v and len(v) == len(names) else None
for what, stem, target in (("management limiter", "write", "< 5%"), ("delivery limiter", "slug_key", "")):
    a, b = mean([f"{stem}_{p}" for p in ons]), mean([f"{stem}_{p}" for p in offs])
    if a and b:
        print(f"| {what}, mean of on vs mean of off | {a:,.0f} vs {b:,.0f} | {b / a - 1:+.1%} | | {target} |")
if rps("token") is not None:
    print(f"| POST /oauth/token | {rps('token'):,.0f} | | | ≥ 1,000/s {'✓' if rps('token') >= 1000 else '✗'} |")
print("\n| row | req/s | delivery | management | worker | postgres | valkey | req per app CPU-s | others |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|")
for n, x in r.items():
    c = x["cpu"].get("component_cores", {})
    app = c.get("management", 0) if n.startswith(("write", "token")) else c.get("delivery", 0)
    print(f"| {n} | {x['rps']:,.0f} | " + " | ".join(f"{c.get(k, 0):.2f}" for k in ("delivery", "management", "worker", "postgres", "valkey"))
          + f" | {x['rps'] / app if app else 0:,.0f} | {x['cpu'].get('others_cores', 0):.2f} |")
PY
echo
echo "results: $RESULTS/auth-$STAMP.json   raw wrk output and logs: $OUTDIR"
