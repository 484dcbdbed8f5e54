//! corekv-ctl: one-shot commands against a running cluster, through the client library.
//! Any failure: a non-zero exit and a one-line reason on stderr.
//!
//! Keys and values are bytes: arguments are taken as they are (or as hex with `--hex`), a
//! value may come from a file or stdin, and what is printed is escaped (`\t`, `\n`, `\\`,
//! `\xNN`) or hex, so a tab or newline in a key never breaks a `key<TAB>value` line.
//!
//! Owns: the command line, reading values (argument, file or stdin) and printing them.
//! Must not: route or retry by itself: every command goes through `netio::Client`, bounded by
//! `--timeout-ms`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use corekv_netio::client::Directory;
use corekv_netio::msg::{ClusterInfo, NodeStatus, RegionInfo};
use corekv_netio::msg::{DirectoryRegion, DirectoryStore};
use corekv_netio::{Client, ClientConfig};
use corekv_tools::bytes::{decode_arg, escape, Encoding};
use corekv_tools::directory;
use corekv_tools::membership::{self, await_views};
use serde_json::{json, Value};

/// Talk to a corekv cluster.
#[derive(Parser)]
#[command(name = "corekv-ctl", version = corekv_shard::VERSION)]
struct Args {
    /// Client addresses of some nodes (HOST:PORT of their shard 0; names or IPs),
    /// comma-separated; the rest of the cluster is learned from them.
    #[arg(long, value_delimiter = ',', env = "COREKV_ENDPOINTS")]
    endpoints: Vec<String>,
    /// Give up on a command after this long (retries included).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Keys and values in arguments and output are hex (binary-safe both ways).
    #[arg(long, global = true)]
    hex: bool,
    #[command(flatten)]
    tls: corekv_tools::TlsArgs,
    /// Output format of commands that print data.
    #[arg(short = 'w', long = "output", value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Raw key-value commands.
    Raw {
        #[command(subcommand)]
        op: Raw,
    },
    /// The cluster as its nodes see it.
    Cluster {
        #[command(subcommand)]
        op: Cluster,
    },
    /// Stores (nodes) as the placement service's directory knows them.
    Store {
        #[command(subcommand)]
        op: Store,
    },
    /// Regions: as the placement service's directory knows them (from their leaders' heartbeats); splitting them and handing over their leadership.
    Region {
        #[command(subcommand)]
        op: RegionCmd,
    },
    /// Each endpoint's health and load.
    Endpoint {
        #[command(subcommand)]
        op: Endpoint,
    },
    /// Timestamps from the cluster's TSO: prints the first, its physical time and logical part.
    Tso {
        /// How many consecutive timestamps to take at once.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Prints a completion script for SHELL (e.g. `corekv-ctl completion bash > /etc/bash_completion.d/corekv-ctl`).
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum Raw {
    /// Sets KEY to VALUE (`-`: read it from stdin; or --value-file); prints OK.
    Put {
        /// The key (bytes as given, or hex with --hex; not empty).
        key: String,
        /// The value (`-`: read it from stdin).
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        value_file: Option<std::path::PathBuf>,
    },
    /// Prints KEY's value; exit code 1 and `not found` on stderr when absent.
    Get {
        /// The key.
        key: String,
    },
    /// Deletes KEY; prints OK.
    Delete {
        /// The key.
        key: String,
    },
    /// Prints the pairs in [START, END) (END "" = to the end), one `key<TAB>value` line each.
    Scan {
        /// First key of the range ("": the first key there is).
        start: String,
        /// End of the range, excluded ("": to the last key).
        end: String,
        /// Most pairs printed.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Descending from END.
        #[arg(long)]
        reverse: bool,
    },
    /// Sets KEY to --new (or deletes it with --delete) if its value is --expected (or it is
    /// absent with --expect-absent); prints OK, else exit code 1 with the value found.
    Cas {
        /// The key.
        key: String,
        /// The value KEY must have.
        #[arg(long, required_unless_present = "expect_absent")]
        expected: Option<String>,
        /// KEY must be absent.
        #[arg(long, conflicts_with = "expected")]
        expect_absent: bool,
        /// The value to set.
        #[arg(long, required_unless_present = "delete")]
        new: Option<String>,
        /// Delete KEY instead.
        #[arg(long, conflicts_with = "new")]
        delete: bool,
    },
    /// Deletes every key in [START, END) (END "" = to the end); prints OK.
    DeleteRange {
        /// First key deleted ("": from the first key).
        start: String,
        /// End of the range, excluded ("": to the last key).
        end: String,
    },
    /// Prints `key<TAB>value` for each KEY (`key<TAB>` and nothing more when absent).
    BatchGet {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Sets each KEY to its VALUE (atomic per region); prints OK.
    BatchPut {
        /// KEY VALUE [KEY VALUE]...
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Cluster {
    /// Nodes, shards, regions and their leaders, and regions stopped on a node.
    Status,
}

#[derive(Subcommand)]
enum Store {
    /// Every store: address, state (Up; Disconnected after 20 s without a heartbeat; Down after 30 min; Unknown when a new placement leader has not heard from it yet), load, disk.
    List,
}

#[derive(Subcommand)]
enum RegionCmd {
    /// Regions in key order: range, epoch, leader, size, last interval's traffic.
    List {
        /// At most this many regions.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// One region in full, found by a key it holds or by its id.
    Show {
        /// A key the region holds.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        key: Option<String>,
        /// The region's id.
        #[arg(long)]
        id: Option<u64>,
    },
    /// Splits the region holding KEY at KEY: the keys below it stay, a new region (its ids
    /// from the placement service) takes the rest. Prints both regions.
    Split {
        /// The first key of the new region (it must not start a region already).
        #[arg(long)]
        key: String,
    },
    /// Hands a region's leadership to its replica on another store, and waits until that
    /// replica leads. Refused, with why, while the replica lags or is being sent a snapshot.
    TransferLeader {
        /// The region's id (`region list` shows them).
        #[arg(long)]
        id: u64,
        /// The store (node id) whose replica should lead.
        #[arg(long)]
        to_store: u64,
    },
    /// Adds a replica of a region on a store's shard: a learner that catches up, then (unless
    /// --learner) a voter through a joint membership. Prints the region's peers.
    AddPeer {
        /// The region's id.
        #[arg(long)]
        id: u64,
        /// The store (node id) the replica goes to.
        #[arg(long)]
        store: u64,
        /// The store's shard (core) the replica goes to.
        #[arg(long, default_value_t = 0)]
        shard: u32,
        /// Leave it a learner (it receives the log, votes in nothing).
        #[arg(long)]
        learner: bool,
    },
    /// Removes a region's replica from a store: its leadership handed away first, a voter
    /// demoted through a joint membership, then removed, and its data destroyed there.
    RemovePeer {
        /// The region's id.
        #[arg(long)]
        id: u64,
        /// The store (node id) holding the replica.
        #[arg(long)]
        store: u64,
        /// The store's shard, if it holds several replicas of the region.
        #[arg(long)]
        shard: Option<u32>,
    },
    /// Moves a region's replica: a voter added at --to (a learner that catches up, then
    /// promoted), then the one at --from removed (as remove-peer does).
    Move {
        /// The region's id.
        #[arg(long)]
        id: u64,
        /// STORE or STORE/SHARD holding the replica (the shard when the store holds several).
        #[arg(long, value_parser = parse_slot)]
        from: (u64, Option<u32>),
        /// STORE or STORE/SHARD the replica goes to (shard 0 if not given).
        #[arg(long, value_parser = parse_slot)]
        to: (u64, Option<u32>),
    },
}

/// `STORE` or `STORE/SHARD`.
fn parse_slot(text: &str) -> std::result::Result<(u64, Option<u32>), String> {
    let bad = |_| format!("{text:?}: expected STORE or STORE/SHARD (numbers)");
    match text.split_once('/') {
        Some((store, shard)) => Ok((store.parse().map_err(bad)?, Some(shard.parse().map_err(bad)?))),
        None => Ok((text.parse().map_err(bad)?, None)),
    }
}

#[derive(Subcommand)]
enum Endpoint {
    /// Whether each endpoint answers, and how fast; exit code 1 if any does not.
    Health {
        /// Every node the cluster knows, not only --endpoints.
        #[arg(long)]
        cluster: bool,
    },
    /// Per endpoint: node, version, uptime, regions, leaders, apply lag, disk use.
    Status {
        /// Every node the cluster knows, not only --endpoints.
        #[arg(long)]
        cluster: bool,
    },
}

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-ctl", run)
}

fn run() -> Result<()> {
    corekv_tools::init_logging("warn", None)?;
    let args = Args::parse();
    let enc = Encoding { hex: args.hex };
    let json = args.output == Output::Json;
    let printed = match args.command {
        Command::Completion { shell } => completion(shell),
        _ if args.endpoints.is_empty() => bail!("give --endpoints HOST:PORT[,...] (or set COREKV_ENDPOINTS)"),
        command => {
            let mut cfg = ClientConfig::new(args.endpoints);
            cfg.tls = args.tls.load()?;
            cfg.request_timeout = Duration::from_millis(args.timeout_ms);
            cfg.attempt_timeout = cfg.attempt_timeout.min(cfg.request_timeout);
            corekv_tools::on_executor(move || async move { execute(cfg, command, enc, json).await })?
        }
    };
    std::io::stdout().lock().write_all(printed.text.as_bytes())?;
    match printed.failure {
        Some(why) => bail!(why),
        None => Ok(()),
    }
}

async fn execute(cfg: ClientConfig, command: Command, enc: Encoding, json: bool) -> Result<Printed> {
    match command {
        Command::Raw { op } => raw(Client::connect(cfg).await?, op, enc, json).await,
        Command::Cluster { op: Cluster::Status } => {
            let stores = directory_stores(&cfg).await;
            let client = Client::connect(cfg).await?;
            let views = client.refresh().await?;
            Ok(status(&views, &client.regions(), stores.as_ref(), enc, json))
        }
        Command::Endpoint { op } => endpoints(cfg, op, json).await,
        Command::Store { op: Store::List } => {
            let stores = Client::with_view(cfg, Vec::new()).get_all_stores().await?;
            Ok(with_note(
                json.then(|| directory::stores_json(&stores.records, stores.complete)),
                directory::stores_text(&stores.records, stores.complete),
                stores.complete,
            ))
        }
        Command::Region {
            op: RegionCmd::TransferLeader { id, to_store },
        } => transfer_leader(cfg, id, to_store, json).await,
        Command::Region {
            op: RegionCmd::Split { key },
        } => split(cfg, &decode_arg(&key, enc)?, enc, json).await,
        Command::Region {
            op: op @ (RegionCmd::AddPeer { .. } | RegionCmd::RemovePeer { .. } | RegionCmd::Move { .. }),
        } => change_peers(cfg, op, json).await,
        Command::Region { op } => regions(Client::with_view(cfg, Vec::new()), op, enc, json).await,
        Command::Tso { count } => {
            let client = Client::with_view(cfg, Vec::new());
            Ok(tso(client.get_ts(count).await?, count, json))
        }
        Command::Completion { shell } => Ok(completion(shell)),
    }
}

/// The directory's regions: a page of them in key order, or one in full.
async fn regions(client: Client, op: RegionCmd, enc: Encoding, json: bool) -> Result<Printed> {
    let (found, detail) = match op {
        RegionCmd::List { limit } => (all_regions(&client, limit).await?, false),
        RegionCmd::Show { key: Some(k), .. } => (client.get_region(&decode_arg(&k, enc)?).await?, true),
        RegionCmd::Show { id, .. } => (client.get_region_by_id(id.unwrap_or_default()).await?, true),
        RegionCmd::TransferLeader { .. }
        | RegionCmd::Split { .. }
        | RegionCmd::AddPeer { .. }
        | RegionCmd::RemovePeer { .. }
        | RegionCmd::Move { .. } => unreachable!("executed on their own"),
    };
    if detail && found.records.is_empty() {
        let why = if found.complete {
            "no such region"
        } else {
            "not in the directory yet (its placement leader took over a moment ago): try again"
        };
        bail!(why);
    }
    let text = match detail {
        true => found.records.iter().map(|r| directory::region_detail(r, enc)).collect(),
        false => directory::regions_text(&found.records, enc),
    };
    let value = json.then(|| {
        let regions: Vec<Value> = found.records.iter().map(|r| directory::region_json(r, enc)).collect();
        json!({"regions": regions, "complete": found.complete})
    });
    Ok(with_note(value, text, found.complete))
}

/// Splits the region holding `key` at `key`, then prints the two regions as the nodes report
/// them.
async fn split(cfg: ClientConfig, key: &[u8], enc: Encoding, json: bool) -> Result<Printed> {
    let wait = cfg.request_timeout;
    let client = Client::connect(cfg).await?;
    if let Some(there) = client.regions().into_iter().find(|r| r.region.start == key) {
        let (id, key) = (there.region.id, directory::quoted(key, enc));
        return Ok(Printed::ok(format!(
            "region {id} starts at {key} already: nothing to split\n"
        )));
    }
    let started = Instant::now();
    client.split_region(key).await?;
    let ms = started.elapsed().as_millis() as u64;
    let both = |regions: &[RegionInfo]| {
        let side = |f: &dyn Fn(&RegionInfo) -> bool| regions.iter().find(|r| f(r)).map(|r| r.region.clone());
        side(&|r| r.region.end == key).zip(side(&|r| r.region.start == key))
    };
    let Some((left, right)) = await_views(&client, started + wait, both).await? else {
        bail!("the split is applied on the region's leader, but no node reports both regions yet: `corekv-ctl region list` shows them shortly");
    };
    let (l, r, version) = (left.id, right.id, right.epoch.version);
    if json {
        let range = |r: &corekv_netio::msg::WireRegion| json!({"id": r.id, "start": enc.show(&r.start), "end": enc.show(&r.end)});
        return Ok(Printed::json(
            json!({"left": range(&left), "right": range(&right), "version": version, "ms": ms}),
        ));
    }
    let [ls, le, rs, re] = [&left.start, &left.end, &right.start, &right.end].map(|k| directory::quoted(k, enc));
    Ok(Printed::ok(format!(
        "region {l} [{ls}, {le}) and new region {r} [{rs}, {re}), epoch version {version}, {ms} ms\n"
    )))
}

/// Starts a leader transfer, then follows the nodes' views (within the command's timeout)
/// until the target store's replica leads.
async fn transfer_leader(cfg: ClientConfig, id: u64, to_store: u64, json: bool) -> Result<Printed> {
    if id == corekv_raftstore::SYSTEM_REGION_ID {
        bail!("region {id} is the system region (the placement service's): its leadership moves by election only, for now");
    }
    let wait = cfg.request_timeout;
    let client = Client::connect(cfg).await?;
    let leader = |client: &Client| {
        let info = client.regions().into_iter().find(|r| r.region.id == id)?;
        Some((info.leader.map(|l| l.node), info.term))
    };
    let Some((from, _)) = leader(&client) else {
        bail!("no node knows region {id} (`corekv-ctl region list` lists the regions)");
    };
    let started = Instant::now();
    client.transfer_leader(id, to_store).await?;
    let led = |regions: &[RegionInfo]| {
        let info = regions.iter().find(|r| r.region.id == id)?;
        (info.leader.map(|l| l.node) == Some(to_store)).then_some(info.term)
    };
    let handed = await_views(&client, started + wait, led).await?;
    let ms = started.elapsed().as_millis() as u64;
    let Some(term) = handed else {
        let now = leader(&client).and_then(|l| l.0);
        let now = now.map_or("no known leader".to_string(), |n| format!("led by store {n}"));
        bail!("region {id}: the handover to store {to_store} started, but after {ms} ms the region is {now} (the target fell behind or lost touch): try again");
    };
    let value = json!({"region": id, "leader_store": to_store, "term": term, "ms": ms});
    Ok(match json {
        true => Printed::json(value),
        false => Printed::ok(handover_text(&value, from)),
    })
}

/// Adds or removes a replica (`corekv_tools::membership`), then prints the region's peers.
async fn change_peers(cfg: ClientConfig, op: RegionCmd, json: bool) -> Result<Printed> {
    if matches!(op, RegionCmd::AddPeer { id, .. } | RegionCmd::RemovePeer { id, .. } | RegionCmd::Move { id, .. } if id == corekv_raftstore::SYSTEM_REGION_ID)
    {
        bail!("region 1 is the system region (the placement service's): its replicas are placed at bootstrap, for now");
    }
    let wait = cfg.request_timeout;
    let client = Client::connect(cfg).await?;
    let started = Instant::now();
    let region = match op {
        RegionCmd::AddPeer {
            id,
            store,
            shard,
            learner,
        } => membership::add_peer(&client, id, (store, shard), learner, wait).await?,
        RegionCmd::RemovePeer { id, store, shard } => {
            membership::remove_peer(&client, id, (store, shard), wait).await?
        }
        RegionCmd::Move { id, from, to } => {
            let to = (to.0, to.1.unwrap_or(0));
            if from.0 == to.0 && from.1.is_none_or(|s| s == to.1) {
                bail!("--from and --to name the same place: nothing to move");
            }
            membership::add_peer(&client, id, to, false, wait).await?;
            membership::remove_peer(&client, id, from, wait).await?
        }
        _ => unreachable!("only membership changes come here"),
    };
    let ms = started.elapsed().as_millis() as u64;
    let leader = (client.regions().into_iter().find(|r| r.region.id == region.id)).and_then(|r| r.leader.map(|l| l.id));
    if json {
        let peers: Vec<Value> = (region.peers.iter())
            .map(|p| json!({"id": p.id, "node": p.node, "shard": p.shard, "role": directory::role(p, leader)}))
            .collect();
        let (conf_ver, version) = (region.epoch.conf_ver, region.epoch.version);
        return Ok(Printed::json(
            json!({"region": region.id, "conf_ver": conf_ver, "version": version, "peers": peers, "ms": ms}),
        ));
    }
    Ok(Printed::ok(format!(
        "region {} epoch conf_ver {} version {}, {ms} ms\n{}",
        region.id,
        region.epoch.conf_ver,
        region.epoch.version,
        directory::peers_text(&region, leader)
    )))
}

/// One line on a finished handover (`done` as `-w json` prints it), from the store that led.
fn handover_text(done: &Value, from: Option<u64>) -> String {
    let (id, to, term, ms) = (&done["region"], &done["leader_store"], &done["term"], &done["ms"]);
    match from {
        Some(n) if Some(n) == to.as_u64() => format!("region {id}: already led by store {to} (term {term})\n"),
        Some(n) => format!("region {id}: led by store {to} (term {term}; before: store {n}), {ms} ms\n"),
        None => format!("region {id}: led by store {to} (term {term}), {ms} ms\n"),
    }
}

/// Up to `limit` regions from the start of the key space, page by page.
async fn all_regions(client: &Client, limit: u32) -> Result<Directory<DirectoryRegion>> {
    let mut all = Directory {
        records: Vec::new(),
        complete: true,
    };
    let mut start = Vec::new();
    while (all.records.len() as u32) < limit {
        let page = client
            .scan_regions(&start, &[], limit - all.records.len() as u32)
            .await?;
        all.complete &= page.complete;
        let Some(last) = page.records.last() else { break };
        start = last.heartbeat.region.end.clone();
        all.records.extend(page.records);
        if start.is_empty() {
            break;
        }
    }
    Ok(all)
}

/// `json` when asked for, else `text` with a note on stderr's behalf when the directory may
/// be filling still.
fn with_note(json: Option<Value>, text: String, complete: bool) -> Printed {
    match json {
        Some(v) => Printed::json(v),
        None if complete => Printed::ok(text),
        None => Printed::ok(format!("{text}{}", directory::INCOMPLETE)),
    }
}

/// A timestamp, its physical time (UTC) and its logical part.
fn tso(ts: u64, count: u32, json: bool) -> Printed {
    let (physical_ms, logical) = corekv_raftstore::placement::tso::split(ts);
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(physical_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{physical_ms} ms"));
    if json {
        return Printed::json(
            json!({"ts": ts, "count": count, "physical_ms": physical_ms, "physical": at, "logical": logical}),
        );
    }
    Printed::ok(format!("{ts}\tphysical {at}\tlogical {logical}\n"))
}

/// The completion script of `shell` for corekv-ctl.
fn completion(shell: clap_complete::Shell) -> Printed {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "corekv-ctl", &mut script);
    Printed::ok(String::from_utf8_lossy(&script))
}

/// What a command prints, and the reason it fails with after printing it (exit code 1).
struct Printed {
    text: String,
    failure: Option<String>,
}

impl Printed {
    fn ok(text: impl Into<String>) -> Printed {
        Printed {
            text: text.into(),
            failure: None,
        }
    }

    fn json(v: Value) -> Printed {
        Printed::ok(format!("{v:#}\n"))
    }
}

async fn raw(client: Client, op: Raw, enc: Encoding, json: bool) -> Result<Printed> {
    let key = |k: &str| -> Result<Vec<u8>> {
        let k = decode_arg(k, enc)?;
        if k.is_empty() {
            bail!("the empty key is not a key");
        }
        Ok(k)
    };
    Ok(match op {
        Raw::Put {
            key: k,
            value,
            value_file,
        } => {
            let value = read_value(value, value_file, enc)?;
            client.put(&key(&k)?, &value).await?;
            Printed::ok("OK\n")
        }
        Raw::Get { key: k } => {
            let k = key(&k)?;
            match (client.get(&k).await?, json) {
                (v, true) => Printed::json(json!({ "key": enc.show(&k), "value": v.as_deref().map(|v| enc.show(v)) })),
                (Some(v), false) if enc.hex => Printed::ok(format!("{}\n", enc.show(&v))),
                (Some(v), false) => Printed::ok(format!("{}\n", String::from_utf8_lossy(&v))),
                (None, false) => Printed {
                    text: String::new(),
                    failure: Some("not found".into()),
                },
            }
        }
        Raw::Delete { key: k } => {
            client.delete(&key(&k)?).await?;
            Printed::ok("OK\n")
        }
        Raw::Scan {
            start,
            end,
            limit,
            reverse,
        } => {
            let (start, end) = (decode_arg(&start, enc)?, decode_arg(&end, enc)?);
            let rows = client.scan(&start, &end, limit, reverse).await?;
            pairs(rows.iter().map(|(k, v)| (k.as_slice(), Some(v.as_slice()))), enc, json)
        }
        Raw::Cas {
            key: k, expected, new, ..
        } => {
            let expected = expected.map(|v| decode_arg(&v, enc)).transpose()?;
            let new = new.map(|v| decode_arg(&v, enc)).transpose()?;
            let (swapped, found) = client
                .compare_and_swap(&key(&k)?, expected.as_deref(), new.as_deref())
                .await?;
            let found_text = found.as_deref().map_or("absent".to_string(), escape);
            match (swapped, json) {
                (_, true) => {
                    Printed::json(json!({ "swapped": swapped, "previous": found.as_deref().map(|v| enc.show(v)) }))
                }
                (true, false) => Printed::ok("OK\n"),
                (false, false) => Printed {
                    text: String::new(),
                    failure: Some(format!("not swapped: the value is {found_text}")),
                },
            }
        }
        Raw::DeleteRange { start, end } => {
            client
                .delete_range(&decode_arg(&start, enc)?, &decode_arg(&end, enc)?)
                .await?;
            Printed::ok("OK\n")
        }
        Raw::BatchGet { keys } => {
            let keys = keys.iter().map(|k| key(k)).collect::<Result<Vec<_>>>()?;
            let values = client.batch_get(&keys).await?;
            pairs(
                keys.iter().zip(&values).map(|(k, v)| (k.as_slice(), v.as_deref())),
                enc,
                json,
            )
        }
        Raw::BatchPut { pairs: args } => {
            if args.len() % 2 != 0 {
                bail!("batch-put takes KEY VALUE pairs: {} arguments is not pairs", args.len());
            }
            let pairs = args
                .chunks(2)
                .map(|p| Ok((key(&p[0])?, decode_arg(&p[1], enc)?)))
                .collect::<Result<Vec<_>>>()?;
            client.batch_put(&pairs).await?;
            Printed::ok("OK\n")
        }
    })
}

/// The value of a put: the argument, stdin for `-`, or a file.
fn read_value(arg: Option<String>, file: Option<std::path::PathBuf>, enc: Encoding) -> Result<Vec<u8>> {
    match (arg.as_deref(), file) {
        (_, Some(path)) => std::fs::read(&path).with_context(|| format!("read {}", path.display())),
        (Some("-"), None) => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .context("read the value from stdin")?;
            Ok(v)
        }
        (Some(v), None) => decode_arg(v, enc),
        (None, None) => bail!("give a VALUE, `-` for stdin, or --value-file"),
    }
}

/// `key<TAB>value` lines (value absent: `key<TAB>`), or a JSON array.
fn pairs<'a>(rows: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>, enc: Encoding, json: bool) -> Printed {
    let rows: Vec<(&[u8], Option<&[u8]>)> = rows.collect();
    if json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(k, v)| json!({ "key": enc.show(k), "value": v.map(|v| enc.show(v)) }))
            .collect();
        return Printed::json(Value::Array(list));
    }
    let mut text = String::new();
    for (k, v) in rows {
        text.push_str(&format!(
            "{}\t{}\n",
            enc.show(k),
            v.map(|v| enc.show(v)).unwrap_or_default()
        ));
    }
    Printed::ok(text)
}

fn status(
    views: &[ClusterInfo],
    regions: &[RegionInfo],
    stores: Option<&Directory<DirectoryStore>>,
    enc: Encoding,
    json: bool,
) -> Printed {
    let first = &views[0];
    let up = |id: u64| views.iter().any(|v| v.node_id == id);
    let stopped: Vec<(u64, u64, &str)> = views
        .iter()
        .flat_map(|v| v.stopped.iter().map(move |(r, why)| (v.node_id, *r, why.as_str())))
        .collect();
    if json {
        return Printed::json(json!({
            "cluster_id": format!("{:#x}", first.cluster_id),
            "shards": first.shards,
            "nodes": first.nodes.iter().map(|(id, addr)| json!({"id": id, "addr": addr, "up": up(*id)})).collect::<Vec<_>>(),
            "regions": regions.iter().map(|r| region_json(r, enc)).collect::<Vec<_>>(),
            "stopped": stopped.iter().map(|(n, r, why)| json!({"node": n, "region": r, "reason": why})).collect::<Vec<_>>(),
            "stores": stores.map(|s| directory::stores_json(&s.records, s.complete)),
        }));
    }
    let mut t = format!(
        "cluster {:#x}  nodes: {}  shards per node: {}\n",
        first.cluster_id,
        first.nodes.len(),
        first.shards
    );
    for (id, addr) in &first.nodes {
        let state = if up(*id) { "up" } else { "not answering" };
        t.push_str(&format!("  node {id}  {addr}  {state}\n"));
    }
    t.push_str(&format!("regions: {}\n", regions.len()));
    for r in regions {
        t.push_str(&region_line(r, enc));
    }
    for (node, region, why) in stopped {
        t.push_str(&format!("  STOPPED on node {node}: region {region} ({why})\n"));
    }
    match stores {
        Some(s) => t.push_str(&format!(
            "stores (the placement service's registry and heartbeats):\n{}",
            directory::stores_text(&s.records, s.complete)
        )),
        None => t.push_str("stores: the placement service did not answer within 2 s\n"),
    }
    Printed::ok(t)
}

fn region_line(r: &RegionInfo, enc: Encoding) -> String {
    let peers: Vec<String> = r
        .region
        .peers
        .iter()
        .map(|p| format!("n{}/s{}", p.node, p.shard))
        .collect();
    let leader = r.leader.map_or("none".to_string(), |l| {
        format!("n{}/s{} (term {})", l.node, l.shard, r.term)
    });
    format!(
        "  region {:<3} [\"{}\", \"{}\")  epoch {}/{}  peers {}  leader {}\n",
        r.region.id,
        enc.show(&r.region.start),
        enc.show(&r.region.end),
        r.region.epoch.conf_ver,
        r.region.epoch.version,
        peers.join(" "),
        leader
    )
}

fn region_json(r: &RegionInfo, enc: Encoding) -> Value {
    json!({
        "id": r.region.id,
        "start": enc.show(&r.region.start),
        "end": enc.show(&r.region.end),
        "conf_ver": r.region.epoch.conf_ver,
        "version": r.region.epoch.version,
        "peers": r.region.peers.iter().map(|p| json!({"id": p.id, "node": p.node, "shard": p.shard})).collect::<Vec<_>>(),
        "leader": r.leader.map(|l| json!({"id": l.id, "node": l.node, "shard": l.shard})),
        "term": r.term,
    })
}

/// `endpoint health` / `endpoint status`: each endpoint (or each node, with `--cluster`) asked
/// on its own.
async fn endpoints(cfg: ClientConfig, op: Endpoint, json: bool) -> Result<Printed> {
    let client = Client::with_view(cfg.clone(), Vec::new());
    let (Endpoint::Health { cluster } | Endpoint::Status { cluster }) = op;
    let addrs = match cluster {
        true => {
            let views = client.refresh().await?;
            let known = views.iter().flat_map(|v| v.nodes.iter().map(|(_, a)| a.clone()));
            let stores = directory_stores(&cfg).await.map(|s| s.records).unwrap_or_default();
            known
                .chain(stores.into_iter().map(|s| s.heartbeat.client_addr))
                .collect()
        }
        false => cfg.endpoints.clone(),
    };
    let addrs: std::collections::BTreeSet<String> = addrs.into_iter().collect();
    let mut rows = Vec::new();
    for addr in &addrs {
        let t0 = Instant::now();
        let answer = client.node_status(addr).await;
        rows.push((addr.clone(), t0.elapsed(), answer));
    }
    let failed = rows.iter().filter(|(_, _, a)| a.is_err()).count();
    let mut printed = match op {
        Endpoint::Health { .. } => health(&rows, json),
        Endpoint::Status { .. } => node_statuses(&rows, json),
    };
    if failed > 0 {
        printed.failure = Some(format!("{failed} of {} endpoints unhealthy", rows.len()));
    }
    Ok(printed)
}

/// The stores the placement service knows (nodes that joined included, which no node may have
/// talked to yet); None when it does not answer within `DIRECTORY_WAIT` (the nodes' own views
/// still name the others).
async fn directory_stores(cfg: &ClientConfig) -> Option<Directory<DirectoryStore>> {
    let mut cfg = cfg.clone();
    cfg.request_timeout = cfg.request_timeout.min(DIRECTORY_WAIT);
    Client::with_view(cfg, Vec::new()).get_all_stores().await.ok()
}

/// How long `endpoint ... --cluster` waits for the placement service's store list.
const DIRECTORY_WAIT: Duration = Duration::from_secs(2);

type Asked = (String, Duration, corekv_netio::Result<NodeStatus>);

fn health(rows: &[Asked], json: bool) -> Printed {
    if json {
        let list = rows.iter().map(|(addr, took, a)| {
            json!({"endpoint": addr, "healthy": a.is_ok(), "took_ms": took.as_millis() as u64,
                   "error": a.as_ref().err().map(|e| e.to_string())})
        });
        return Printed::json(Value::Array(list.collect()));
    }
    let lines = rows.iter().map(|(addr, took, a)| match a {
        Ok(_) => format!("{addr} is healthy: answered in {:.1} ms\n", took.as_secs_f64() * 1e3),
        Err(e) => format!("{addr} is unhealthy: {e}\n"),
    });
    Printed::ok(lines.collect::<String>())
}

fn node_statuses(rows: &[Asked], json: bool) -> Printed {
    if json {
        let list = rows.iter().map(|(addr, _, a)| match a {
            Ok(s) => {
                json!({"endpoint": addr, "up": true, "node_id": s.node_id, "cluster_id": format!("{:#x}", s.cluster_id),
                "version": s.version, "shards": s.shards, "uptime_secs": s.uptime_secs, "regions": s.regions,
                "leaders": s.leaders, "stopped_regions": s.stopped_regions, "apply_lag_entries": s.apply_lag_entries,
                "kv_disk_bytes": s.kv_disk_bytes, "raft_log_disk_bytes": s.raft_log_disk_bytes})
            }
            Err(e) => json!({"endpoint": addr, "up": false, "error": e.to_string()}),
        });
        return Printed::json(Value::Array(list.collect()));
    }
    let mut t = format!(
        "{:<22} {:>4} {:>8} {:<24} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10}\n",
        "ENDPOINT", "NODE", "UPTIME", "VERSION", "REGIONS", "LEADERS", "STOPPED", "APPLY LAG", "KV MiB", "LOG MiB"
    );
    for (addr, _, a) in rows {
        let mib = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
        t.push_str(&match a {
            Ok(s) => format!(
                "{addr:<22} {:>4} {:>7}s {:<24} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10}\n",
                s.node_id,
                s.uptime_secs,
                s.version,
                s.regions,
                s.leaders,
                s.stopped_regions,
                s.apply_lag_entries,
                mib(s.kv_disk_bytes),
                mib(s.raft_log_disk_bytes)
            ),
            Err(e) => format!("{addr:<22} {:>4} {:>8} down: {e}\n", "-", "-"),
        });
    }
    Printed::ok(t)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    // Proves `--help` explains every flag, argument and subcommand (none is undocumented).
    #[test]
    fn every_argument_is_documented() {
        Args::command().debug_assert();
        assert_eq!(corekv_tools::undocumented(&Args::command()), Vec::<String>::new());
    }
}
