//! Adding and removing a region's replicas from outside, step by step as PD does with joint
//! consensus: a voter is added as a learner, then promoted once it caught up; a voter is
//! removed by demoting it, then removing the learner (its leadership handed away first). A
//! store is drained (scale-in) by moving its replicas one region at a time.
//!
//! Owns: the order of the steps and the waits between them (each step is one `Op::ChangePeer`
//! through the region's log; the nodes' views tell when it is done). Must not: decide whether
//! a step is safe (the region's leader refuses an unsafe one, with why, and it is tried again
//! until the deadline).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use corekv_netio::msg::{RegionInfo, WireError, WirePeer, WirePeerChange, WireRegion};
use corekv_netio::{Client, Error as ClientError};
use corekv_raftstore::placement::directory::StoreState;

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

/// Moves every replica off `store` (scale-in): each region's goes to the up store with the
/// fewest replicas among those without one of that region (on the shard its id picks there),
/// added as a voter before the store's own is removed. Refused before anything moves when the
/// store holds a replica of the system region (which does not move yet) or a region has no
/// store to go to. Planned again until the store holds nothing (a region split meanwhile
/// leaves a replica there). `moved` hears of each region moved (id, to store); `wait`
/// bounds each step. Returns how many moved.
pub async fn drain(client: &Client, store: u64, wait: Duration, moved: impl Fn(u64, u64)) -> Result<usize> {
    let mut count = 0;
    loop {
        let views = client.refresh().await?;
        if views.iter().any(|v| v.placement_nodes.contains(&store)) {
            bail!("store {store} holds a replica of the system region, which does not move yet: only a store that joined can be drained");
        }
        let plan = drain_plan(&client.regions(), store, &up_stores(client, store).await?)?;
        if plan.is_empty() {
            return Ok(count);
        }
        for &(id, to, shard) in &plan {
            add_peer(client, id, (to, shard), false, wait).await?;
            remove_peer(client, id, (store, None), wait).await?;
            moved(id, to);
            count += 1;
        }
    }
}

/// The stores other than `except` that report (id, shards).
async fn up_stores(client: &Client, except: u64) -> Result<Vec<(u64, u32)>> {
    let listed = client.get_all_stores().await?;
    let up = |age| StoreState::from_age(age, listed.complete) == Some(StoreState::Up);
    let stores = listed
        .records
        .iter()
        .filter(|s| s.heartbeat.store_id != except && up(s.age_ms));
    Ok(stores.map(|s| (s.heartbeat.store_id, s.heartbeat.shards)).collect())
}

/// Where each of `store`'s replicas goes: (region id, store, shard), spreading them over
/// `stores` (id, shards) by their replica counts.
fn drain_plan(regions: &[RegionInfo], store: u64, stores: &[(u64, u32)]) -> Result<Vec<(u64, u64, u32)>> {
    let mut load: HashMap<u64, usize> = stores.iter().map(|&(id, _)| (id, 0)).collect();
    for p in regions.iter().flat_map(|r| &r.region.peers) {
        if let Some(n) = load.get_mut(&p.node) {
            *n += 1;
        }
    }
    let mut plan = Vec::new();
    for r in regions
        .iter()
        .map(|r| &r.region)
        .filter(|r| replica_on(r, store, None).is_some())
    {
        let free = stores.iter().filter(|(s, _)| replica_on(r, *s, None).is_none());
        let Some(&(to, shards)) = free.min_by_key(|(s, _)| load.get(s).copied().unwrap_or(0)) else {
            bail!("region {} has a replica on every other up store: scale out first", r.id);
        };
        *load.entry(to).or_default() += 1;
        plan.push((r.id, to, (r.id % u64::from(shards.max(1))) as u32));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, nodes: &[u64]) -> RegionInfo {
        let peers = nodes.iter().map(|&node| WirePeer {
            id: id * 100 + node,
            node,
            shard: 0,
            role: VOTER,
        });
        RegionInfo {
            region: WireRegion {
                id,
                start: vec![id as u8],
                end: vec![id as u8 + 1],
                epoch: Default::default(),
                peers: peers.collect(),
            },
            leader: None,
            term: 1,
        }
    }

    // Proves a drain spreads the store's replicas over the stores without one of the region,
    // the emptiest first, picks the shard by region id, leaves regions the store does not
    // hold alone, and is refused (before anything moves) when a region has nowhere to go.
    #[test]
    fn a_drain_plan_spreads_replicas_and_refuses_a_dead_end() {
        let regions = [region(2, &[1, 2, 4]), region(3, &[1, 2, 4]), region(5, &[1, 2, 3])];
        let plan = drain_plan(&regions, 4, &[(1, 2), (2, 2), (3, 2), (5, 2)]).unwrap();
        assert_eq!(plan, [(2, 5, 0), (3, 3, 1)]);
        let why = drain_plan(&regions, 4, &[(1, 2), (2, 2)]).unwrap_err().to_string();
        assert!(why.contains("region 2 has a replica on every other up store"), "{why}");
    }
}
