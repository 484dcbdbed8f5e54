//! The edge between the network and raft-rs: every raft message a peer sends is checked here
//! before `RawNode::step` sees it.
//!
//! Owns: the rules that keep a well-formed but forged (or corrupted) message from aborting the
//! shard or leading a region astray. raft-rs trusts its peers: it `fatal!`s (panics) on an
//! append whose entries conflict with committed ones, a commit index past its log, a
//! configuration it cannot restore; it follows a success response's index blindly (and then
//! asks storage past its log); and it takes a message of term 0 as a local one, skipping every
//! term check. So a message is refused here when it is of a kind this cluster never sends over
//! the network, when its fields contradict each other, or when it claims more than this
//! replica's log allows. Must not: change any state (it only reads the replica).
//!
//! What is let through is what raft-rs handles safely: stale terms, rejections, probes.

use raft::eraftpb::{ConfState, Message, MessageType};
use raft::{Raft, StateRole};

use crate::raft_core::RaftMessage;
use crate::region::Region;
use crate::storage::{conf_state, PeerStorage};

/// Why a message was refused (logged and counted by the shard; never sent back).
pub type Refusal = &'static str;

/// How far ahead of this replica's term a message's term may be. Terms grow by one per
/// election round (pre-vote keeps a cut-off node from inflating them), so a jump of 2^32 is
/// corruption or forgery, never history; it would also bring raft-rs's `term + 1` to overflow.
pub const TERM_JUMP_MAX: u64 = 1 << 32;

/// Checks `msg` (addressed to this replica of `region`, from one of its peers) against the
/// replica's `raft` state.
pub fn check(raft: &Raft<PeerStorage>, region: &Region, msg: &RaftMessage) -> Result<(), Refusal> {
    let m = &msg.msg;
    if m.from != msg.from.id || m.to != msg.to.id {
        return Err("the raft message's peers differ from its envelope's");
    }
    if m.term == 0 {
        return Err("term 0 (raft-rs would take it for a local message)");
    }
    if m.term > raft.term.saturating_add(TERM_JUMP_MAX) {
        return Err("a term that no election could have reached");
    }
    if !m.entries.is_empty() && m.get_msg_type() != MessageType::MsgAppend {
        return Err("entries on a message that carries none");
    }
    match m.get_msg_type() {
        MessageType::MsgAppend => check_append(m),
        MessageType::MsgAppendResponse => check_append_response(raft, m),
        MessageType::MsgHeartbeat if m.commit > raft.raft_log.last_index() => Err("a heartbeat commits past the log"),
        MessageType::MsgSnapshot => check_snapshot(region, m),
        MessageType::MsgTimeoutNow if m.from != raft.leader_id => Err("a leader transfer not from the leader"),
        MessageType::MsgHeartbeat
        | MessageType::MsgHeartbeatResponse
        | MessageType::MsgRequestVote
        | MessageType::MsgRequestVoteResponse
        | MessageType::MsgRequestPreVote
        | MessageType::MsgRequestPreVoteResponse
        | MessageType::MsgTimeoutNow => Ok(()),
        // Proposals are never forwarded (a follower answers NotLeader), reads go to the leader
        // itself, transfers are started on the leader: none of these crosses the network, and
        // the local kinds (hup, beat, ...) never do.
        _ => Err("a message kind this cluster never sends between nodes"),
    }
}

/// Entries must continue the log right after `m.index`, in terms that never go down and never
/// pass the message's: raft-rs finds "conflicts" with committed entries otherwise, and aborts.
fn check_append(m: &Message) -> Result<(), Refusal> {
    if m.log_term > m.term {
        return Err("an append anchored at a term above its own");
    }
    // Every entry has a term of at least 1; raft-rs answers term 0 for any index past its log,
    // so an anchor (index > 0, term 0) there would "match" and commit past the log.
    if m.index > 0 && m.log_term == 0 {
        return Err("an append anchored at term 0");
    }
    let mut expect = (
        m.index.checked_add(1).ok_or("an append past the largest index")?,
        m.log_term,
    );
    for e in m.entries.iter() {
        if e.index != expect.0 {
            return Err("append entries that do not continue the log");
        }
        if e.term == 0 || e.term < expect.1 || e.term > m.term {
            return Err("append entries with terms out of order");
        }
        expect = (e.index + 1, e.term);
    }
    // raft-rs answers an append below its commit index without looking at the entries; above
    // it, contiguous entries can only conflict with uncommitted ones, which it may replace.
    Ok(())
}

