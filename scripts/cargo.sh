#!/usr/bin/env bash
# Runs cargo with RocksDB linked from the version-keyed cache (scripts/rocksdb-lib.sh), after
# making sure the build dependencies are installed. Every Makefile target goes through here,
# so RocksDB's C++ is compiled at most once per machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
lib_dir=$("$root/scripts/rocksdb-lib.sh")
export ROCKSDB_LIB_DIR="$lib_dir" ROCKSDB_STATIC=1
# glommio registers io_uring buffers and needs RLIMIT_MEMLOCK >= 512 KiB; raise it where allowed.
if [ "$(ulimit -l)" != unlimited ] && [ "$(ulimit -l)" -lt 65536 ]; then
  ulimit -l 65536 2>/dev/null || ulimit -l unlimited 2>/dev/null || true
fi
cd "$root"
exec cargo "$@"
