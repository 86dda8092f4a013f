#!/usr/bin/env bash
# Runs a test script against a new throwaway cluster, then stops it; exits with the
# script's status. The PostgreSQL first in PATH is used (see scripts/cluster.sh).
#   scripts/run-on-cluster.sh DIR PORT SCRIPT     runs: bash SCRIPT DIR PORT
set -uo pipefail
cd "$(dirname "$0")/.."
dir=$1 port=$2 script=$3
bash scripts/cluster.sh stop "$dir"
rm -rf "$dir"
bash scripts/cluster.sh start "$dir" "$port" || exit 1
bash "$script" "$dir" "$port"
status=$?
bash scripts/cluster.sh stop "$dir"
exit $status