/// A follower can only have matched what this leader's log holds, and snapshots are never
/// requested in this cluster (raft-rs would ask storage for one at the forged index forever).
fn check_append_response(raft: &Raft<PeerStorage>, m: &Message) -> Result<(), Refusal> {
    if m.request_snapshot != 0 {
        return Err("a snapshot request (this cluster never sends one)");
    }
    if raft.state == StateRole::Leader && !m.reject && m.index > raft.raft_log.last_index() {
        return Err("an append acknowledged past the leader's log");
    }
    Ok(())
}

/// A snapshot must describe this region's membership exactly (raft-rs aborts on a
/// configuration it cannot restore) and be of a term its sender had reached.
fn check_snapshot(region: &Region, m: &Message) -> Result<(), Refusal> {
    let meta = m.get_snapshot().get_metadata();
    if meta.index == 0 || meta.term == 0 || meta.term > m.term {
        return Err("a snapshot at an impossible index or term");
    }
    if !same_membership(meta.get_conf_state(), &conf_state(region)) {
        return Err("a snapshot whose membership is not the region's");
    }
    Ok(())
}

/// Whether two configurations have the same members in each role (in any order).
fn same_membership(a: &ConfState, b: &ConfState) -> bool {
    let sorted = |ids: &[u64]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids
    };
    let parts = |c: &ConfState| [&c.voters, &c.voters_outgoing, &c.learners, &c.learners_next].map(|ids| sorted(ids));
    parts(a) == parts(b) && a.auto_leave == b.auto_leave
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{Entry, Snapshot};

    use super::*;
    use crate::region::{Epoch, PeerMeta};

    fn region() -> Region {
        Region {
            id: 1,
            start: Vec::new(),
            end: Vec::new(),
            epoch: Epoch::default(),
            peers: (1..=3).map(|n| PeerMeta::voter(n, n, 0)).collect(),
        }
    }

    /// Replica 1 of `region()` with entries 1..=`last` of term 2, committed up to `committed`.
    fn raft(last: u64, committed: u64) -> Raft<PeerStorage> {
        let entries = (1..=last)
            .map(|index| Entry {
                index,
                term: 2,
                ..Default::default()
            })
            .collect();
        let hs = raft::eraftpb::HardState {
            term: 2,
            commit: committed,
            ..Default::default()
        };
        let log = crate::storage::RestoredLog {
            hard_state: hs,
            truncated: (0, 0),
            older_terms: Vec::new(),
            last_unloaded: 0,
            entries,
        };
        let storage = PeerStorage::restore(conf_state(&region()), log);
        let cfg = raft::Config {
            id: 1,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        Raft::new(&cfg, storage, &logger).unwrap()
    }

    fn msg(kind: MessageType, f: impl FnOnce(&mut Message)) -> RaftMessage {
        let mut m = Message {
            from: 2,
            to: 1,
            term: 3,
            ..Default::default()
        };
        m.set_msg_type(kind);
        f(&mut m);
        let peer = |id| PeerMeta::voter(id, id, 0);
        RaftMessage {
            region_id: 1,
            from: peer(2),
            to: peer(1),
            msg: m,
            epoch: Epoch::default(),
            check: crate::MemberCheck::None,
        }
    }

    fn entries(from: u64, terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry {
                index: from + i as u64,
                term,
                ..Default::default()
            })
            .collect()
    }

    fn check_one(r: &Raft<PeerStorage>, m: RaftMessage) -> Result<(), Refusal> {
        check(r, &region(), &m)
    }

    // Proves each refusal rule refuses what it guards and lets the honest case through: one
    // check per rule, the honest message first.
    #[test]
    fn each_rule_refuses_its_forgery() {
        let r = raft(10, 8);
        let append = |index, log_term, ents: Vec<Entry>| {
            msg(MessageType::MsgAppend, |m| {
                m.index = index;
                m.log_term = log_term;
                m.entries = ents.into();
            })
        };
        assert_eq!(check_one(&r, append(10, 2, entries(11, &[3, 3]))), Ok(()));
        assert!(
            check_one(&r, append(10, 2, entries(5, &[3]))).is_err(),
            "not continuing the log"
        );
        assert!(
            check_one(&r, append(10, 2, entries(11, &[3, 2]))).is_err(),
            "terms going down"
        );
        assert!(
            check_one(&r, append(10, 2, entries(11, &[4]))).is_err(),
            "term past the message's"
        );
        assert!(
            check_one(&r, append(10, 4, Vec::new())).is_err(),
            "anchor term past the message's"
        );
        assert!(check_one(&r, append(u64::MAX, 2, Vec::new())).is_err());
        assert!(
            check_one(&r, append(20, 0, Vec::new())).is_err(),
            "anchored at term 0 past the log"
        );
        assert!(
            check_one(&r, append(0, 0, entries(1, &[0]))).is_err(),
            "an entry of term 0"
        );
        assert_eq!(
            check_one(&r, append(0, 0, entries(1, &[2]))),
            Ok(()),
            "from the log's start"
        );
        let zero = msg(MessageType::MsgHeartbeat, |m| m.term = 0);
        assert!(check_one(&r, zero).is_err(), "term 0");
        let far = msg(MessageType::MsgHeartbeat, |m| m.term = 2 + TERM_JUMP_MAX + 1);
        assert!(check_one(&r, far).is_err(), "a term past any election");
        let near = msg(MessageType::MsgHeartbeat, |m| m.term = 2 + TERM_JUMP_MAX);
        assert_eq!(check_one(&r, near), Ok(()));
        let beat = |commit| msg(MessageType::MsgHeartbeat, |m| m.commit = commit);
        assert_eq!(check_one(&r, beat(10)), Ok(()));
        assert!(check_one(&r, beat(11)).is_err());
        let mut envelope = beat(1);
        envelope.msg.from = 3;
        assert!(
            check_one(&r, envelope).is_err(),
            "inner sender differs from the envelope's"
        );
        for kind in [
            MessageType::MsgPropose,
            MessageType::MsgReadIndex,
            MessageType::MsgReadIndexResp,
            MessageType::MsgTransferLeader,
            MessageType::MsgHup,
        ] {
            assert!(check_one(&r, msg(kind, |_| ())).is_err(), "{kind:?}");
        }
        let stray = msg(MessageType::MsgHeartbeat, |m| m.entries = entries(1, &[1]).into());
        assert!(check_one(&r, stray).is_err(), "entries on a heartbeat");
        let timeout = msg(MessageType::MsgTimeoutNow, |_| ());
        assert!(check_one(&r, timeout).is_err(), "not from the leader");
    }

    // Proves a leader refuses an acknowledgement past its log and any snapshot request.
    #[test]
    fn a_leader_refuses_impossible_acknowledgements() {
        let mut r = raft(10, 8);
        r.become_candidate();
        r.become_leader();
        let last = r.raft_log.last_index();
        let ack = |index, reject, request_snapshot| {
            msg(MessageType::MsgAppendResponse, |m| {
                m.index = index;
                m.reject = reject;
                m.request_snapshot = request_snapshot;
            })
        };
        assert_eq!(check_one(&r, ack(last, false, 0)), Ok(()));
        assert!(check_one(&r, ack(last + 1, false, 0)).is_err());
        assert_eq!(
            check_one(&r, ack(last + 5, true, 0)),
            Ok(()),
            "rejections are raft-rs's"
        );
        assert!(check_one(&r, ack(last, true, 3)).is_err());
    }

    // Proves a snapshot must carry the region's exact membership and a possible index/term.
    #[test]
    fn snapshots_must_match_the_region() {
        let r = raft(10, 8);
        let snap = |index, term, voters: Vec<u64>, learners: Vec<u64>| {
            msg(MessageType::MsgSnapshot, |m| {
                let mut s = Snapshot::default();
                s.mut_metadata().index = index;
                s.mut_metadata().term = term;
                s.mut_metadata().mut_conf_state().voters = voters;
                s.mut_metadata().mut_conf_state().learners = learners;
                m.set_snapshot(s);
            })
        };
        assert_eq!(check_one(&r, snap(20, 3, vec![3, 1, 2], vec![])), Ok(()));
        assert!(check_one(&r, snap(20, 3, vec![1, 2], vec![])).is_err());
        assert!(check_one(&r, snap(20, 3, vec![1, 2, 3, 9], vec![])).is_err());
        assert!(check_one(&r, snap(20, 3, vec![1, 2, 3], vec![9])).is_err());
        assert!(check_one(&r, snap(20, 4, vec![1, 2, 3], vec![])).is_err());
        assert!(check_one(&r, snap(0, 3, vec![1, 2, 3], vec![])).is_err());
    }
}
