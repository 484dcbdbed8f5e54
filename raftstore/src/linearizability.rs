//! Linearizability checker for client histories of a key-value store, modelled as a map of
//! independent single-key registers (an absent key holds `None`).
//!
//! Owns: the history format ([`Op`], [`OpKind`], [`Scan`]), splitting scans into per-key reads
//! ([`expand_scan`]) and the check itself ([`check`]). The check partitions the history by key
//! (a map of independent registers is linearizable iff every key's sub-history is: Herlihy &
//! Wing's locality, Porcupine's P-compositionality) and runs, per key, the Wing & Gong search
//! with Lowe's memoization: the calls and returns of the key's ops form a sorted event list; a
//! depth-first search picks which pending op takes effect next, and a memo of
//! (set of linearized ops, register value) pairs cuts every state already explored.
//!
//! An op whose outcome is unknown (`return_ns: None`, e.g. the client timed out) may take effect
//! at any time after its call, or never; its observed result is ignored. Its return is placed at
//! +infinity and the search succeeds once every completed op is linearized, so the history passes
//! iff some linearization holds all completed ops and ANY subset of the unknown ones. Only
//! canonical linearizations are searched (see `Search::try_linearize`), which keeps the many
//! timed-out writes of a partitioned run from multiplying the states.
//!
//! Must not: read clocks, do I/O, or depend on the rest of raftstore; it only judges histories
//! that a simulator or a test harness recorded. It never loops forever: each key's search stops
//! at [`SEARCH_STATES_MAX`] memoized states and says [`CheckResult::Inconclusive`].
//!
//! Start reading at [`check`], then `Search::run`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Memoized search states per key before the check gives up as inconclusive. Bounds time and
/// memory: reaching it took ~10 s and ~330 MB (release build, 40 mutually concurrent puts), as a
/// state costs ~64 bytes while fewer than 64 ops of the key are pending.
pub const SEARCH_STATES_MAX: u64 = 5_000_000;
/// Most recently linearized ops quoted in a violation's explanation.
const EXPLANATION_RECENT_OPS_MAX: usize = 4;
const _: () = assert!(SEARCH_STATES_MAX > 0 && EXPLANATION_RECENT_OPS_MAX > 0);

/// One client operation on one key, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Only quoted in explanations: real-time order already implies each client's program order.
    pub client: u64,
    pub key: Vec<u8>,
    pub kind: OpKind,
    pub call_ns: i64,
    /// `None`: the outcome is unknown (timed out); the op may take effect after `call_ns` or
    /// never, and the observed result in `kind` is ignored.
    pub return_ns: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put {
        value: Vec<u8>,
    },
    /// `observed: None` means the key was absent.
    Get {
        observed: Option<Vec<u8>>,
    },
    Delete,
    /// Sets `new` iff the register holds `expected` (`None` = absent, on either side).
    Cas {
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
        succeeded: bool,
    },
}

