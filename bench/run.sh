#!/usr/bin/env bash
# Delivery benchmark: the CMS (embedded PostgreSQL + Valkey via `cms up`, one granian worker
# per app, plus the worker and scheduler `cms up` runs) seeded with 1,000 articles, then the ceiling (Litestar + granian, pre-encoded bytes),
# one at a time, same wrk settings as ../shared/peers/run.sh. Usage: bash bench/run.sh
#
# Env knobs (defaults in brackets):
#   WARMUP_S [5]  DURATION_S [15]  WRK_THREADS [2]  WRK_CONNS [32]
#   BENCH_DATA_ROOT [/tmp/cms-bench]  each run's CMS_DATA_DIR is a new directory below it,
#                    BENCH_DATA_DIR [$BENCH_DATA_ROOT/run-<UTC stamp>]; earlier runs' directories are
#                    kept (deleting them right before a run slows file creation for minutes on this
#                    machine, see "The filesystem trap" in bench/README.md): delete them yourself when
#                    nothing is measuring
#   DELIVERY_PORT [18000]  MANAGEMENT_PORT [18001]  CEILING_PORT [18082]
#   START_TIMEOUT_S [180]  SETTLE_TIMEOUT_S [120] (wait for the CMS to go idle after seeding)
#   BENCH_SLUG [article-0500]
#   EXTRA [1]        1 = also the extra rows: the peers' ours.sh scenario a (by-slug through the
#                    list filter) and scenarios 2 and 3 with every request missing the cache (the
#                    CMS started again on the same data with CMS_DELIVERY_CACHE_MB=0)
#   ONLY [""]        space-separated subset of: slug_same slug_rotate list filter_slug
#                    landing_slug landing_list
#                    gql_post_list gql_get_hit slug_nocache list_nocache gql_nocache ceiling
#                    (landing_*: issue 14, 1,000 landing pages of 20 blocks seeded beside the articles,
#                    SEED_LANDING=1000 for seed.py, only when one of these rows is wanted)
#   GQL_LUA [../shared/peers/graphql.lua]  the peers' wrk script that POSTs $GQL_BODY (GraphQL rows)
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
BENCH_DATA_ROOT="${BENCH_DATA_ROOT:-/tmp/cms-bench}"
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
GQL_LUA="${GQL_LUA:-$ROOT/../shared/peers/graphql.lua}"
KEEP_RUNNING="${KEEP_RUNNING:-0}"
QUIET_MAX_CORES="${QUIET_MAX_CORES:-0.3}"
QUIET_WAIT_S="${QUIET_WAIT_S:-60}"
# A fixed bench-only management key (CMS_BOOTSTRAP_KEY, >= 32 chars; loopback only).
BOOTSTRAP_KEY="bench-bootstrap-key-0123456789abcdefghij"
# log, die, processes by PID, wait_http, start_cms, wrk_run, wait_quiet, settle, bench, check, ceiling_row, …
source "$HERE/lib.sh"

want() { [[ -z "$ONLY" || " $ONLY " == *" $1 "* ]]; }

[[ -x "$PY" && -x "$CMS" ]] || die "no $ROOT/.venv with the cms command: run 'make up' once (or make the venv)"
ensure_wrk

trap cleanup EXIT
trap 'exit 130' INT TERM
mark_running "bench/run.sh"

for p in "$DELIVERY_PORT" "$MANAGEMENT_PORT" "$CEILING_PORT"; do
  port_free "$p" || die "port $p is already in use (set DELIVERY_PORT / MANAGEMENT_PORT / CEILING_PORT)"
done

STAMP="$(date -u +%Y-%m-%d_%H%M%SZ)"
RESULTS="$HERE/results"
OUTDIR="$RESULTS/$STAMP"
RESULTS_JSONL="$OUTDIR/results.jsonl"
mkdir -p "$OUTDIR"; : > "$RESULTS_JSONL"
log "raw output in $OUTDIR"
# A new data directory for every run, and nothing deleted (see "The filesystem trap" in bench/README.md).
BENCH_DATA_DIR="${BENCH_DATA_DIR:-$BENCH_DATA_ROOT/run-$STAMP}"
[[ ! -e "$BENCH_DATA_DIR" ]] || die "$BENCH_DATA_DIR exists; set BENCH_DATA_DIR to a new directory"
if compgen -G "$BENCH_DATA_ROOT/run-*" > /dev/null; then
  log "earlier runs' data under $BENCH_DATA_ROOT: $(du -sh "$BENCH_DATA_ROOT" 2>/dev/null | cut -f1) (delete it when no benchmark is about to run)"
