//! Membership changes as raft-rs sees them, and the checks before one is proposed.
//!
//! Owns: the translation of a region's `PeerChange`s into raft-rs's `ConfChangeV2` (a joint
//! configuration, left automatically, for every change of who votes; a simple change for a
//! learner added or removed), TiKV's `check_conf_change` rules, and the membership questions
//! peers ask each other beside raft (`MemberCheck`). Must not: do I/O or keep state.

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use raft::{ProgressState, Raft, Storage};

use crate::raft_core::TRANSFER_LAG_ENTRIES_MAX;
use crate::region::{PeerChange, Region};

/// A question or answer about membership that travels in place of a raft message (never
/// handed to raft-rs), with the sender's region epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemberCheck {
    /// A raft message.
    #[default]
    None,
    /// The sender has heard from no leader for long: is it still a replica?
    Probe,
    /// The addressee is no replica of the region as of the sender's epoch: it was removed
    /// (peer ids are never reused, so a later state without it is final).
    Removed,
}

impl MemberCheck {
    /// Its stable code on the wire.
    pub fn code(self) -> u8 {
        match self {
            MemberCheck::None => 0,
            MemberCheck::Probe => 1,
            MemberCheck::Removed => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<MemberCheck> {
        [MemberCheck::None, MemberCheck::Probe, MemberCheck::Removed]
            .into_iter()
            .find(|c| c.code() == code)
    }
}

/// The raft-rs change for `changes` (checked by `Region::change_peers`): promotions and
/// demotions enter a joint configuration that raft-rs leaves on its own once it is applied
/// (an empty change, `Region::leave_joint`); a learner added or removed is a simple change.
pub fn conf_change(changes: &[PeerChange]) -> ConfChangeV2 {
    let single = |change: &PeerChange| {
        let change_type = match change {
            PeerChange::AddLearner { .. } | PeerChange::Demote { .. } => ConfChangeType::AddLearnerNode,
            PeerChange::Promote { .. } => ConfChangeType::AddNode,
            PeerChange::Remove { .. } => ConfChangeType::RemoveNode,
        };
        ConfChangeSingle {
            change_type,
            node_id: change.peer_id(),
            ..Default::default()
        }
    };
    let joint = changes.iter().any(PeerChange::is_joint);
    ConfChangeV2 {
        transition: if joint {
            ConfChangeTransition::Implicit
        } else {
            ConfChangeTransition::Auto
        },
        changes: changes.iter().map(single).collect(),
        ..Default::default()
    }
}

/// Why the leader `raft` of `region` must not propose `changes` now, if it must not (TiKV's
/// `check_conf_change`): a change pending (or possibly pending: a new leader's log may hold
/// one), the region joint, the leader itself demoted or removed (transfer leadership first),
/// a learner promoted before it caught up, or a new quorum that has not replicated what is
/// committed (the region would stop taking writes until it had).
pub fn refusal<S: Storage>(raft: &Raft<S>, region: &Region, changes: &[PeerChange]) -> Option<String> {
    if raft.has_pending_conf() || region.is_joint() {
        return Some("a membership change is pending (or may be: the leader is new)".into());
    }
    // A change that is not one at all is the command's check to refuse (`InvalidArgument`).
    let Ok(next) = region.change_peers(changes) else {
        return None;
    };
    if changes
        .iter()
        .any(|c| c.peer_id() == raft.id && !matches!(c, PeerChange::Promote { .. }))
    {
        return Some("the leader cannot be demoted or removed: transfer its leadership first".into());
    }
    let committed = raft.raft_log.committed;
    let caught_up = |id: u64| {
        raft.prs().get(id).is_some_and(|p| {
            id == raft.id || (p.recent_active && p.state != ProgressState::Snapshot && p.matched >= committed)
        })
    };
    for change in changes {
        if let PeerChange::Promote { id } = change {
            let progress = raft.prs().get(*id);
            // Replicating: it acknowledged an append, so it holds the region's state (a replica
            // still waiting for its snapshot could not vote).
            let live = progress.is_some_and(|p| p.recent_active && p.state == ProgressState::Replicate);
            let lag = (raft.raft_log.last_index()).saturating_sub(progress.map_or(0, |p| p.matched));
            if !live || lag > TRANSFER_LAG_ENTRIES_MAX {
                return Some(format!(
                    "the learner is {lag} entries behind the leader, or not yet replicating: promote it once it caught up"
                ));
            }
        }
    }
    let voters: Vec<u64> = (next.peers.iter().filter(|p| p.role.votes_in_incoming()))
        .map(|p| p.id)
        .collect();
    let ready = voters.iter().filter(|id| caught_up(**id)).count();
    (ready <= voters.len() / 2).then(|| {
        format!(
            "only {ready} of the {} voters after the change have what is committed",
            voters.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves who votes changes through a joint configuration and a learner alone changes simply.
    #[test]
    fn joint_for_voters_simple_for_learners() {
        let cc = conf_change(&[PeerChange::Promote { id: 4 }, PeerChange::Demote { id: 2 }]);
        assert_eq!(cc.transition, ConfChangeTransition::Implicit);
        assert_eq!(cc.enter_joint(), Some(true), "left on its own");
        let kinds: Vec<_> = cc.changes.iter().map(|c| (c.change_type, c.node_id)).collect();
        assert_eq!(
            kinds,
            vec![(ConfChangeType::AddNode, 4), (ConfChangeType::AddLearnerNode, 2)]
        );
        let add = conf_change(&[PeerChange::AddLearner {
            id: 9,
            node: 3,
            shard: 1,
        }]);
        assert_eq!(add.enter_joint(), None);
        assert!(!add.leave_joint());
    }

    // Proves the wire codes of the checks round-trip and unknown codes are refused.
    #[test]
    fn member_check_codes() {
        for c in [MemberCheck::None, MemberCheck::Probe, MemberCheck::Removed] {
            assert_eq!(MemberCheck::from_code(c.code()), Some(c));
        }
        assert_eq!(MemberCheck::from_code(3), None);
    }
}
