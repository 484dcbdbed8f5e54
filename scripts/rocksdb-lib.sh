#!/usr/bin/env bash
# Builds RocksDB's C++ library once into a cache keyed by its version and our compiler flags,
# and prints the directory holding librocksdb.a. Every cargo build then links it through
# ROCKSDB_LIB_DIR + ROCKSDB_STATIC=1 instead of compiling RocksDB again per profile and target
# dir (11-19 minutes each on a 2-core machine). A cold machine builds it from the crate's own
# bundled source, so nothing is downloaded but crates.
#
# Usage: scripts/rocksdb-lib.sh            -> prints the lib dir (building it if missing)
# Env:   COREKV_CACHE_DIR (default ~/.cache/corekv)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(awk '/^name = "librocksdb-sys"/{getline; gsub(/[" ]/, "", $0); sub("version=", "", $0); print; exit}' Cargo.lock)
[ -n "$version" ] || { echo "rocksdb-lib: librocksdb-sys not found in Cargo.lock" >&2; exit 1; }
flags_hash=$( (grep -v '^#' .cargo/config.toml; grep -A1 '^rocksdb = ' Cargo.toml) | sha256sum | cut -c1-12)
cache=${COREKV_CACHE_DIR:-$HOME/.cache/corekv}
dir="$cache/rocksdb-$version-$flags_hash"
if [ -f "$dir/librocksdb.a" ]; then
  echo "$dir"
  exit 0
fi
echo "rocksdb-lib: building RocksDB $version once into $dir (about 15 minutes on 2 cores)..." >&2
mkdir -p "$cache"
build_target="$cache/rocksdb-build-target"
# Release profile: the one library serves dev, test, bench and release builds alike.
env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC CARGO_TARGET_DIR="$build_target" \
  cargo build --release --locked -p librocksdb-sys >&2
lib=$(ls -t "$build_target"/release/build/librocksdb-sys-*/out/librocksdb.a | head -n 1)
tmp="$dir.tmp.$$"
mkdir -p "$tmp"
cp "$lib" "$tmp/librocksdb.a"
# The release profile keeps line tables for our code; RocksDB's would make the archive 1.5 GB
# and every link slow. Symbols stay, so backtraces through RocksDB still name functions.
strip --strip-debug "$tmp/librocksdb.a"
mv "$tmp" "$dir"   # atomic: a half-copied library is never seen as the cache
rm -rf "$build_target"
echo "$dir"