fi

# profile_one SCENARIO: load it again for PROFILE_S seconds while py-spy samples the delivery worker.
profile_one() {
  local name="$1" purl plua="" spy
  case "$name" in
    slug_same) purl="$SLUG_URL" ;;
    slug_rotate) purl="$D"; plua="$HERE/slugs.lua" ;;
    landing_slug) purl="$D"; plua="$HERE/slugs.lua"; export SLUG_BASE=landing SLUG_PREFIX=/api/v1/entries/landing/by-slug/ ;;
    landing_list) purl="$LANDING_LIST_URL" ;;
    list) purl="$LIST_URL" ;;
    filter_slug) purl="$FILTER_URL" ;;
    slug_nocache) purl="$D"; plua="$HERE/slugs.lua" ;;   # (run while the cache is off)
    list_nocache) purl="$LIST_URL" ;;
    gql_post_list) purl="$GQL_URL"; plua="$GQL_LUA" ;;
    gql_get_hit|gql_nocache) purl="$GQL_GET_URL" ;;   # (gql_nocache: run while the cache is off)
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
  unset SLUG_BASE SLUG_PREFIX
  wait "$spy" || log "py-spy rc=$? (see $OUTDIR/py-spy-$name.log)"
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
# Issue 14: landing pages (a blocks field of 20 blocks, ~6 KB per page), by slug and listed (no include).
LANDING_LIST_URL="$D/api/v1/entries/landing?limit=20&sort=-published_at"
# landing_expr: the document is a landing page with its 20 blocks, each with every field of its type.
LANDING_DOC="(lambda e: e['type'] == 'landing' and len(e['fields']['body']) == 20 and e['fields']['body'][0]['block'] == 'hero' and all(set(b['fields']) == {'hero': {'title', 'subtitle'}, 'text': {'body'}, 'quote': {'text', 'by'}, 'cta': {'label', 'target'}}[b['block']] for b in e['fields']['body']) and sum(1 for b in e['fields']['body'] if b['block'] == 'cta' and b['fields']['target'] and b['fields']['target']['id']) == 3)"
# GraphQL (issue 11): the peers' Directus query (../shared/peers/run.sh, row c) in this CMS's schema:
# 20 articles, newest first, with the author's name. (`status` has no counterpart: delivery serves
# published entries only.) POSTed with the peers' graphql.lua, and as a persisted query over GET.
GQL_URL="$D/graphql"
GQL_QUERY='query { articleCollection(limit: 20, order: [publishedAt_DESC]) { items { id title slug body publishedAt author { name } } } }'
GQL_HASH="$(printf '%s' "$GQL_QUERY" | sha256sum | cut -d' ' -f1)"
GQL_EXT="{\"persistedQuery\":{\"version\":1,\"sha256Hash\":\"$GQL_HASH\"}}"
export GQL_BODY; GQL_BODY="$("$PY" -c 'import json,sys; print(json.dumps({"query": sys.argv[1]}))' "$GQL_QUERY")"
GQL_REGISTER="$("$PY" -c 'import json,sys; print(json.dumps({"query": sys.argv[1], "extensions": json.loads(sys.argv[2])}))' "$GQL_QUERY" "$GQL_EXT")"
GQL_GET_URL="$GQL_URL?extensions=$("$PY" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$GQL_EXT")"
GQL_POST_ARGS=(-X POST -H "Content-Type: application/json" --data "$GQL_BODY")
# gql_expr REST_IDS: the answer has no errors, 20 items with a 2 KB body and the author's name, newest
# first, and the same entries in the same order as the REST list (REST_IDS, a Python list literal).
gql_expr() {
  echo "'errors' not in d and (lambda it: len(it) == 20 and all(i['author']['name'] and len(i['body']) >= 2000 and i['slug'] for i in it) and [i['publishedAt'] for i in it] == sorted((i['publishedAt'] for i in it), reverse=True) and [i['id'] for i in it] == $1)(d['data']['articleCollection']['items'])"
}
# gql_checks SUFFIX: the POST, the registration of the persisted query (query + hash), then the GET
# with the hash alone; sets ok_gql_post / ok_gql_get.
gql_checks() {
  local sfx="$1" rest_ids expr
  rest_ids="$("$PY" -c 'import json,sys; print([e["id"] for e in json.load(open(sys.argv[1]))["data"]])' "$OUTDIR/check-list$sfx.body" 2>/dev/null || echo None)"
  expr="$(gql_expr "$rest_ids")"
  ok_gql_post=1; ok_gql_get=1
  if [[ ! -f "$GQL_LUA" ]]; then log "no $GQL_LUA (the peers' wrk script for POST)"; ok_gql_post=0; fi
  check "gql_post$sfx" "$GQL_URL" 200 "$expr" "${GQL_POST_ARGS[@]}" || ok_gql_post=0
  check "gql_register$sfx" "$GQL_URL" 200 "$expr" -X POST -H "Content-Type: application/json" --data "$GQL_REGISTER" \
    || ok_gql_get=0
  check "gql_get$sfx" "$GQL_GET_URL" 200 "$expr" || ok_gql_get=0
}
CMS_SCENARIOS=(slug_same slug_rotate list filter_slug landing_slug landing_list gql_post_list gql_get_hit slug_nocache list_nocache gql_nocache)
any_cms=0; for s in "${CMS_SCENARIOS[@]}"; do want "$s" && any_cms=1; done

