#!/usr/bin/env bash
# Builds the Debian package of pg_quota for one PostgreSQL major (docs/install.md):
# postgresql-MAJOR-pg-quota_VERSION-1_ARCH.deb in OUT_DIR, from what `cargo pgrx package`
# lays out, moved to Debian's layout for that major (the PyPI PostgreSQL 18 we build against
# lives in /opt; Debian's and PGDG's postgresql-18 look in /usr/lib/postgresql/18 and
# /usr/share/postgresql/18), stripped, with its dependencies and md5sums.
#   scripts/package.sh PG_CONFIG OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
pg_config=$1 out_dir=$2

major=$("$pg_config" --version | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p')
[ -n "$major" ] || { echo "package: cannot read the major version from $pg_config" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
name=postgresql-$major-pg-quota
arch=$(dpkg --print-architecture)
built=target/package/pgrx-pg$major stage=target/package/$name

rm -rf "$built" "$stage"
cargo pgrx package --pg-config "$pg_config" --out-dir "$built" >/dev/null
lib_dir=/usr/lib/postgresql/$major/lib extension_dir=/usr/share/postgresql/$major/extension
install -d "$stage/DEBIAN" "$stage$lib_dir" "$stage$extension_dir"
install -m 0644 "$built$("$pg_config" --pkglibdir)/pg_quota.so" "$stage$lib_dir/"
install -m 0644 "$built$("$pg_config" --sharedir)"/extension/pg_quota* "$stage$extension_dir/"
strip --strip-unneeded "$stage$lib_dir/pg_quota.so"

# dpkg-shlibdeps names the libraries the module links against (libc6, libgcc-s1) with the
# lowest versions it needs; it reads a debian/control, so it runs in a scratch directory.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
printf 'Source: pg-quota\n\nPackage: %s\nArchitecture: any\n' "$name" >"$scratch/control"
mkdir "$scratch/debian" && mv "$scratch/control" "$scratch/debian/control"
so=$(realpath "$stage$lib_dir/pg_quota.so")
shlibs=$(cd "$scratch" && dpkg-shlibdeps -O "$so" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "package: dpkg-shlibdeps found no dependencies of $so" >&2; exit 1; }

cat >"$stage/DEBIAN/control" <<EOF
Package: $name
Version: $version-1
Architecture: $arch
Maintainer: pg_quota developers <pg-quota@localhost>
Depends: postgresql-$major, $shlibs
Section: database
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Description: SaaS usage quotas enforced inside the PostgreSQL transaction
 pg_quota is a PostgreSQL $major extension: plans, limits and credit wallets
 whose checks and counts happen atomically in the caller's transaction, with
 an exact ledger, rate rules, pools and usage alerts. CREATE EXTENSION pg_quota
 as a superuser after installing this package.
EOF
(cd "$stage" && find usr -type f -exec md5sum {} + | sort -k 2 >DEBIAN/md5sums)

mkdir -p "$out_dir"
deb=$out_dir/${name}_$version-1_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