/// A range read over `[start, end)` (`end: None` = unbounded) that returned `observed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub client: u64,
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    /// Pairs in strictly ascending key order, as the store returned them.
    pub observed: Vec<(Vec<u8>, Vec<u8>)>,
    pub call_ns: i64,
    pub return_ns: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Linearizable,
    /// `ops` indexes `history`: the ops around the point where every ordering got stuck.
    NotLinearizable {
        key: Vec<u8>,
        ops: Vec<usize>,
        explanation: String,
    },
    /// The search of `key` hit its state limit; no other key was found non-linearizable.
    Inconclusive {
        key: Vec<u8>,
        states_explored: u64,
    },
    /// `history[op]` cannot have happened as recorded; the recorder is broken, not the store.
    Malformed {
        op: usize,
        reason: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanError {
    ReturnsBeforeCall,
    /// `observed[index]` is outside `[start, end)`.
    KeyOutsideRange {
        index: usize,
    },
    /// `observed[index]` does not sort strictly after `observed[index - 1]`.
    KeysNotAscending {
        index: usize,
    },
}

/// Every key the history touches; pass it to [`expand_scan`].
pub fn history_keys(history: &[Op]) -> BTreeSet<Vec<u8>> {
    history.iter().map(|op| op.key.clone()).collect()
}

/// Splits a scan into per-key Gets over the scan's interval: one for each returned pair, and an
/// absent (`None`) one for each key of `known_keys` inside the range that the scan did not return.
///
/// Approximation: each key's observation is then checked on its own, so a scan that mixes values
/// from different moments (no single point at which all of them held) still passes; only the
/// per-key reads are verified, not the scan's atomicity. A scan truncated by a row limit must pass
/// as `end` the bound it actually covered, or the keys past it would be wrongly observed absent.
/// A scan with an unknown outcome observed nothing and expands to no ops.
pub fn expand_scan(scan: &Scan, known_keys: &BTreeSet<Vec<u8>>) -> Result<Vec<Op>, ScanError> {
    if scan.return_ns.is_some_and(|r| r < scan.call_ns) {
        return Err(ScanError::ReturnsBeforeCall);
    }
    let in_range =
        |key: &[u8]| key >= scan.start.as_slice() && scan.end.as_ref().is_none_or(|end| key < end.as_slice());
    for (index, (key, _)) in scan.observed.iter().enumerate() {
        if !in_range(key) {
            return Err(ScanError::KeyOutsideRange { index });
        }
        if index > 0 && scan.observed[index - 1].0 >= *key {
            return Err(ScanError::KeysNotAscending { index });
        }
    }
    if scan.return_ns.is_none() {
        return Ok(Vec::new());
    }
    let read = |key: &[u8], observed: Option<Vec<u8>>| Op {
        client: scan.client,
        key: key.to_vec(),
        kind: OpKind::Get { observed },
        call_ns: scan.call_ns,
        return_ns: scan.return_ns,
    };
    let mut ops: Vec<Op> = scan.observed.iter().map(|(k, v)| read(k, Some(v.clone()))).collect();
    let returned: BTreeSet<&[u8]> = scan.observed.iter().map(|(k, _)| k.as_slice()).collect();
    for key in known_keys
        .iter()
        .filter(|k| in_range(k) && !returned.contains(k.as_slice()))
    {
        ops.push(read(key, None));
    }
    assert!(ops.len() >= scan.observed.len());
    Ok(ops)
}

/// Whether `history` is linearizable, checking each key's sub-history independently.
pub fn check(history: &[Op]) -> CheckResult {
    check_with_limit(history, SEARCH_STATES_MAX)
}

fn check_with_limit(history: &[Op], states_max: u64) -> CheckResult {
    assert!(states_max > 0);
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        if op.return_ns.is_some_and(|r| r < op.call_ns) {
            return CheckResult::Malformed {
                op: index,
                reason: "returns before it is called",
            };
        }
        // A read with an unknown outcome observed nothing and changes nothing: drop it up front
        // rather than let it widen every frontier of the search.
        if op.return_ns.is_none() && matches!(op.kind, OpKind::Get { .. }) {
            continue;
        }
        by_key.entry(op.key.as_slice()).or_default().push(index);
    }
    // Keep going past an inconclusive key: a definite violation elsewhere is worth more.
    let mut inconclusive = None;
    for (key, indexes) in by_key {
        let mut search = Search::new(history, &indexes);
        match search.run(states_max) {
            Verdict::Linearizable => {}
            Verdict::Violation(deepest) => {
                let (ops, explanation) = search.explain(&deepest);
                return CheckResult::NotLinearizable {
                    key: key.to_vec(),
                    ops,
                    explanation,
                };
            }
            Verdict::Inconclusive { states_explored } => {
                inconclusive.get_or_insert(CheckResult::Inconclusive {
                    key: key.to_vec(),
                    states_explored,
                });
            }
        }
    }
    inconclusive.unwrap_or(CheckResult::Linearizable)
}

/// An op's effect on one register whose values are interned (`NONE` = absent).
#[derive(Clone, Copy, Debug)]
enum Step {
    Write(u32),
    Read(u32),
    Cas {
        expected: u32,
        new: u32,
        succeeded: Option<bool>,
    },
}

const NONE: u32 = 0;

impl Step {
    /// The register after the op takes effect on `state`, or `None` if it cannot have observed
    /// what it did. A Cas of unknown outcome may take effect either way.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Write(value) => Some(value),
            Step::Read(observed) => (observed == state).then_some(state),
            Step::Cas {
                expected,
                new,
                succeeded,
            } => match (succeeded, expected == state) {
                (Some(true), true) | (None, true) => Some(new),
                (Some(false), false) | (None, false) => Some(state),
                (Some(true), false) | (Some(false), true) => None,
            },
        }
    }
}

enum Verdict {
    Linearizable,
    Violation(Deepest),
    Inconclusive { states_explored: u64 },
}

/// The furthest point the search reached, kept to explain a violation (all ops are local):
/// the last ops placed, the register they left, and the window of ops none of which could follow.
#[derive(Default)]
struct Deepest {
    depth: usize,
    state: u32,
    recent: Vec<usize>,
    window: Vec<usize>,
}

const HEAD: usize = 0;
const TAIL: usize = 1;

/// The doubly linked list of the calls and returns of the ops not yet linearized, in time
/// order. Nodes 0 and 1 are sentinels, then one call node and one return node per op.
struct Events {
    prev: Vec<usize>,
    next: Vec<usize>,
    op_of: Vec<usize>,
    call_of: Vec<usize>,
    return_of: Vec<usize>,
}