if [[ $any_cms == 1 ]]; then
  mkdir -p "$BENCH_DATA_DIR"; touch "$BENCH_DATA_DIR/.cms-bench"
  cms_ok=1
  start_cms "$OUTDIR/cms.log" || cms_ok=0
  if [[ $cms_ok == 1 ]]; then
    log "seeding through the management API"
    CURL_H=(); SEED_T0=$SECONDS
    SEED_LANDING=0; { want landing_slug || want landing_list; } && SEED_LANDING=1000
    if ! SEED_LANDING=$SEED_LANDING "$PY" "$HERE/seed.py" "$M" "$BOOTSTRAP_KEY" "$OUTDIR/delivery-key" 2> >(tee "$OUTDIR/seed.log" >&2); then
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
    delivery_pids
    # Sanity: auth is really on the path, drafts are hidden, bodies are right.
    CURL_H=(); check unauthenticated "$SLUG_URL" 401 "d['status'] == 401" || log "WARNING: delivery answered without a key"
    CURL_H=(-H "Authorization: Bearer $DK")
    check draft_hidden "$D/api/v1/entries/article/by-slug/article-0007" 404 "d['status'] == 404" \
      || log "WARNING: the draft article-0007 is visible"
    ok_same=1; ok_rotate=1; ok_list=1; ok_filter=1
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
    ok_lslug=1; ok_llist=1
    if [[ $SEED_LANDING != 0 ]]; then
      for s in landing-0000 landing-0500 landing-0999; do
        check "landing_slug_$s" "$D/api/v1/entries/landing/by-slug/$s" 200 \
          "d['data']['fields']['slug'] == '$s' and $LANDING_DOC(d['data'])" || ok_lslug=0
      done
      check landing_draft_hidden "$D/api/v1/entries/landing/by-slug/landing-0007" 404 "d['status'] == 404" || ok_lslug=0
      check landing_list "$LANDING_LIST_URL" 200 \
        "len(d['data']) == 20 and d['meta']['total'] == 950 and all($LANDING_DOC(e) for e in d['data']) and [e['published_at'] for e in d['data']] == sorted((e['published_at'] for e in d['data']), reverse=True)" \
        || ok_llist=0
    fi
    gql_checks ""

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
    label_lslug="g. landing by-slug (20 blocks), 950 slugs rotating"
    label_llist="h. landing list 20 (20 blocks each), sort=-published_at"
    if want landing_slug; then
      if [[ $ok_lslug == 1 ]]; then
        SLUG_BASE=landing SLUG_PREFIX=/api/v1/entries/landing/by-slug/ bench landing_slug "$label_lslug" 0.5 "$D" "$HERE/slugs.lua"
      else fail_row landing_slug "$label_lslug" "sanity check failed" 0.5; fi
    fi
    if want landing_list; then
      if [[ $ok_llist == 1 ]]; then bench landing_list "$label_llist" 0.25 "$LANDING_LIST_URL"
      else fail_row landing_list "$label_llist" "sanity check failed" 0.25; fi
    fi
    if [[ "$EXTRA" == 1 ]] && want filter_slug; then
      if [[ $ok_filter == 1 ]]; then bench filter_slug "a. list filter[slug][eq]=$BENCH_SLUG (peers' ours.sh a)" "" "$FILTER_URL"
      else fail_row filter_slug "a. list filter[slug][eq]=$BENCH_SLUG (peers' ours.sh a)" "sanity check failed"; fi
    fi
    label_gpost="d. GraphQL POST list 20 +author name (server-side cache since 2026-12-06)"
    label_ghit="e. GraphQL persisted query GET (hash only), cache hit"
    if want gql_post_list; then
      if [[ $ok_gql_post == 1 ]]; then bench gql_post_list "$label_gpost" rps:2000 "$GQL_URL" "$GQL_LUA"
      else fail_row gql_post_list "$label_gpost" "sanity check failed" rps:2000; fi
    fi
    if want gql_get_hit; then
      if [[ $ok_gql_get == 1 ]]; then bench gql_get_hit "$label_ghit" 0.5 "$GQL_GET_URL"
      else fail_row gql_get_hit "$label_ghit" "sanity check failed" 0.5; fi
    fi
    # Non-2xx answers during the load (e.g. a 429 or a 5xx) are counted by wrk and mark the row INVALID.
    for ps_name in $PROFILE; do [[ "$ps_name" == *_nocache ]] || profile_one "$ps_name"; done

    # Rows b and c: every request a cache miss. The cache key ignores unknown query parameters, so
    # the only way to miss it every time is to turn it off: the CMS again, same data, no cache.
    if [[ "$EXTRA" == 1 ]] && { want slug_nocache || want list_nocache || want gql_nocache; }; then
      label_b="b. by-slug, 950 slugs rotating, every request a cache miss (cache off)"
      label_c="c. list 20 +author, every request a cache miss (cache off)"
      label_f="f. GraphQL persisted query GET, every request a cache miss (cache off)"
      log "stopping the CMS; starting it again with CMS_DELIVERY_CACHE_MB=0 for rows b and c"
      stop_cms
      ok_nc=1
      start_cms "$OUTDIR/cms-nocache.log" CMS_DELIVERY_CACHE_MB=0 || ok_nc=0
      if [[ $ok_nc == 1 ]]; then
        SERVER_PIDS="$CMS_PID $(daemons)"
        delivery_pids
        settle
        check slug_nocache "$D/api/v1/entries/article/by-slug/article-0001" 200 \
          "d['data']['fields']['slug'] == 'article-0001'" || ok_nc=0
        check list_nocache "$LIST_URL" 200 \
          "len(d['data']) == 20 and d['meta']['total'] == 950 and all(e['fields']['author']['fields']['name'] for e in d['data'])" \
          || ok_nc=0
        gql_checks _nocache
      fi
      if want slug_nocache; then
        if [[ $ok_nc == 1 ]]; then bench slug_nocache "$label_b" "" "$D" "$HERE/slugs.lua"
        else fail_row slug_nocache "$label_b" "the CMS with the cache off did not start or pass its checks"; fi
      fi
      if want list_nocache; then
        if [[ $ok_nc == 1 ]]; then bench list_nocache "$label_c" "" "$LIST_URL"
        else fail_row list_nocache "$label_c" "the CMS with the cache off did not start or pass its checks"; fi
      fi
      if want gql_nocache; then
        if [[ $ok_nc == 1 && ${ok_gql_get:-0} == 1 ]]; then bench gql_nocache "$label_f" "" "$GQL_GET_URL"
        else fail_row gql_nocache "$label_f" "the CMS with the cache off did not start or pass its checks"; fi
      fi
      if [[ $ok_nc == 1 ]]; then
        for ps_name in $PROFILE; do [[ "$ps_name" != *_nocache ]] || profile_one "$ps_name"; done
      fi
    fi

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
  ceiling_row "$OUTDIR/by-slug.json"   # the CMS's own by-slug answer for BENCH_SLUG, saved by its check
fi

# --- report ---------------------------------------------------------------------------------
write_meta "$OUTDIR/meta.json" "$STAMP" \
  "one granian worker each, --loop uvloop; the CMS via 'cms up --workers 1' (delivery and management, plus its worker and scheduler, embedded PostgreSQL + Valkey under $BENCH_DATA_DIR); then the ceiling alone" \
  "{\"slug\": \"$BENCH_SLUG\", \"seed_s\": ${SEED_S:-null}}"
echo
echo "## CMS delivery vs ceiling, $STAMP (wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION_S}s --latency after ${WARMUP_S}s warm-up, 127.0.0.1)"
echo
"$PY" "$HERE/wrkparse.py" report "$RESULTS_JSONL" "$OUTDIR/meta.json" "$RESULTS/$STAMP.json"
echo
echo "results: $RESULTS/$STAMP.json   raw wrk output and logs: $OUTDIR"
