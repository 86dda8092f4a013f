#!/usr/bin/env bash
# The webhook dispatcher of usage alerts (crates/alert-dispatcher) against a running PostgreSQL
# with pg_quota installed, and a local receiver (tests/alerts/receiver.py) that logs every
# request and can fail, be slow, or be down. Five scenarios, each asserted from both ends:
# quota.alerts (delivered_at, attempts, last_error) and what the receiver got (verify.py:
# bodies, ids, signatures).
#   tests/alerts/dispatcher.sh SOCKET_DIR PORT
# Creates (and on success drops) the database pg_quota_dispatch in that server.
set -euo pipefail
cd "$(dirname "$0")/../.."
socket_dir=$1 port=$2
db=pg_quota_dispatch
here=tests/alerts
secret='whsec_dispatcher-test'
timeout_seconds=1
work=$(mktemp -d /tmp/pgq-alerts.XXXXXX)
received=$work/received.jsonl
dispatcher_log=$work/dispatcher.log

receiver_pid='' receiver_port='' dispatcher_pid=''
cleanup() {
  for pid in $dispatcher_pid $receiver_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

fail() {
  echo "alerts dispatcher: FAIL: $*" >&2
  echo "--- dispatcher log (last 30 lines; all in $work)" >&2
  tail -n 30 "$dispatcher_log" >&2 2>/dev/null || true
  echo "--- the newest alerts, and the database's sessions" >&2
  value "SELECT string_agg(format('%s attempts=%s claimed_by=%s claimed_for=%s delivered=%s', alert_id, attempts, claimed_by,
                                  claimed_until - clock_timestamp(), delivered_at IS NOT NULL), E'\n' ORDER BY alert_id)
           FROM (SELECT * FROM quota.alerts ORDER BY alert_id DESC LIMIT 8) AS a" >&2 2>/dev/null || true
  value "SELECT string_agg(format('%s %s %s %s', application_name, state, wait_event, left(query, 80)), E'\n')
           FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" >&2 2>/dev/null || true
  exit 1
}
q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h "$socket_dir" -p "$port" -U postgres "$@"; }
value() { q -d "$db" -tA -c "$1"; }

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s; fails naming WHAT at the end.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${seconds}s waiting for: $what"
    sleep 0.1
  done
}

setup_database() {
  q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  q -d "$db" -c "CREATE EXTENSION pg_quota" \
    -c "SELECT quota.create_plan('alerting', '{\"calls\": {\"limit\": 1, \"per\": \"day\", \"alerts\": [\"100%\"]}}', is_default => true)" >/dev/null
}

# make_alerts N: N new alerts, committed together (one NOTIFY): each consume by a new subject
# reaches 100% of its limit of 1 and writes one alert in its transaction.
make_alerts() {
  value "SELECT quota.consume(gen_random_uuid(), 'calls') FROM generate_series(1, $1)" >/dev/null
}

last_alert_id() { value "SELECT coalesce(max(alert_id), 0) FROM quota.alerts"; }
ids_after() { value "SELECT string_agg(alert_id::text, ',' ORDER BY alert_id) FROM quota.alerts WHERE alert_id > $1"; }
# count_where AFTER CONDITION: alerts newer than AFTER that satisfy CONDITION
count_where() { value "SELECT count(*) FROM quota.alerts WHERE alert_id > $1 AND ($2)"; }
all_where() { [ "$(count_where "$1" "$2")" = "$(count_where "$1" true)" ]; }

start_receiver() {
  rm -f "$work/port"
  python3 "$here/receiver.py" serve "$received" "$work/port" ${receiver_port:+"$receiver_port"} &
  receiver_pid=$!
  wait_until 10 "the receiver to listen" test -s "$work/port"
  receiver_port=$(cat "$work/port")
}
stop_receiver() {
  kill "$receiver_pid"
  wait "$receiver_pid" 2>/dev/null || true
  receiver_pid=''
}
receiver_mode() { python3 "$here/receiver.py" control "$receiver_port" "$@"; }
received_count() { python3 "$here/verify.py" count "$received" "$1"; }
# verify IDS SCENARIO [--duplicates]: the receiver's log for IDS (verify.py check)
verify() { python3 "$here/verify.py" check "$received" "$secret" "$1" "$timeout_seconds" "${@:3}" || fail "$2: the receiver's log"; }