impl Events {
    /// `events` holds (time, rank, op) with rank 0 for a call, 1 for a return and 2 for an
    /// unknown outcome's return at +infinity.
    fn new(mut events: Vec<(i64, u8, usize)>, ops: usize) -> Self {
        assert!(events.len() == 2 * ops);
        // At equal times calls sort before returns, so ops whose intervals only touch count as
        // concurrent: equal nanosecond stamps do not prove an order.
        events.sort_unstable();
        let nodes = 2 + events.len();
        let (mut prev, mut next, mut op_of) = (vec![HEAD; nodes], vec![TAIL; nodes], vec![usize::MAX; nodes]);
        let (mut call_of, mut return_of) = (vec![usize::MAX; ops], vec![usize::MAX; ops]);
        let mut last = HEAD;
        for (i, &(_, rank, op)) in events.iter().enumerate() {
            let node = 2 + i;
            (next[last], prev[node], last) = (node, last, node);
            op_of[node] = op;
            if rank == 0 {
                call_of[op] = node;
            } else {
                return_of[op] = node;
            }
        }
        (next[last], prev[TAIL]) = (TAIL, last);
        assert!(
            (0..ops).all(|op| call_of[op] < return_of[op] && return_of[op] < nodes),
            "call after return"
        );
        Events {
            prev,
            next,
            op_of,
            call_of,
            return_of,
        }
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn is_call(&self, node: usize) -> bool {
        node != TAIL && node == self.call_of[self.op_of[node]]
    }

    /// The ops that may go next: those whose calls precede the first return.
    fn window(&self) -> impl Iterator<Item = usize> + '_ {
        let mut node = self.first();
        std::iter::from_fn(move || {
            let op = self.is_call(node).then(|| self.op_of[node])?;
            node = self.next[node];
            Some(op)
        })
    }

    /// Unlinks an op's call and return nodes; they keep their own links so `unlift` can restore
    /// them (dancing links), which is valid because ops are unlifted in reverse order.
    fn lift(&mut self, op: usize) {
        for node in [self.call_of[op], self.return_of[op]] {
            let (p, n) = (self.prev[node], self.next[node]);
            assert!(self.next[p] == node && self.prev[n] == node);
            (self.next[p], self.prev[n]) = (n, p);
        }
    }

    fn unlift(&mut self, op: usize) {
        for node in [self.return_of[op], self.call_of[op]] {
            let (p, n) = (self.prev[node], self.next[node]);
            assert!(self.next[p] == n && self.prev[n] == p);
            (self.next[p], self.prev[n]) = (node, node);
        }
    }
}

/// One key's search. Ops are numbered locally (`indexes[local]` is the history index). The
/// fields after `events` are the search path and its memo.
struct Search<'a> {
    history: &'a [Op],
    indexes: &'a [usize],
    steps: Vec<Step>,
    completed: Vec<bool>,
    values: Vec<Option<&'a [u8]>>,
    events: Events,
    linearized: Vec<u64>,
    state: u32,
    /// While the last linearized op has an unknown outcome: the register before it.
    after_unknown: Option<u32>,
    stack: Vec<(usize, u32, Option<u32>)>, // (op, state and after_unknown before it)
    memo: HashSet<Box<[u64]>>,
    memo_key: Vec<u64>,
}

