# corekv: the two commands a newcomer needs are `make run` and `make test`.
# Everything goes through scripts/cargo.sh: it installs missing build dependencies and links
# RocksDB from a cache built once per machine (see scripts/rocksdb-lib.sh).

CARGO := scripts/cargo.sh
DATA_DIR ?= /tmp/corekv-playground

.PHONY: run storage-demo test build lint chaos fuzz bench-storage bench-raft bench-compare bench-tls bench-tso bench-heartbeats deps

## run: build, start a local 3-node x 2-shard cluster (corekv-playground), run a demo workload, stay up until Ctrl-C
run:
	$(CARGO) build --release --locked -p corekv-tools
	$(CARGO) run --release --locked -q -p corekv-tools --bin corekv-playground -- --nodes 3 --shards 2 --data-dir $(DATA_DIR) --fresh --demo-keys 20000

## storage-demo: both storage engines of one pinned shard, no network (figures of the log engine and RocksDB)
storage-demo:
	$(CARGO) build --release --locked -p corekv-tools
	rm -rf $(DATA_DIR)-storage
	$(CARGO) run --release --locked -q -p corekv-tools --bin corekv-storage-demo -- --data-dir $(DATA_DIR)-storage

## test: the whole test suite (unit, integration, property tests)
test:
	$(CARGO) test --workspace --locked

## chaos: faults (kill -9, pauses, partitions, packet loss, full disk, splits, leader transfers, replica moves between shards) against a 3-node cluster in a private network namespace, then a linearizability check (root; a few minutes)
chaos:
	$(CARGO) build --release --locked -p corekv-tools
	$(CARGO) run --release --locked -q -p corekv-tools --bin corekv-chaos -- --duration-secs $(or $(CHAOS_SECS),180) $(if $(SEED),--seed $(SEED))

## fuzz: the fuzz targets, long (make test runs each briefly): arbitrary bytes as every wire message and frame, damaged raft logs reopened, forged raft messages against simulated clusters (FUZZ_CASES, HOSTILE_CASES)
fuzz:
	COREKV_FUZZ_CASES=$(or $(FUZZ_CASES),20000) PROPTEST_CASES=$(or $(FUZZ_CASES),20000) COREKV_HOSTILE_CASES=$(or $(HOSTILE_CASES),300) \
		$(CARGO) test --release --locked -p corekv-netio -p corekv-storage -p corekv-raftstore -- \
		never_panic survives_arbitrary damaged_logs forgeries garbage_is_an_error

## build: release binaries
build:
	$(CARGO) build --release --locked --workspace

## lint: formatting and clippy with warnings as errors
lint:
	cargo fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## bench-storage: the storage benchmarks of the README (floor, log engine, RocksDB-as-log, KV)
bench-storage:
	$(CARGO) run --release --locked -q -p corekv-perf --bin corekv-bench -- storage --dir $(or $(BENCH_DIR),/var/tmp/corekv-bench)

## bench-raft: the Multi-Raft core in the deterministic simulator (proposals/s, where time goes)
bench-raft:
	$(CARGO) run --release --locked -q -p corekv-perf --bin corekv-bench -- raft

## bench-compare: YCSB on corekv and on a 3-member etcd side by side, alternating, with the fdatasync floor (a few minutes)
bench-compare:
	scripts/bench-compare.sh

## bench-tso: the TSO through a local 3-node cluster: get_ts from 1, 64 and 512 callers (batched), beside a put, a get and the loopback floor (about a minute)
bench-tso:
	$(CARGO) build --release --locked -p corekv-tools -p corekv-perf
	$(CARGO) run --release --locked -q -p corekv-perf --bin corekv-bench -- tso

## bench-heartbeats: what the region directory costs the placement leader: CPU per 1000 regions per heartbeat interval (seconds)
bench-heartbeats:
	$(CARGO) build --release --locked -p corekv-perf
	$(CARGO) run --release --locked -q -p corekv-perf --bin corekv-bench -- heartbeats

## bench-tls: what mutual TLS costs: a plain and a TLS 3-node cluster side by side, put and get on each, alternating (a few minutes)
bench-tls:
	$(CARGO) build --release --locked -p corekv-tools -p corekv-perf
	$(CARGO) run --release --locked -q -p corekv-perf --bin corekv-bench -- tls --record-count 10000 --operation-count 10000000 --duration-secs 6

deps:
	scripts/deps.sh
