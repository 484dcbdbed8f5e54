//! The decoders of what raft carries, fuzzed: arbitrary bytes as a raft entry's command and as
//! a received snapshot's data are typed errors, never panics (`make fuzz` runs them longer).

use corekv_raftstore::snapshot::SnapshotMeta;
use corekv_raftstore::Command;
use proptest::prelude::*;

/// Cases per target: 256 in `make test`; `COREKV_FUZZ_CASES` for `make fuzz`.
fn fuzz_cases() -> u32 {
    std::env::var("COREKV_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    // Arbitrary entry data decodes to a command (which then re-encodes to the same) or is a
    // typed error: what a corrupt or forged entry does to apply is stop its region, no more.
    #[test]
    fn entry_data_survives_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok((epoch, cmd)) = Command::decode(&data) {
            prop_assert_eq!(Command::decode(&cmd.encode(epoch)).unwrap(), (epoch, cmd));
        }
    }

    // Arbitrary snapshot data is checked at the edge without a panic, whatever index it claims.
    #[test]
    fn snapshot_data_survives_arbitrary_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        index in any::<u64>(),
    ) {
        let _ = SnapshotMeta::decode(7, index, &data);
    }
}
