#!/usr/bin/env bash
# The long forms of the seeded simulator, the fuzzer and the crash test, against a
# running server (make reliability-long runs it on PostgreSQL 15 and on 18).
#   tests/reliability-long.sh SOCKET_DIR PORT
# LONG_SEEDS (default "1 2 3 4 5"): one simulation of 8 connections x 25,000 operations
# each; FUZZ_CALLS (default 100000); CRASHES (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=$1 PGPORT=$2 PGUSER=postgres
cargo build --release -q --manifest-path tests/harness/Cargo.toml
harness=tests/harness/target/release
for seed in ${LONG_SEEDS:-1 2 3 4 5}; do
  "$harness/simulate" --seed "$seed" --ops 25000 --connections 8
done
"$harness/fuzz" --calls "${FUZZ_CALLS:-100000}"
CRASHES=${CRASHES:-20} bash tests/crash.sh "$PGHOST-crash" $((PGPORT + 100))
