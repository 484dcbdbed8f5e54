#!/usr/bin/env bash
# make bench-compare: corekv and etcd side by side on this machine, in one run.
#
# Starts a 3-member etcd cluster and a 3-node x 2-shard corekv playground on free loopback
# ports, each with its data under the results folder (so both write to the same disk as the
# fdatasync floor), runs `corekv-bench compare` against both, and stops everything it started,
# on success, failure or Ctrl-C. The measuring, the table and the plot are corekv-bench's.
#
# Env: BENCH_DIR (default /var/tmp/corekv-bench): results go to $BENCH_DIR/compare-<time>/.
#      COMPARE_ARGS: extra flags for `corekv-bench compare` (e.g. "--repeats 3").
#      KEEP_DATA=1 keeps both systems' data dirs (about 2 GB); by default only logs stay.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${BENCH_DIR:-/var/tmp/corekv-bench}
results="$bench_dir/compare-$(date +%Y%m%d-%H%M%S)"
# Seconds to wait for each system to come up.
up_wait_secs=90

say() { echo "bench-compare: $*" >&2; }
die() { say "$*"; exit 1; }

# --- etcd itself: Debian's etcd-server (3.4) if it is not on the machine -------------------
if ! command -v etcd >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing etcd-server with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
  else
    die "etcd not found (e.g. sudo apt-get install etcd-server)"
  fi
fi

# --- build --------------------------------------------------------------------------------
"$root/scripts/cargo.sh" build --release --locked -q -p corekv-perf -p corekv-tools
bin="${CARGO_TARGET_DIR:-$root/target}/release"

# --- free loopback ports ------------------------------------------------------------------
listening=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -un)
port_free() { ! grep -qx "$1" <<<"$listening"; }
# The first base >= $1 (in steps of $2) whose $3 consecutive ports are all free.
free_block() {
  local base=$1 step=$2 count=$3 p ok
  while [ "$base" -lt 60000 ]; do
    ok=1
    for ((p = base; p < base + count; p++)); do port_free "$p" || { ok=0; break; }; done
    [ $ok = 1 ] && { echo "$base"; return; }
    base=$((base + step))
  done
  die "no $count free consecutive loopback ports found"
}
# corekv: node k takes base + 100*(k-1): clients +0.., peers +40.., metrics +80: 300 ports.
corekv_base=$(free_block 22160 1000 300)
# etcd: member k has client port base + 2*(k-1), peer port + 1: 6 ports.
etcd_base=$(free_block 23790 100 6)

# --- stop what we started, whatever happens -----------------------------------------------
pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ ${#pids[@]} -gt 0 ]; then
    # Preallocated logs and WALs make the data dirs ~2 GB a run; the logs stay.
    [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$results"/etcd/m[123] "$results"/corekv/node-[0-9]*/
    say "stopped etcd and corekv (logs in $results)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$results/etcd"
say "results in $results"

# --- etcd: 3 members, production defaults (fsync on every commit), logs to files ----------
cluster=""
for k in 1 2 3; do
  cluster+="${cluster:+,}m$k=http://127.0.0.1:$((etcd_base + 2 * (k - 1) + 1))"
done
etcd_urls=""
for k in 1 2 3; do
  client=$((etcd_base + 2 * (k - 1)))
  peer=$((client + 1))
  etcd_urls+="${etcd_urls:+,}http://127.0.0.1:$client"
  etcd --name "m$k" --data-dir "$results/etcd/m$k" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-token corekv-bench --initial-cluster-state new \
    --logger zap --log-level warn --log-outputs "$results/etcd/m$k.log" \
    >"$results/etcd/m$k.out" 2>&1 &
  pids+=($!)
done

# --- corekv: the playground, up until SIGTERM ---------------------------------------------
"$bin/corekv-playground" --nodes 3 --shards 2 --data-dir "$results/corekv" --base-port "$corekv_base" \
  >"$results/playground.out" 2>&1 &
playground=$!
pids+=($playground)

# An etcd member that exited: say why, a failed bind first.
check_etcd() {
  local k log
  for k in 1 2 3; do
    if ! kill -0 "${pids[$((k - 1))]}" 2>/dev/null; then
      log="$results/etcd/m$k.log"
      if grep -qs "address already in use" "$log" "$results/etcd/m$k.out"; then
        die "etcd member m$k could not bind its ports $((etcd_base + 2 * (k - 1))) / $((etcd_base + 2 * (k - 1) + 1)) on 127.0.0.1 (address in use); see $log"
      fi
      die "etcd member m$k exited; see $log and $results/etcd/m$k.out"
    fi
  done
}

deadline=$((SECONDS + up_wait_secs))
until grep -q '^endpoints: ' "$results/playground.out"; do
  if ! kill -0 "$playground" 2>/dev/null; then
    tail -n 5 "$results/playground.out" >&2
    grep -hs -m1 -i "in use" "$results"/corekv/node-*.log >&2 || true
    die "corekv-playground exited before its cluster was up (a bind failure names its port above; ports $corekv_base-$((corekv_base + 299)); see $results/playground.out and $results/corekv/node-*.log)"
  fi
  check_etcd
  [ $SECONDS -lt $deadline ] || die "corekv did not come up within ${up_wait_secs}s; see $results/playground.out"
  sleep 0.5
done
corekv_endpoints=$(sed -n 's/^endpoints: //p' "$results/playground.out")
# Listening is enough here: corekv-bench retries a first put until the cluster has a leader.
for k in 1 2 3; do
  until [ -n "$(ss -Htln "sport = :$((etcd_base + 2 * (k - 1)))")" ]; do
    check_etcd
    [ $SECONDS -lt $deadline ] || die "etcd member m$k did not listen within ${up_wait_secs}s; see $results/etcd/m$k.log"
    sleep 0.5
  done
done
say "corekv at $corekv_endpoints, etcd at $etcd_urls"

# --- measure: the same workloads on both, alternating -------------------------------------
# Every run phase lasts 6 s on either system (the operation count is only a cap), so both are
# measured over the same wall time; 6 run workloads x 2 systems x 3 repeats: about 4 minutes.
# In the background and waited for: bash runs a trap only once its foreground command ends,
# but interrupts `wait` at once; the cleanup then stops the bench too.
# shellcheck disable=SC2086 # COMPARE_ARGS is a list of flags
"$bin/corekv-bench" compare --corekv "$corekv_endpoints" --etcd "$etcd_urls" \
  --floor-dir "$results" --results "$results" \
  --record-count 10000 --operation-count 10000000 --duration-secs 6 --repeats 3 ${COMPARE_ARGS:-} &
pids+=($!)
wait $!
