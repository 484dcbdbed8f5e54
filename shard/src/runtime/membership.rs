//! Membership changes on a node: a client's step (`Op::ChangePeer`) becomes the region's
//! `Command::ChangePeers`; a new replica first gets its peer id from the placement service.
//!
//! Owns: turning a wire step into a raftstore change, and the id of a new replica. Must not:
//! decide whether a change is safe (`raftstore::membership`) or apply it.

use std::rc::Rc;

use corekv_netio::msg::{ArchivedWirePeerChange, WireError};
use corekv_raftstore::{Command, Epoch, PeerChange, RequestId};

use super::Shard;

/// What a client's membership step asks of the region's leader.
pub(super) enum Step {
    /// A new learner on (store, shard): its peer id is allocated first.
    AddLearner { store: u64, shard: u32 },
    /// A change of existing replicas, proposed at once.
    Change(PeerChange),
}

impl Step {
    pub(super) fn from_wire(change: &ArchivedWirePeerChange) -> Step {
        match change {
            ArchivedWirePeerChange::AddLearner { store, shard } => Step::AddLearner {
                store: store.to_native(),
                shard: shard.to_native(),
            },
            ArchivedWirePeerChange::Promote { peer_id } => Step::Change(PeerChange::Promote {
                id: peer_id.to_native(),
            }),
            ArchivedWirePeerChange::Demote { peer_id } => Step::Change(PeerChange::Demote {
                id: peer_id.to_native(),
            }),
            ArchivedWirePeerChange::Remove { peer_id } => Step::Change(PeerChange::Remove {
                id: peer_id.to_native(),
            }),
        }
    }
}

impl Shard {
    /// Adds a learner of `region_id` on `store`'s shard `shard` for request `id`: a peer id
    /// from the placement service, then the change proposed at the request's epoch (answered
    /// once applied, or refused by the core).
    pub(super) async fn add_learner(
        self: Rc<Self>,
        id: RequestId,
        (region_id, epoch): (u64, Epoch),
        (store, shard): (u64, u32),
    ) {
        if !self.routing.is_member(store) {
            let reason = format!("store {store} is not a member of this cluster");
            return self.answer(id, Err(WireError::AdminRefused { region_id, reason }));
        }
        let peer_id = match self.placement_client().alloc_ids(1).await {
            Ok(first) => first,
            Err(e) => {
                let reason = format!("no id for the new replica from the placement service: {e}");
                return self.answer(id, Err(WireError::ServerBusy { reason }));
            }
        };
        let add = PeerChange::AddLearner {
            id: peer_id,
            node: store,
            shard,
        };
        self.propose_admin(id, (region_id, epoch), Command::ChangePeers { changes: vec![add] });
    }
}
