//! Adding and removing a region's replicas from outside, step by step as PD does with joint
//! consensus: a voter is added as a learner, then promoted once it caught up; a voter is
//! removed by demoting it, then removing the learner (its leadership handed away first).
//!
//! Owns: the order of the steps and the waits between them (each step is one `Op::ChangePeer`
//! through the region's log; the nodes' views tell when it is done). Must not: decide whether
//! a step is safe (the region's leader refuses an unsafe one, with why, and it is tried again
//! until the deadline).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use corekv_netio::msg::{RegionInfo, WireError, WirePeer, WirePeerChange, WireRegion};
use corekv_netio::{Client, Error as ClientError};

/// Role codes of `WirePeer::role`.
const VOTER: u8 = 0;
const LEARNER: u8 = 1;

/// How long between two tries of a step the leader refused for now (a learner catching up, a
/// change still pending).
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Refreshes the nodes' views every 50 ms until `seen` finds in them what it looks for, or
/// `deadline` passes (`None`).
pub async fn await_views<T>(
    client: &Client,
    deadline: Instant,
    seen: impl Fn(&[RegionInfo]) -> Option<T>,
) -> Result<Option<T>> {
    loop {
        client.refresh().await?;
        if let Some(found) = seen(&client.regions()) {
            return Ok(Some(found));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// Region `id` as the nodes report it now.
fn region_now(client: &Client, id: u64) -> Result<RegionInfo> {
    (client.regions().into_iter().find(|r| r.region.id == id))
        .ok_or_else(|| anyhow!("no node knows region {id} (`corekv-ctl region list` lists the regions)"))
}

/// The replica of `region` on (store, shard), if any (`shard` None: the store's only one).
fn replica_on(region: &WireRegion, store: u64, shard: Option<u32>) -> Option<WirePeer> {
    let on = |p: &&WirePeer| p.node == store && shard.is_none_or(|s| p.shard == s);
    region.peers.iter().find(on).copied()
}

/// Waits until region `id` has (`Some`) the replica on (store, shard) with `role`, or (`None`)
/// none there; the region once it does.
async fn await_replica(
    client: &Client,
    (id, deadline): (u64, Instant),
    (store, shard): (u64, Option<u32>),
    role: Option<u8>,
) -> Result<WireRegion> {
    let done = |regions: &[RegionInfo]| {
        let region = &regions.iter().find(|r| r.region.id == id)?.region;
        let found = replica_on(region, store, shard).map(|p| p.role);
        (found == role).then(|| region.clone())
    };
    await_views(client, deadline, done).await?.ok_or_else(|| {
        anyhow!("region {id}: the step is applied on its leader, but the nodes do not show it yet: `corekv-ctl region show --id {id}` shows it shortly")
    })
}

/// Asks region `id`'s leader (`ask`), again every `RETRY_AFTER` while it refuses for now
/// (`AdminRefused`: a learner behind, a change pending, a target lagging) until `deadline`.
async fn until_taken<F, Fut>((id, deadline): (u64, Instant), mut ask: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = corekv_netio::Result<()>>,
{
    loop {
        match ask().await {
            Err(ClientError::Server(WireError::AdminRefused { reason, .. })) if Instant::now() < deadline => {
                tracing::debug!(region = id, reason, "refused for now; trying again");
                glommio::timer::sleep(RETRY_AFTER).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Proposes one membership step of region `id` (`until_taken`).
async fn step(client: &Client, at: (u64, Instant), change: WirePeerChange) -> Result<()> {
    until_taken(at, || client.change_peer(at.0, change)).await
}

/// Adds a replica of region `id` on `store`'s shard `shard`: a learner, then (unless
/// `learner`) promoted once it caught up, the joint membership left. Returns the region then.
pub async fn add_peer(
    client: &Client,
    id: u64,
    (store, shard): (u64, u32),
    learner: bool,
    wait: Duration,
) -> Result<WireRegion> {
    let deadline = Instant::now() + wait;
    client.refresh().await?;
    let region = region_now(client, id)?.region;
    let at = (store, Some(shard));
    let existing = replica_on(&region, store, Some(shard));
    if existing.is_some_and(|p| p.role != LEARNER) {
        bail!("region {id} has a voter on store {store} shard {shard} already");
    }
    let region = match existing {
        Some(_) => region,
        None => {
            step(client, (id, deadline), WirePeerChange::AddLearner { store, shard }).await?;
            await_replica(client, (id, deadline), at, Some(LEARNER)).await?
        }
    };
    if learner {
        return Ok(region);
    }
    let peer = replica_on(&region, store, Some(shard)).expect("awaited");
    step(client, (id, deadline), WirePeerChange::Promote { peer_id: peer.id }).await?;
    await_replica(client, (id, deadline), at, Some(VOTER)).await
}

/// Removes region `id`'s replica on `store` (on `shard`, if the store holds several): its
/// leadership handed to another voter first, a voter demoted (the joint membership left),
/// then the learner removed, which destroys the replica. Returns the region then.
pub async fn remove_peer(
    client: &Client,
    id: u64,
    (store, shard): (u64, Option<u32>),
    wait: Duration,
) -> Result<WireRegion> {
    let deadline = Instant::now() + wait;
    client.refresh().await?;
    let info = region_now(client, id)?;
    let Some(peer) = replica_on(&info.region, store, shard) else {
        bail!("region {id} has no replica on store {store}");
    };
    if info.leader.is_some_and(|l| l.id == peer.id) {
        hand_away(client, (id, deadline), &info.region, peer).await?;
    }
    let at = (store, Some(peer.shard));
    if peer.role != LEARNER {
        step(client, (id, deadline), WirePeerChange::Demote { peer_id: peer.id }).await?;
        await_replica(client, (id, deadline), at, Some(LEARNER)).await?;
    }
    step(client, (id, deadline), WirePeerChange::Remove { peer_id: peer.id }).await?;
    await_replica(client, (id, deadline), at, None).await
}

/// Hands region `id`'s leadership from `leader` to another voter, and waits until it moved.
async fn hand_away(
    client: &Client,
    (id, deadline): (u64, Instant),
    region: &WireRegion,
    leader: WirePeer,
) -> Result<()> {
    let Some(to) = (region.peers.iter()).find(|p| p.id != leader.id && p.role == VOTER) else {
        bail!("region {id}: its leader is its only voter; add another voter first");
    };
    loop {
        until_taken((id, deadline), || client.transfer_leader(id, to.node)).await?;
        let moved = |regions: &[RegionInfo]| {
            let info = regions.iter().find(|r| r.region.id == id)?;
            info.leader.filter(|l| l.id != leader.id).map(|_| ())
        };
        let soon = (Instant::now() + Duration::from_secs(2)).min(deadline);
        if await_views(client, soon, moved).await?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "region {id}: its leadership did not move off store {} in time: try again",
                leader.node
            );
        }
    }
}
