//! Region splits on a node: asked for by a client (`Op::Split`), or by the region's size (the
//! split checker: a region's leader measures it once enough was written to it since its last
//! check, off the shard's thread, and splits it into equal parts once it grew past `[split]`'s
//! limits). Either way the new ids come from the placement service and the split goes through
//! the region's log.
//!
//! Owns: asking for ids, when a region is measured, and the bytes written per region since.
//! Must not: decide where a region splits (`raftstore::split_check`) or apply the split.

use std::rc::Rc;
use std::time::Duration;

use corekv_netio::msg::WireError;
use corekv_netio::{Client, ClientConfig};
use corekv_raftstore::split_check::{self, SplitCheck};
use corekv_raftstore::{Command, Epoch, RequestId, SplitAt};

use super::Shard;

/// How long a node's own call to the placement service (ids for a split) may take.
const PLACEMENT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Shard {
    /// Splits `region_id` at `keys` (ascending) for request `id`: per new region one region id
    /// and one peer id per replica from the placement service, then the split proposed at the
    /// request's epoch (answered once applied, or refused by the core).
    pub(super) async fn split(self: Rc<Self>, id: RequestId, (region_id, epoch): (u64, Epoch), keys: Vec<Vec<u8>>) {
        let replicas = self
            .engines
            .core
            .borrow()
            .region(region_id)
            .map(|r| r.peers.len() as u64);
        let Some(replicas) = replicas else {
            return self.answer(id, Err(self.not_here(region_id)));
        };
        let per_region = replicas + 1;
        let count = (keys.len() as u64 * per_region) as u32;
        let first = match self.placement_client().alloc_ids(count).await {
            Ok(first) => first,
            Err(e) => {
                let reason = format!("no ids for the split from the placement service: {e}");
                return self.answer(id, Err(WireError::ServerBusy { reason }));
            }
        };
        let splits = (keys.into_iter().zip(0..))
            .map(|(key, n)| {
                let base = first + n * per_region;
                SplitAt {
                    key,
                    new_region_id: base,
                    new_peer_ids: (1..=replicas).map(|k| base + k).collect(),
                }
            })
            .collect();
        self.propose_admin(id, (region_id, epoch), Command::Split { splits });
    }

    /// Proposes an admin command the shard completed (its ids allocated) for request `id`.
    pub(super) fn propose_admin(&self, id: RequestId, (region_id, epoch): (u64, Epoch), cmd: Command) {
        self.metrics.proposals.inc();
        self.engines.core.borrow_mut().propose(id, region_id, epoch, cmd);
        self.kick();
    }

    /// A client of the cluster's placement service (ids for splits and new replicas), made on
    /// first use.
    pub(super) fn placement_client(&self) -> Client {
        let mut slot = self.placement_client.borrow_mut();
        let client = slot.get_or_insert_with(|| {
            let routing = &self.routing;
            let others = routing
                .placement_nodes()
                .into_iter()
                .filter_map(|n| routing.client_addr_of(n));
            let mut cfg = ClientConfig::new(std::iter::once(routing.client_addr()).chain(others).collect());
            cfg.tls = self.tls.clone();
            cfg.request_timeout = PLACEMENT_CALL_TIMEOUT;
            Client::with_view(cfg, Vec::new())
        });
        client.clone()
    }

    /// `bytes` were proposed to `region_id` on this shard (its leader): counted towards its
    /// next size check.
    pub(super) fn note_written(&self, region_id: u64, bytes: u64) {
        if bytes > 0 {
            *self.written_since_check.borrow_mut().entry(region_id).or_default() += bytes;
        }
    }

    /// `region_id` is measured at the next chance (while this shard leads it).
    pub(super) fn due_for_split_check(&self, region_id: u64) {
        self.note_written(region_id, self.cfg.split.check_after_written_bytes);
    }

    /// Measures one region that had `check_after_written_bytes` written to it since its last
    /// check (if no check runs now and this shard still leads it), and splits it into equal parts
    /// if it grew past the limits. The split is the node's own request: nobody waits for it.
    pub(super) fn check_split(self: &Rc<Self>) {
        let limits = &self.cfg.split;
        if self.split_checking.get() {
            return;
        }
        let region = {
            let core = self.engines.core.borrow();
            let due = (self.written_since_check.borrow().iter())
                .find(|(&id, &written)| written >= limits.check_after_written_bytes && core.is_leader(id))
                .map(|(&id, _)| id);
            due.and_then(|id| core.region(id).cloned())
        };
        let Some(region) = region else { return };
        self.written_since_check.borrow_mut().remove(&region.id);
        self.split_checking.set(true);
        let (shard, max) = (Rc::clone(self), (limits.region_max_bytes, limits.region_max_keys));
        glommio::spawn_local(async move {
            let target = region.clone();
            let checked = (shard.engines.kv)
                .offload(move |kv| split_check::check(kv, &target, max.0, max.1))
                .await;
            shard.split_checking.set(false);
            match checked {
                Ok(SplitCheck {
                    split_keys,
                    bytes,
                    keys,
                }) if !split_keys.is_empty() => {
                    let parts = split_keys.len() + 1;
                    tracing::info!(
                        region = region.id,
                        bytes,
                        keys,
                        parts,
                        "region grew past its limits: splitting it"
                    );
                    shard.metrics.size_splits.inc();
                    let id = shard.next_request_id();
                    // Every part is measured again once the split applied (`publish`).
                    shard.split(id, (region.id, region.epoch), split_keys).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(region = region.id, error = %e, "split check failed"),
            }
        })
        .detach();
    }
}