impl<'a> Search<'a> {
    fn new(history: &'a [Op], indexes: &'a [usize]) -> Self {
        let mut values: Vec<Option<&'a [u8]>> = vec![None];
        let mut ids: HashMap<&'a [u8], u32> = HashMap::new();
        let mut intern = |value: Option<&'a [u8]>| match value {
            None => NONE,
            Some(v) => *ids.entry(v).or_insert_with(|| {
                values.push(Some(v));
                u32::try_from(values.len() - 1).expect("more than u32::MAX distinct values for one key")
            }),
        };
        let mut steps = Vec::with_capacity(indexes.len());
        let mut events = Vec::with_capacity(2 * indexes.len());
        for (local, &index) in indexes.iter().enumerate() {
            let op = &history[index];
            let known = op.return_ns.is_some();
            steps.push(match &op.kind {
                OpKind::Put { value } => Step::Write(intern(Some(value))),
                OpKind::Delete => Step::Write(NONE),
                OpKind::Get { observed } => Step::Read(intern(observed.as_deref())),
                OpKind::Cas {
                    expected,
                    new,
                    succeeded,
                } => Step::Cas {
                    expected: intern(expected.as_deref()),
                    new: intern(new.as_deref()),
                    succeeded: known.then_some(*succeeded),
                },
            });
            events.push((op.call_ns, 0, local));
            events.push(op.return_ns.map_or((i64::MAX, 2, local), |t| (t, 1, local)));
        }
        Search {
            history,
            indexes,
            steps,
            completed: indexes.iter().map(|&i| history[i].return_ns.is_some()).collect(),
            values,
            events: Events::new(events, indexes.len()),
            linearized: vec![0; indexes.len().div_ceil(64)],
            state: NONE,
            after_unknown: None,
            stack: Vec::with_capacity(indexes.len()),
            memo: HashSet::new(),
            memo_key: Vec::new(),
        }
    }

    /// Depth-first search over "which pending op takes effect next" (Porcupine's loop). The
    /// list holds the not-yet-linearized ops; an op may go next iff its call precedes the first
    /// return in the list, so meeting a return means backtracking, unless it is an unknown-outcome
    /// return (+infinity), which proves every completed op is linearized.
    fn run(&mut self, states_max: u64) -> Verdict {
        let mut deepest = Deepest::default();
        self.record_deepest(&mut deepest);
        let mut cursor = self.events.first();
        loop {
            if cursor == TAIL {
                assert!(self.stack.len() == self.steps.len());
                return Verdict::Linearizable;
            }
            let op = self.events.op_of[cursor];
            if self.events.is_call(cursor) {
                match self.try_linearize(op, states_max) {
                    None => {
                        return Verdict::Inconclusive {
                            states_explored: self.memo.len() as u64,
                        }
                    }
                    Some(true) => {
                        if self.stack.len() > deepest.depth {
                            self.record_deepest(&mut deepest);
                        }
                        cursor = self.events.first();
                    }
                    Some(false) => cursor = self.events.next[cursor],
                }
            } else if !self.completed[op] {
                debug_assert!((0..self.steps.len()).all(|o| !self.completed[o] || bit(&self.linearized, o)));
                return Verdict::Linearizable;
            } else {
                let Some(op) = self.backtrack() else {
                    return Verdict::Violation(deepest);
                };
                cursor = self.events.next[self.events.call_of[op]];
            }
        }
    }

    /// Linearizes `op` next if the register allows it and the resulting state is new: true if
    /// it did, false if not, `None` if the state limit is hit.
    ///
    /// Only canonical linearizations are searched, in which every unknown-outcome op changes the
    /// register and is directly followed by an op that needs it (see `needs_unknown`). Any
    /// linearization can be made canonical, so this loses no history: an unknown op that changes
    /// nothing or is blindly overwritten is dropped (it may never have happened), and one followed
    /// by an op that could have gone before it is moved after that op (its return is at +infinity,
    /// so later is always allowed). Without this the search tries every pending timed-out write
    /// at every step and explodes.
    fn try_linearize(&mut self, op: usize, states_max: u64) -> Option<bool> {
        if self.after_unknown.is_some_and(|before| !self.needs_unknown(op, before)) {
            return Some(false);
        }
        let Some(state) = self.steps[op].apply(self.state) else {
            return Some(false);
        };
        let unknown = !self.completed[op];
        if unknown && (state == self.state || !self.may_follow_unknown(op, state)) {
            return Some(false);
        }
        let after_unknown = unknown.then_some(self.state);
        assert!(!bit(&self.linearized, op), "a linearized op is still in the list");
        self.linearized[op / 64] |= 1 << (op % 64);
        // `after_unknown` restricts what may follow, so it is part of the state.
        encode_memo_key(&self.linearized, state, after_unknown, &mut self.memo_key);
        let seen = self.memo.contains(self.memo_key.as_slice());
        if seen || self.memo.len() as u64 >= states_max {
            self.linearized[op / 64] &= !(1 << (op % 64));
            return seen.then_some(false);
        }
        self.memo.insert(self.memo_key.clone().into_boxed_slice());
        self.stack.push((op, self.state, self.after_unknown));
        (self.state, self.after_unknown) = (state, after_unknown);
        self.events.lift(op);
        Some(true)
    }

    /// Whether `op`, right after an unknown-outcome op that left `before`, needs that op: it is no
    /// blind write, and it could not have gone at `before` (an unknown op that would change
    /// nothing there does not count as going).
    fn needs_unknown(&self, op: usize, before: u32) -> bool {
        !matches!(self.steps[op], Step::Write(_))
            && self.steps[op]
                .apply(before)
                .is_none_or(|after| !self.completed[op] && after == before)
    }

    /// Whether some other op of the current window can go right after unknown-outcome `op`
    /// moves the register from `self.state` to `state`, and needs it. Checked before taking `op`
    /// so that the many timed-out writes that never happened cost a scan, not a state each.
    fn may_follow_unknown(&self, op: usize, state: u32) -> bool {
        assert!(!self.completed[op] && state != self.state);
        // Lifting `op` removes its call and its return at +infinity, so the window after it is
        // the current one minus `op`.
        self.events.window().any(|next| {
            let goes = |after: u32| self.completed[next] || after != state;
            next != op && self.needs_unknown(next, self.state) && self.steps[next].apply(state).is_some_and(goes)
        })
    }

    /// Undoes the latest linearization; `None` once the path is empty.
    fn backtrack(&mut self) -> Option<usize> {
        let (op, state, after_unknown) = self.stack.pop()?;
        assert!(bit(&self.linearized, op), "a stacked op is linearized");
        self.linearized[op / 64] &= !(1 << (op % 64));
        (self.state, self.after_unknown) = (state, after_unknown);
        self.events.unlift(op);
        Some(op)
    }

    fn record_deepest(&self, deepest: &mut Deepest) {
        let recent_from = self.stack.len().saturating_sub(EXPLANATION_RECENT_OPS_MAX);
        deepest.depth = self.stack.len();
        deepest.state = self.state;
        deepest.recent = self.stack[recent_from..].iter().map(|&(op, ..)| op).collect();
        deepest.window = self.events.window().collect();
    }

    /// The history indexes involved at the deepest point, and a sentence about them.
    fn explain(&self, deepest: &Deepest) -> (Vec<usize>, String) {
        let describe = |ops: &[usize]| {
            let described: Vec<String> = ops
                .iter()
                .map(|&op| describe_op(self.history, self.indexes[op]))
                .collect();
            described.join("; ")
        };
        let explanation = format!(
            "no linearization of the key's {} ops exists: the longest consistent order places {}, ending with [{}] \
             and leaving the register {}; from there none of the ops that may go next [{}] leads to a full order",
            self.steps.len(),
            deepest.depth,
            describe(&deepest.recent),
            show_value(self.values[deepest.state as usize]),
            describe(&deepest.window),
        );
        let mut ops: Vec<usize> = deepest
            .recent
            .iter()
            .chain(&deepest.window)
            .map(|&op| self.indexes[op])
            .collect();
        ops.sort_unstable();
        assert!(
            !deepest.window.is_empty(),
            "a violation leaves some completed op unplaced"
        );
        (ops, explanation)
    }
}

