#!/usr/bin/env bash
# make test-package: the Debian packages of `make package` (scripts/package.sh) checked, and
# the PostgreSQL 15 one installed with dpkg into a PostgreSQL 15 that has no pg_quota at all
# (what `cargo pgrx install` put there is moved aside first), then the demo run against it
# (`make demo-run`: a fresh throwaway server). Afterwards the package is purged, its files
# must be gone, and what was moved aside is put back. Needs root (dpkg) or sudo.
#   tests/package.sh PACKAGE_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
package_dir=$1
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
fail() { echo "test-package: $*" >&2; exit 1; }

# What each package must hold and depend on, for both majors.
for major in 15 18; do
  deb=$package_dir/postgresql-$major-pg-quota_${version}-1_$arch.deb
  [ -f "$deb" ] || fail "$deb was not built"
  depends=$(dpkg-deb -f "$deb" Depends)
  [[ "$depends" == postgresql-$major,* ]] || fail "$deb depends on '$depends', not first on postgresql-$major"
  [[ "$depends" == *libc6* ]] || fail "$deb does not depend on libc6: '$depends'"
  contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for file in ./usr/lib/postgresql/$major/lib/pg_quota.so \
              ./usr/share/postgresql/$major/extension/pg_quota.control \
              ./usr/share/postgresql/$major/extension/pg_quota--$version.sql \
              ./usr/share/postgresql/$major/extension/pg_quota--0.11.0--$version.sql; do
    grep -qxF "$file" <<<"$contents" || fail "$deb lacks $file"
  done
  outside=$(grep -vE "^\./(usr/((lib|share)/(postgresql/($major/.*)?)?)?)?\$" <<<"$contents" || true)
  [ -z "$outside" ] || fail "$deb installs outside PostgreSQL $major's directories: $outside"
  grep -q "default_version = '$version'" < <(dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/share/postgresql/$major/extension/pg_quota.control") \
    || fail "$deb's control file does not default to $version"
done
echo "test-package: both packages hold the module, the control file, the install and upgrade scripts"

# A PostgreSQL 15 without pg_quota: what `cargo pgrx install` put there is moved aside.
lib_dir=$(pg_config --pkglibdir) extension_dir=$(pg_config --sharedir)/extension
dpkg-query -W -f='${Status}' postgresql-15-pg-quota 2>/dev/null | grep -q "install ok installed" \
  && fail "postgresql-15-pg-quota is installed already: remove it first (dpkg --purge postgresql-15-pg-quota)"
aside=$(mktemp -d)
restore() {
  as_root dpkg --purge postgresql-15-pg-quota >/dev/null 2>&1 || true
  as_root find "$aside" -maxdepth 1 -name 'pg_quota.so' -exec mv {} "$lib_dir/" \;
  as_root find "$aside" -maxdepth 1 -name 'pg_quota*' ! -name 'pg_quota.so' -exec mv {} "$extension_dir/" \;
  rm -rf "$aside"
}
trap restore EXIT
as_root find "$lib_dir" -maxdepth 1 -name 'pg_quota.so' -exec mv {} "$aside/" \;
as_root find "$extension_dir" -maxdepth 1 -name 'pg_quota*' -exec mv {} "$aside/" \;
[ -z "$(find "$lib_dir" "$extension_dir" -maxdepth 1 -name 'pg_quota*')" ] || fail "pg_quota files left in PostgreSQL 15"

as_root dpkg -i "$package_dir/postgresql-15-pg-quota_${version}-1_$arch.deb" >/dev/null
owner=$(dpkg -S "$lib_dir/pg_quota.so" | cut -d: -f1)
[ "$owner" = postgresql-15-pg-quota ] || fail "$lib_dir/pg_quota.so belongs to '$owner'"
echo "test-package: postgresql-15-pg-quota installed with dpkg; the demo runs against it"
make --no-print-directory demo-run

as_root dpkg --purge postgresql-15-pg-quota >/dev/null
left=$(find "$lib_dir" "$extension_dir" -maxdepth 1 -name 'pg_quota*')
[ -z "$left" ] || fail "files left after dpkg --purge: $left"
echo "test-package: the demo ran on the package; dpkg --purge removed every file it installed"
