#!/usr/bin/env bash
# Installs what corekv needs to build and test and is not already on the machine.
# As root it uses apt; otherwise it names the packages to install and fails.
set -euo pipefail
need=()
command -v cargo >/dev/null || { echo "deps: cargo not found: install Rust (rustup) first" >&2; exit 1; }
# bindgen (librocksdb-sys) loads libclang at build time. Not libclang-cpp*.so (libclang-cpp14
# comes with LLVM and is not what bindgen loads).
if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
  && ! compgen -G '/usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*' >/dev/null; then
  need+=(libclang-dev)
fi
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
# The chaos harness (corekv-chaos, in `make test` too): network namespaces and nftables rules.
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
# etcd-client's build.rs (corekv-bench's etcd driver) compiles etcd's .proto files with protoc.
command -v protoc >/dev/null || need+=(protobuf-compiler)
# corekv-bench's PNG plots draw their text with this font (pure-Rust rasterizer, no font libs).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing ${need[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need[@]}" >&2
  else
    echo "deps: missing packages: ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