fn bit(words: &[u64], op: usize) -> bool {
    words[op / 64] & (1 << (op % 64)) != 0
}

/// A canonical, compact encoding of (linearized set, register, after_unknown): words below the
/// first one not full are implied full and trailing zero words are dropped, so the key stays
/// about the size of the concurrency window instead of the key's whole history.
fn encode_memo_key(linearized: &[u64], state: u32, after_unknown: Option<u32>, key: &mut Vec<u64>) {
    let base = linearized
        .iter()
        .position(|&w| w != u64::MAX)
        .unwrap_or(linearized.len());
    let end = linearized
        .iter()
        .rposition(|&w| w != 0)
        .map_or(base, |last| (last + 1).max(base));
    assert!(base <= end && end <= linearized.len() && base <= u32::MAX as usize);
    key.clear();
    key.push(u64::from(state) << 32 | base as u64);
    key.push(after_unknown.map_or(0, |before| u64::from(before) + 1));
    key.extend_from_slice(&linearized[base..end]);
}

fn describe_op(history: &[Op], index: usize) -> String {
    let op = &history[index];
    let some = |v: &Option<Vec<u8>>| show_value(v.as_deref());
    let what = match &op.kind {
        OpKind::Put { value } => format!("put {}", show_value(Some(value))),
        OpKind::Get { observed } => format!("get -> {}", some(observed)),
        OpKind::Delete => "delete".to_string(),
        OpKind::Cas {
            expected,
            new,
            succeeded,
        } => {
            let outcome = match (op.return_ns, succeeded) {
                (None, _) => "outcome unknown",
                (Some(_), true) => "succeeded",
                (Some(_), false) => "failed",
            };
            format!("cas {} => {} {outcome}", some(expected), some(new))
        }
    };
    let returned = op.return_ns.map_or_else(|| "?".to_string(), |t| t.to_string());
    format!("#{index} client {} {what} [{}, {returned}]", op.client, op.call_ns)
}