start_dispatcher() {
  # Short timings so that retries and claim expiry happen within seconds; max_attempts high
  # so that no alert of a slow scenario reaches the dead letter.
  PG_QUOTA_DATABASE_URL="host=$socket_dir port=$port user=postgres dbname=$db" \
  PG_QUOTA_WEBHOOK_URLS="http://127.0.0.1:$receiver_port/hooks/alerts?token=not-logged" \
  PG_QUOTA_WEBHOOK_SECRET=$secret \
  PG_QUOTA_CONSUMER=alerts-test \
  PG_QUOTA_VISIBILITY_SECONDS=3 \
  PG_QUOTA_TIMEOUT_SECONDS=$timeout_seconds \
  PG_QUOTA_POLL_SECONDS=${poll_seconds:-1} \
  PG_QUOTA_BACKOFF_BASE_MS=100 \
  PG_QUOTA_BACKOFF_MAX_SECONDS=1 \
  PG_QUOTA_MAX_ATTEMPTS=100 \
  NO_PROXY='*' no_proxy='*' \
    "$dispatcher" 2>>"$dispatcher_log" &
  dispatcher_pid=$!
}
dispatcher_running() { kill -0 "$dispatcher_pid" 2>/dev/null; }
# The dispatcher has found nothing to claim and waits: its last statement was the sweep.
dispatcher_idle() {
  [ "$(value "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db' AND application_name = 'pg-quota-dispatcher'
                AND state = 'idle' AND query LIKE '%emit_due_recoveries%'")" = 1 ]
}
dispatcher_gone() { ! dispatcher_running; }

cargo build --release -q -p pg-quota-dispatcher
dispatcher=${CARGO_TARGET_DIR:-target}/release/pg-quota-dispatcher
[ -x "$dispatcher" ] || fail "no binary at $dispatcher"

# A configuration without a secret: exit 2, naming the variable.
status=0
env -u PG_QUOTA_WEBHOOK_SECRET PG_QUOTA_DATABASE_URL="host=$socket_dir" PG_QUOTA_WEBHOOK_URLS=http://127.0.0.1:1/ \
  "$dispatcher" 2>"$work/config-error.txt" || status=$?
[ "$status" = 2 ] || fail "a missing PG_QUOTA_WEBHOOK_SECRET exited $status, not 2"
grep -q '^pg-quota-dispatcher: PG_QUOTA_WEBHOOK_SECRET: is required$' "$work/config-error.txt" \
  || fail "the configuration error does not name the variable: $(cat "$work/config-error.txt")"

setup_database
start_receiver
# Scenario 1 polls only once a minute: alerts delivered within seconds were announced by the
# NOTIFY of the transaction that wrote them (and after a reconnection, LISTEN was renewed).
poll_seconds=60 start_dispatcher

echo "1. normal delivery woken by NOTIFY, and after the dispatcher's database connection was terminated"
wait_until 20 "the dispatcher to wait for notifications" dispatcher_idle
before=$(last_alert_id)
make_alerts 10
wait_until 20 "10 alerts acknowledged" all_where "$before" "delivered_at IS NOT NULL"
[ "$(count_where "$before" "attempts = 1")" = 10 ] || fail "1: an alert needed more than one attempt"
verify "$(ids_after "$before")" 1
terminated=$(value "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                    WHERE datname = '$db' AND application_name = 'pg-quota-dispatcher'")
[ "$terminated" = 1 ] || fail "1: expected the dispatcher's one session, found $terminated"
wait_until 20 "the dispatcher to reconnect and wait" dispatcher_idle
middle=$(last_alert_id)
make_alerts 3
wait_until 20 "3 alerts acknowledged after the reconnection" all_where "$middle" "delivered_at IS NOT NULL"
dispatcher_running || fail "1: the dispatcher exited when its connection was terminated"
grep -q 'reconnecting in' "$dispatcher_log" || fail "1: no reconnection logged"
verify "$(ids_after "$middle")" 1b

# The other scenarios wait for retries, which no notification announces: poll every second.
kill -TERM "$dispatcher_pid"
wait "$dispatcher_pid" || fail "1: the dispatcher did not stop cleanly on SIGTERM"
start_dispatcher

