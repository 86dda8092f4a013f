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
              ./usr/share/postgresql/$major/extension/pg_quota--0.1.0--0.2.0.sql; do
    grep -qxF "$file" <<<"$contents" || fail "$deb lacks $file"
  done
  # Every release's upgrade script, up to this version.
  [ "$(grep -c "^./usr/share/postgresql/$major/extension/pg_quota--.*--.*\.sql$" <<<"$contents")" = "$(ls sql/pg_quota--*--*.sql | wc -l)" ] \
    || fail "$deb does not hold every upgrade script of sql/"
  grep -q -- "--$version\.sql$" <<<"$contents" || fail "$deb has no upgrade script into $version"
  outside=$(grep -vE "^\./(usr/((lib|share)/(postgresql/($major/.*)?)?)?)?\$" <<<"$contents" || true)
  [ -z "$outside" ] || fail "$deb installs outside PostgreSQL $major's directories: $outside"
  grep -q "default_version = '$version'" < <(dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/share/postgresql/$major/extension/pg_quota.control") \
    || fail "$deb's control file does not default to $version"
done
echo "test-package: both packages hold the module, the control file, the install and upgrade scripts"

# A PostgreSQL 15 without pg_quota: what `cargo pgrx install` put in the package's two
# directories is moved aside, and put back at the end whatever happens.
lib_dir=/usr/lib/postgresql/15/lib extension_dir=/usr/share/postgresql/15/extension
dpkg-query -W -f='${Status}' postgresql-15-pg-quota 2>/dev/null | grep -q "install ok installed" \
  && fail "postgresql-15-pg-quota is installed already: remove it first (dpkg --purge postgresql-15-pg-quota)"
aside=$(mktemp -d)
mkdir "$aside/lib" "$aside/extension"
restore() {
  local status=0
  as_root dpkg --purge postgresql-15-pg-quota >/dev/null 2>&1 || true
  for part in lib extension; do
    local target=$lib_dir; [ "$part" = extension ] && target=$extension_dir
    if [ -n "$(ls -A "$aside/$part")" ]; then as_root mv -t "$target/" "$aside/$part"/* || status=1; fi
  done
  if [ "$status" = 0 ]; then rm -rf "$aside"; else echo "test-package: pg_quota's files are left in $aside" >&2; fi
}
trap restore EXIT
as_root find "$lib_dir" -maxdepth 1 -name 'pg_quota.so' -exec sh -c 'mv -t "$0" "$@"' "$aside/lib" {} +
as_root find "$extension_dir" -maxdepth 1 -name 'pg_quota*' -exec sh -c 'mv -t "$0" "$@"' "$aside/extension" {} +
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