fn show_value(value: Option<&[u8]>) -> String {
    match value {
        None => "absent".to_string(),
        Some(bytes) if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') => {
            format!("{:?}", String::from_utf8_lossy(bytes))
        }
        Some(bytes) => format!("0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a history written one op per `;`: `put K V CALL RET`, `get K V CALL RET`,
    /// `del K CALL RET`, `cas K EXPECTED NEW ok|fail CALL RET`; `-` is an absent value and a
    /// RET of `?` an unknown outcome.
    fn parse(text: &str) -> Vec<Op> {
        let value = |v: &str| (v != "-").then(|| v.as_bytes().to_vec());
        let words: Vec<Vec<&str>> = text.split(';').map(|op| op.split_whitespace().collect()).collect();
        let ops = words.iter().enumerate().map(|(client, w)| {
            let kind = match w[0] {
                "put" => OpKind::Put {
                    value: w[2].as_bytes().to_vec(),
                },
                "get" => OpKind::Get { observed: value(w[2]) },
                "del" => OpKind::Delete,
                "cas" => OpKind::Cas {
                    expected: value(w[2]),
                    new: value(w[3]),
                    succeeded: w[4] == "ok",
                },
                other => panic!("unknown op {other}"),
            };
            op(
                client as u64,
                w[1],
                kind,
                w[w.len() - 2].parse().unwrap(),
                w[w.len() - 1].parse().ok(),
            )
        });
        ops.collect()
    }

    fn op(client: u64, key: &str, kind: OpKind, call_ns: i64, return_ns: Option<i64>) -> Op {
        Op {
            client,
            key: key.as_bytes().to_vec(),
            kind,
            call_ns,
            return_ns,
        }
    }

    fn linearizable(text: &str) -> bool {
        let history = parse(text);
        match check(&history) {
            CheckResult::Linearizable => true,
            CheckResult::NotLinearizable { ops, explanation, .. } => {
                assert!(!ops.is_empty() && ops.iter().all(|&i| i < history.len()), "{ops:?}");
                assert!(explanation.contains("no linearization"), "{explanation}");
                false
            }
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn sequential_puts_and_gets_pass_and_a_get_of_a_never_written_value_fails() {
        // Proves the plain register model: reads see the latest write, and a phantom value is caught.
        let history = "get k - 0 5; put k a 10 20; get k a 30 40; put k b 50 60; get k b 70 80";
        assert!(linearizable(history));
        let phantom = format!("{history}; get k zzz 90 100");
        assert!(!linearizable(&phantom));
        let CheckResult::NotLinearizable { key, ops, .. } = check(&parse(&phantom)) else {
            panic!()
        };
        assert!(key == b"k" && ops.contains(&5), "{ops:?}");
    }

    #[test]
    fn stale_read_after_two_completed_puts_is_caught() {
        // Proves a read that starts after put(2) returned cannot observe the overwritten 1.
        assert!(!linearizable("put k 1 0 10; put k 2 20 30; get k 1 40 50"));
        assert!(linearizable("put k 1 0 10; put k 2 20 30; get k 2 40 50"));
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        // Proves an acknowledged put cannot vanish: a later read sees neither the old value nor absence.
        assert!(!linearizable("put k old 0 10; put k new 20 30; get k old 40 50"));
        assert!(!linearizable("put k old 0 10; put k new 20 30; get k - 40 50"));
        assert!(!linearizable("put k x 0 10; get k - 20 30"));
    }

    #[test]
    fn get_overlapping_a_put_may_observe_old_or_new() {
        // Proves concurrency is respected: an overlapping read may be ordered on either side.
        assert!(linearizable("put k old 0 10; put k new 20 40; get k old 30 50"));
        assert!(linearizable("put k old 0 10; put k new 20 40; get k new 30 50"));
        // Intervals that only touch are concurrent too: equal stamps do not prove an order.
        assert!(linearizable("put k a 0 10; get k - 10 20"));
    }

    #[test]
    fn two_concurrent_cas_on_the_same_expected_value_cannot_both_succeed() {
        // Proves CAS atomicity: of two racing CAS(a -> _) exactly one wins, and a timed-out CAS may
        // take effect only if its expected value held.
        let race = |b: &str, c: &str| format!("put k a 0 10; cas k a b {b} 20 40; cas k a c {c} 25 45");
        assert!(!linearizable(&race("ok", "ok")));
        assert!(linearizable(&race("ok", "fail")) && linearizable(&race("fail", "ok")));
        assert!(
            !linearizable(&race("fail", "fail")),
            "the register held a, so one must win"
        );
        assert!(linearizable("put k a 0 10; cas k a b fail 20 ?; get k b 30 40"));
        assert!(!linearizable("put k a 0 10; cas k z b ok 20 ?; get k b 30 40"));
    }

    #[test]
    fn unknown_outcome_put_may_or_may_not_take_effect_but_not_flip_flop() {
        // Proves timed-out writes may land at any time after their call or never, but only once.
        let reads = |reads: &str| linearizable(&format!("put k old 0 10; put k new 20 ?; {reads}"));
        assert!(reads("get k old 30 40; get k old 50 60") && reads("get k new 30 40; get k new 50 60"));
        assert!(reads("get k old 30 40; get k new 50 60"), "it may land late");
        assert!(
            !reads("get k new 30 40; get k old 50 60; get k new 70 80"),
            "but not twice"
        );
        assert!(!linearizable("get k new 0 10; put k new 20 ?"), "nor before its call");
        assert!(
            linearizable("put k a 0 10; get k zzz 20 ?"),
            "an unknown-outcome get is dropped"
        );
    }

    #[test]
    fn delete_makes_the_key_absent() {
        // Proves delete semantics: after a completed delete, reads see absence until the next write.
        assert!(linearizable("put k a 0 10; del k 20 30; get k - 40 50"));
        assert!(!linearizable("put k a 0 10; del k 20 30; get k - 40 50; get k a 60 70"));
        assert!(linearizable(
            "put k a 0 10; del k 20 30; cas k - b ok 40 50; get k b 60 70"
        ));
    }

    #[test]
    fn independent_keys_do_not_interfere_and_violations_name_their_key() {
        // Proves per-key partitioning: a write to one key never explains a read of another.
        assert!(linearizable("put a 1 0 10; get b - 20 30; put b 2 40 50"));
        let history = parse("put a 1 0 10; get b - 20 30; put b 2 40 50; get a 2 60 70");
        let CheckResult::NotLinearizable { key, ops, .. } = check(&history) else {
            panic!()
        };
        assert_eq!((key.as_slice(), ops.contains(&3)), (&b"a"[..], true));
    }

    #[test]
    fn scans_expand_into_present_and_absent_reads() {
        // Proves scan expansion: returned pairs become reads, known keys of the range not returned
        // become absent reads (so a scan missing an acknowledged key is caught), and bad scans fail.
        let mut history = parse("put a 1 0 10; put b 2 0 10; put d 4 0 10");
        let keys = history_keys(&history);
        let scan = |pairs: &[(&str, &str)]| {
            let observed = pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            let end = Some(b"c".to_vec());
            expand_scan(
                &Scan {
                    client: 9,
                    start: b"a".to_vec(),
                    end,
                    observed,
                    call_ns: 20,
                    return_ns: Some(30),
                },
                &keys,
            )
        };
        let good = scan(&[("a", "1"), ("b", "2")]).unwrap();
        assert_eq!(good.len(), 2, "d is outside [a, c)");
        let missing = scan(&[("a", "1")]).unwrap();
        assert_eq!(missing[1].kind, OpKind::Get { observed: None });
        history.extend(good);
        assert_eq!(check(&history), CheckResult::Linearizable);
        history.extend(missing);
        assert!(matches!(check(&history), CheckResult::NotLinearizable { key, .. } if key == b"b"));
        assert_eq!(scan(&[("d", "4")]), Err(ScanError::KeyOutsideRange { index: 0 }));
        assert_eq!(
            scan(&[("b", "2"), ("a", "1")]),
            Err(ScanError::KeysNotAscending { index: 1 })
        );
    }

    #[test]
    fn an_op_returning_before_its_call_is_reported_as_malformed() {
        // Proves a broken recorder is reported as such instead of as a store bug.
        let result = check(&parse("put k a 0 10; get k a 30 20"));
        assert_eq!(
            result,
            CheckResult::Malformed {
                op: 1,
                reason: "returns before it is called"
            }
        );
    }

    #[test]
    fn state_limit_returns_inconclusive_instead_of_searching_on() {
        // Proves the search is bounded: with a tiny limit it gives up rather than running on.
        let history = parse("put k a 0 100; put k b 1 101; put k c 2 102; put k d 3 103; get k e 200 300");
        let inconclusive = CheckResult::Inconclusive {
            key: b"k".to_vec(),
            states_explored: 3,
        };
        assert_eq!(check_with_limit(&history, 3), inconclusive);
        assert!(matches!(check(&history), CheckResult::NotLinearizable { .. }));
    }

    struct SplitMix64(u64);
    impl SplitMix64 {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    /// Runs `ops` random ops against a real register, op `i` taking effect at `100 * (i + 1)` ns
    /// inside an interval of up to `spread_ns` either side, so the history is linearizable. One op
    /// in ten is a put that times out, half of them before taking effect; one in twenty other
    /// writes times out after taking effect.
    fn random_history(seed: u64, ops: u64, keys: u64, spread_ns: u64) -> Vec<Op> {
        let mut rng = SplitMix64(seed);
        let mut register = vec!["-".to_string(); keys as usize];
        let mut text = Vec::new();
        for i in 0..ops {
            let (key, roll, fresh) = (rng.below(keys) as usize, rng.below(10), format!("v{i}"));
            let (op, after) = match roll {
                0..=3 => (format!("get key{key} {}", register[key]), None),
                4..=5 | 9 => (format!("put key{key} {fresh}"), Some(fresh)),
                6 => (format!("del key{key}"), Some("-".to_string())),
                _ => {
                    let expected = if rng.below(2) == 0 {
                        register[key].clone()
                    } else {
                        format!("x{i}")
                    };
                    let new = if rng.below(4) == 0 { "-".to_string() } else { fresh };
                    let won = expected == register[key];
                    let outcome = if won { "ok" } else { "fail" };
                    (format!("cas key{key} {expected} {new} {outcome}"), won.then_some(new))
                }
            };
            if roll != 9 || rng.below(2) == 0 {
                register[key] = after.unwrap_or_else(|| register[key].clone());
            }
            let timed_out = roll == 9 || (roll >= 4 && rng.below(20) == 0);
            let at = 100 * (i + 1);
            let (call, ret) = (
                at.saturating_sub(rng.below(spread_ns + 1)),
                at + rng.below(spread_ns + 1),
            );
            text.push(if timed_out {
                format!("{op} {call} ?")
            } else {
                format!("{op} {call} {ret}")
            });
        }
        parse(&text.join(";"))
    }

    #[test]
    fn random_register_histories_pass_and_one_corrupted_read_fails() {
        // Proves no false alarms on many linearizable histories with overlaps and timeouts, and that
        // changing one completed read to a never-written value is always caught, on its key.
        for seed in 0..300 {
            let mut history = random_history(seed, 300, 3, 400);
            assert_eq!(check(&history), CheckResult::Linearizable, "seed {seed}");
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| matches!(history[i].kind, OpKind::Get { .. }))
                .collect();
            let victim = reads[(seed as usize * 7919) % reads.len()];
            history[victim].kind = OpKind::Get {
                observed: Some(b"never written".to_vec()),
            };
            let CheckResult::NotLinearizable { key, ops, .. } = check(&history) else {
                panic!("seed {seed}")
            };
            assert!(key == history[victim].key && !ops.is_empty(), "seed {seed}");
        }
    }

    #[test]
    fn ten_thousand_ops_and_a_hot_key_check_within_the_default_limit() {
        // Proves the target scale is tractable: 10k ops over 10 keys, and 1k ops on one key with ~10
        // concurrent, timeouts included, both pass well under the state limit.
        for (history, states_max) in [
            (random_history(1, 10_000, 10, 1_000), 20_000),
            (random_history(2, 1_000, 1, 500), 50_000),
        ] {
            assert_eq!(check_with_limit(&history, states_max), CheckResult::Linearizable);
        }
    }

    /// Exhaustive oracle straight from the definition: some order of all completed ops and any
    /// subset of unknown-outcome ones respects real time and the register's semantics.
    fn brute_force(ops: &[Op], taken: &mut Vec<bool>, state: Option<Vec<u8>>) -> bool {
        let pending = |taken: &[bool], j: usize| !taken[j] && ops[j].return_ns.is_some();
        if (0..ops.len()).all(|j| !pending(taken, j)) {
            return true;
        }
        for i in 0..ops.len() {
            let blocked = |j| pending(taken, j) && ops[j].return_ns.is_some_and(|r| r < ops[i].call_ns);
            if taken[i] || (0..ops.len()).any(blocked) {
                continue; // taken, or an op still to place returned before this one was called
            }
            let known = ops[i].return_ns.is_some();
            let after = match &ops[i].kind {
                OpKind::Put { value } => Some(Some(value.clone())),
                OpKind::Delete => Some(None),
                OpKind::Get { observed } => (!known || *observed == state).then(|| state.clone()),
                OpKind::Cas {
                    expected,
                    new,
                    succeeded,
                } => match (*expected == state, known) {
                    (true, _) if !known || *succeeded => Some(new.clone()),
                    (false, _) if !known || !*succeeded => Some(state.clone()),
                    _ => None,
                },
            };
            if let Some(after) = after {
                taken[i] = true;
                if brute_force(ops, taken, after) {
                    return true;
                }
                taken[i] = false;
            }
        }
        false
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        // Proves the memo, the event list and the pruning of timed-out ops lose nothing and invent
        // nothing: on thousands of small arbitrary histories the verdict equals an exhaustive search.
        let mut rng = SplitMix64(7);
        let mut verdicts = [0usize; 2];
        for _ in 0..3_000 {
            let n = 2 + rng.below(6) as usize;
            let pick = |rng: &mut SplitMix64, of: &[&'static str]| of[rng.below(of.len() as u64) as usize];
            let text: Vec<String> = (0..n)
                .map(|_| {
                    let op = match rng.below(4) {
                        0 => format!("put k {}", pick(&mut rng, &["a", "b", "c"])),
                        1 => format!("get k {}", pick(&mut rng, &["-", "a", "b"])),
                        2 => "del k".to_string(),
                        _ => {
                            let (expected, new) = (pick(&mut rng, &["-", "a", "b"]), pick(&mut rng, &["-", "a", "b"]));
                            format!("cas k {expected} {new} {}", pick(&mut rng, &["ok", "fail"]))
                        }
                    };
                    let call = rng.below(50);
                    let ret = if rng.below(4) == 0 {
                        "?".to_string()
                    } else {
                        (call + rng.below(30)).to_string()
                    };
                    format!("{op} {call} {ret}")
                })
                .collect();
            let history = parse(&text.join("; "));
            let expected = brute_force(&history, &mut vec![false; n], None);
            let actual = check(&history);
            assert_eq!(
                actual == CheckResult::Linearizable,
                expected,
                "{}: {actual:?}",
                text.join("; ")
            );
            verdicts[usize::from(expected)] += 1;
        }
        assert!(
            verdicts.iter().all(|&v| v > 500),
            "both verdicts well represented: {verdicts:?}"
        );
    }
}