echo "2. receiver down, then up"
stop_receiver
before=$(last_alert_id)
make_alerts 5
wait_until 15 "5 alerts tried while the receiver is down" \
  all_where "$before" "attempts > 0 AND last_error LIKE '%connect error%'"
[ "$(count_where "$before" "delivered_at IS NOT NULL")" = 0 ] || fail "2: an alert was acknowledged while the receiver was down"
[ "$(received_count "$(ids_after "$before")")" = 0 ] || fail "2: a request arrived while the receiver was down"
start_receiver
wait_until 20 "5 alerts acknowledged once the receiver is up" all_where "$before" "delivered_at IS NOT NULL"
verify "$(ids_after "$before")" 2

echo "3. receiver answering 500 to the first 3 requests"
receiver_mode fail500 3
before=$(last_alert_id)
make_alerts 2
wait_until 20 "2 alerts acknowledged after 500s" all_where "$before" "delivered_at IS NOT NULL"
all_where "$before" "attempts > 1 AND last_error LIKE '%HTTP 500%'" \
  || fail "3: expected every alert retried after an HTTP 500: $(value "SELECT string_agg(format('%s attempts=%s last_error=%s', alert_id, attempts, last_error), '; ') FROM quota.alerts WHERE alert_id > $before")"
verify "$(ids_after "$before")" 3

echo "4. slow receiver (2 s, the dispatcher's timeout is ${timeout_seconds} s), then fast"
receiver_mode slow 2
before=$(last_alert_id)
make_alerts 2
wait_until 15 "2 alerts timed out" all_where "$before" "attempts > 0 AND last_error LIKE '%timeout%'"
[ "$(count_where "$before" "delivered_at IS NOT NULL")" = 0 ] || fail "4: an alert was acknowledged although every request timed out"
receiver_mode ok
wait_until 20 "2 alerts acknowledged once the receiver is fast" all_where "$before" "delivered_at IS NOT NULL"
verify "$(ids_after "$before")" 4

echo "5. dispatcher killed (SIGKILL) with an alert in flight, restarted; then stopped (SIGTERM) with one in flight"
receiver_mode slow 0.8
before=$(last_alert_id)
make_alerts 6
ids=$(ids_after "$before")
wait_until 10 "a request in flight" test "$(received_count "$ids")" -ge 1
{ kill -KILL "$dispatcher_pid" && wait "$dispatcher_pid"; } 2>/dev/null || true  # quiet: bash reports "Killed"
in_flight=$(python3 "$here/verify.py" last "$received" "$ids")
[ "$(count_where "$before" "alert_id = $in_flight AND delivered_at IS NULL")" = 1 ] \
  || fail "5: alert $in_flight was acknowledged although the dispatcher died while its request was in flight"
receiver_mode ok
start_dispatcher
# Each should come within seconds (the killed claim's visibility is 3 s); once in four CI runs
# on PostgreSQL 18 the in-flight alert was claimed again only after about a minute (cause not
# found: fail() prints the outbox and the sessions if it happens again), which delays a
# delivery but loses none: wait for it.
wait_until 90 "6 alerts acknowledged after the restart" all_where "$before" "delivered_at IS NOT NULL"
verify "$ids" 5 --duplicates
# SIGTERM: the alert in flight is finished (acknowledged), nothing more is claimed, exit 0.
receiver_mode slow 0.8
before=$(last_alert_id)
make_alerts 4
ids=$(ids_after "$before")
wait_until 10 "a request in flight" test "$(received_count "$ids")" -ge 1
kill -TERM "$dispatcher_pid"
wait_until 10 "the dispatcher to stop on SIGTERM" dispatcher_gone
status=0
wait "$dispatcher_pid" || status=$?
dispatcher_pid=''
[ "$status" = 0 ] || fail "5: SIGTERM: exit status $status, not 0"
in_flight=$(python3 "$here/verify.py" last "$received" "$ids")
[ "$(count_where "$before" "alert_id = $in_flight AND delivered_at IS NOT NULL")" = 1 ] \
  || fail "5: SIGTERM: alert $in_flight was in flight but not finished"
[ "$(received_count "$ids")" = 1 ] || fail "5: SIGTERM: another alert was sent after the signal"

q -d postgres -c "DROP DATABASE $db WITH (FORCE)"
rm -rf "$work"
echo "alerts dispatcher: 5 scenarios passed"
