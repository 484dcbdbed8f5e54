//! corekv-tools: the binaries users run. Today `corekv-storage-demo` (both storage engines
//! of one shard, with real figures). With the running cluster: `corekv-server`, `corekv-ctl`,
//! `corekv-playground`, and later `corekv-chaos`.
//!
//! Must not: hold logic the node needs; binaries only parse flags and call the crates below.
