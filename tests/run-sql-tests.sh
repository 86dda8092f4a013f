#!/usr/bin/env bash
# SQL-level tests against a running server: pg_regress suites, then concurrency runs.
#   tests/run-sql-tests.sh SOCKET_DIR PORT
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=$1 PGPORT=$2 PGUSER=postgres
PKGLIB=$(pg_config --pkglibdir)
out=target/regress
rm -rf "$out" target/isolation && mkdir -p "$out" target/isolation

suites=$(cd tests/regress/sql && ls *.sql | sed 's/\.sql$//')
if ! "$PKGLIB/pgxs/src/test/regress/pg_regress" --inputdir=tests/regress --outputdir="$out" \
      --bindir="$(pg_config --bindir)" --host="$PGHOST" --port="$PGPORT" --user=postgres --dbname=pg_quota_regress $suites; then
  cat "$out/regression.diffs" >&2
  exit 1
fi
regress_count=$(echo $suites | wc -w)

# Isolation specs: every interleaving of the listed steps has a pinned outcome.
specs=$(cd tests/isolation/specs && ls *.spec | sed 's/\.spec$//')
if ! "$PKGLIB/pgxs/src/test/isolation/pg_isolation_regress" --inputdir=tests/isolation --outputdir=target/isolation \
      --bindir="$(pg_config --bindir)" --host="$PGHOST" --port="$PGPORT" --user=postgres --dbname=pg_quota_isolation $specs; then
  cat target/isolation/regression.diffs >&2
  exit 1
fi
regress_count=$((regress_count + $(echo $specs | wc -w)))

bash tests/concurrency/run.sh
bash tests/signup_lock.sh
bash tests/dump_restore.sh
bash tests/upgrade.sh
# The webhook dispatcher of usage alerts against a local receiver the test starts.
bash tests/alerts/dispatcher.sh "$PGHOST" "$PGPORT"
# Seeded randomized simulation against a reference model, bad-input fuzzing, and crashes
# under load (tests/harness; long forms: make reliability-long). A seed is random unless
# SEED is set; every run prints it.
cargo build --release -q --manifest-path tests/harness/Cargo.toml
harness=tests/harness/target/release
"$harness/simulate" ${SEED:+--seed "$SEED"} --ops "${SIM_OPS:-2000}" --connections 4
"$harness/fuzz" ${SEED:+--seed "$SEED"} --calls "${FUZZ_CALLS:-10000}"
bash tests/crash.sh "$PGHOST-crash" $((PGPORT + 100))
# The shared-memory tier on a primary that preloads pg_quota and its hot standby.
bash tests/preload.sh "$PGHOST-preload" $((PGPORT + 200))
# Keeps make bench working: a seconds-long run of the same harness (figures not kept).
bash bench/run.sh "$PGHOST" "$PGPORT" smoke >/dev/null
echo "bench smoke: ok"
echo "sql-tests: $((regress_count + $(ls tests/concurrency/*.pgbench | wc -l) + 10)) passed, 0 failed"
