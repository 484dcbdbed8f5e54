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
//! iff some linearization holds all completed ops and ANY subset of the unknown ones.
//!
//! Must not: read clocks, do I/O, or depend on the rest of raftstore; it only judges histories
//! that a simulator or a test harness recorded. It never loops forever: each key's search stops
//! at [`SEARCH_STATES_MAX`] memoized states and says [`CheckResult::Inconclusive`].
//!
//! Start reading at [`check`], then `Search::run`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Memoized search states per key before the check gives up as inconclusive. Bounds time and
/// memory: a state costs ~50 bytes while fewer than 64 ops of the key are concurrent.
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

/// The furthest point the search reached, kept to explain a violation (all ops are local).
#[derive(Default)]
struct Deepest {
    depth: usize,
    state: u32,
    recent: Vec<usize>,
    pending: Vec<usize>,
    blocking: Option<usize>,
}

const HEAD: usize = 0;
const TAIL: usize = 1;

/// One key's search. Ops are numbered locally (`indexes[local]` is the history index); nodes
/// 0 and 1 are the list's sentinels, then one call node and one return node per op, by time.
/// The fields after `return_of` are the search path and its memo.
struct Search<'a> {
    history: &'a [Op],
    indexes: &'a [usize],
    steps: Vec<Step>,
    completed: Vec<bool>,
    values: Vec<Option<&'a [u8]>>,
    prev: Vec<usize>,
    next: Vec<usize>,
    op_of: Vec<usize>,
    call_of: Vec<usize>,
    return_of: Vec<usize>,
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
        // (time, rank, op): at equal times calls sort before returns, so ops whose intervals
        // only touch count as concurrent; equal nanosecond stamps do not prove an order.
        let mut events: Vec<(i64, u8, usize)> = Vec::with_capacity(2 * indexes.len());
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
            events.push(match op.return_ns {
                Some(t) => (t, 1, local),
                None => (i64::MAX, 2, local),
            });
        }
        events.sort_unstable();
        let nodes = 2 + events.len();
        let (mut prev, mut next, mut op_of) = (vec![HEAD; nodes], vec![TAIL; nodes], vec![usize::MAX; nodes]);
        let (mut call_of, mut return_of) = (vec![usize::MAX; indexes.len()], vec![usize::MAX; indexes.len()]);
        let mut last = HEAD;
        for (i, &(_, rank, local)) in events.iter().enumerate() {
            let node = 2 + i;
            (next[last], prev[node], last) = (node, last, node);
            op_of[node] = local;
            if rank == 0 {
                call_of[local] = node;
            } else {
                return_of[local] = node;
            }
        }
        (next[last], prev[TAIL]) = (TAIL, last);
        for local in 0..indexes.len() {
            assert!(
                call_of[local] < return_of[local] && return_of[local] < nodes,
                "call must precede return"
            );
        }
        let words = indexes.len().div_ceil(64);
        Search {
            history,
            indexes,
            steps,
            completed: indexes.iter().map(|&i| history[i].return_ns.is_some()).collect(),
            values,
            prev,
            next,
            op_of,
            call_of,
            return_of,
            linearized: vec![0; words],
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
        let mut cursor = self.next[HEAD];
        loop {
            if cursor == TAIL {
                assert!(self.stack.len() == self.steps.len());
                return Verdict::Linearizable;
            }
            let op = self.op_of[cursor];
            if cursor == self.call_of[op] {
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
                        cursor = self.next[HEAD];
                    }
                    Some(false) => cursor = self.next[cursor],
                }
            } else if !self.completed[op] {
                debug_assert!((0..self.steps.len()).all(|o| !self.completed[o] || bit(&self.linearized, o)));
                return Verdict::Linearizable;
            } else {
                let Some(op) = self.backtrack() else {
                    return Verdict::Violation(deepest);
                };
                cursor = self.next[self.call_of[op]];
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
        self.lift(op);
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
        // the current one minus `op`: the calls before the first return.
        let mut node = self.next[HEAD];
        while node != TAIL && node == self.call_of[self.op_of[node]] {
            let next = self.op_of[node];
            let goes = |after: u32| self.completed[next] || after != state;
            if next != op && self.needs_unknown(next, self.state) && self.steps[next].apply(state).is_some_and(goes) {
                return true;
            }
            node = self.next[node];
        }
        false
    }

    /// Undoes the latest linearization; `None` once the path is empty.
    fn backtrack(&mut self) -> Option<usize> {
        let (op, state, after_unknown) = self.stack.pop()?;
        assert!(bit(&self.linearized, op), "a stacked op is linearized");
        self.linearized[op / 64] &= !(1 << (op % 64));
        (self.state, self.after_unknown) = (state, after_unknown);
        self.unlift(op);
        Some(op)
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

    fn record_deepest(&self, deepest: &mut Deepest) {
        let recent_from = self.stack.len().saturating_sub(EXPLANATION_RECENT_OPS_MAX);
        deepest.depth = self.stack.len();
        deepest.state = self.state;
        deepest.recent = self.stack[recent_from..].iter().map(|&(op, ..)| op).collect();
        deepest.pending.clear();
        deepest.blocking = None;
        let mut node = self.next[HEAD];
        while node != TAIL {
            let op = self.op_of[node];
            if node != self.call_of[op] {
                deepest.blocking = Some(op);
                break;
            }
            deepest.pending.push(op);
            node = self.next[node];
        }
    }

    /// The history indexes involved at the deepest point, and a sentence about them.
    fn explain(&self, deepest: &Deepest) -> (Vec<usize>, String) {
        let describe = |ops: &[usize]| {
            ops.iter()
                .map(|&op| describe_op(self.history, self.indexes[op]))
                .collect::<Vec<_>>()
        };
        let blocking = deepest
            .blocking
            .map_or_else(|| "no op".to_string(), |op| describe(&[op]).join(""));
        let explanation = format!(
            "no linearization of the key's {} ops exists: the longest consistent order places {} of them, ending \
             with [{}] and leaving the register {}; none of the pending ops [{}] can take effect next, yet {} had \
             already returned",
            self.steps.len(),
            deepest.depth,
            describe(&deepest.recent).join("; "),
            show_value(self.values[deepest.state as usize]),
            describe(&deepest.pending).join("; "),
            blocking,
        );
        let mut ops: Vec<usize> = deepest
            .recent
            .iter()
            .chain(&deepest.pending)
            .map(|&op| self.indexes[op])
            .collect();
        ops.sort_unstable();
        ops.dedup();
        assert!(!ops.is_empty() || self.steps.is_empty());
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

    /// An op on key `k` over `[call, ret]`; `ret < 0` means the outcome is unknown.
    fn op(key: &str, kind: OpKind, call: i64, ret: i64) -> Op {
        let return_ns = (ret >= 0).then_some(ret);
        Op {
            client: call as u64 % 7,
            key: key.as_bytes().to_vec(),
            kind,
            call_ns: call,
            return_ns,
        }
    }
    fn val(v: &str) -> Option<Vec<u8>> {
        (!v.is_empty()).then(|| v.as_bytes().to_vec())
    }
    fn put(v: &str) -> OpKind {
        OpKind::Put {
            value: v.as_bytes().to_vec(),
        }
    }
    /// A Get observing `v`; the empty string means the key was absent.
    fn get(v: &str) -> OpKind {
        OpKind::Get { observed: val(v) }
    }
    fn cas(expected: &str, new: &str, succeeded: bool) -> OpKind {
        OpKind::Cas {
            expected: val(expected),
            new: val(new),
            succeeded,
        }
    }
    fn linearizable(history: &[Op]) -> bool {
        match check(history) {
            CheckResult::Linearizable => true,
            CheckResult::NotLinearizable { ops, explanation, .. } => {
                assert!(!ops.is_empty() && ops.iter().all(|&i| i < history.len()), "{ops:?}");
                assert!(explanation.contains("no linearization"), "{explanation}");
                false
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sequential_puts_and_gets_pass_and_a_get_of_a_never_written_value_fails() {
        // Proves the plain register model: reads see the latest write, and a phantom value is caught.
        let mut history = vec![
            op("k", get(""), 0, 5),
            op("k", put("a"), 10, 20),
            op("k", get("a"), 30, 40),
        ];
        history.extend([op("k", put("b"), 50, 60), op("k", get("b"), 70, 80)]);
        assert!(linearizable(&history));
        history.push(op("k", get("zzz"), 90, 100));
        assert!(!linearizable(&history));
        let CheckResult::NotLinearizable { key, ops, .. } = check(&history) else {
            panic!()
        };
        assert!(key == b"k" && ops.contains(&5), "{ops:?}");
    }

    #[test]
    fn stale_read_after_two_completed_puts_is_caught() {
        // Proves a read that starts after put(2) returned cannot observe the overwritten 1.
        let history = [
            op("k", put("1"), 0, 10),
            op("k", put("2"), 20, 30),
            op("k", get("1"), 40, 50),
        ];
        assert!(!linearizable(&history));
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        // Proves an acknowledged put cannot vanish: a later read must not see the old value or absence.
        let base = [op("k", put("old"), 0, 10), op("k", put("new"), 20, 30)];
        for lost in ["old", ""] {
            let mut history = base.to_vec();
            history.push(op("k", get(lost), 40, 50));
            assert!(!linearizable(&history), "observed {lost:?}");
        }
        assert!(!linearizable(&[op("k", put("x"), 0, 10), op("k", get(""), 20, 30)]));
    }

    #[test]
    fn get_overlapping_a_put_may_observe_old_or_new() {
        // Proves concurrency is respected: an overlapping read may be ordered on either side.
        for seen in ["old", "new"] {
            let history = [
                op("k", put("old"), 0, 10),
                op("k", put("new"), 20, 40),
                op("k", get(seen), 30, 50),
            ];
            assert!(linearizable(&history), "observed {seen:?}");
        }
        // Intervals that only touch are concurrent too: equal stamps do not prove an order.
        assert!(linearizable(&[op("k", put("a"), 0, 10), op("k", get(""), 10, 20)]));
    }

    #[test]
    fn two_concurrent_cas_on_the_same_expected_value_cannot_both_succeed() {
        // Proves CAS atomicity: of two racing CAS(a -> _), exactly one may win.
        let setup = op("k", put("a"), 0, 10);
        let race = |b_wins: bool, c_wins: bool| {
            [
                setup.clone(),
                op("k", cas("a", "b", b_wins), 20, 40),
                op("k", cas("a", "c", c_wins), 25, 45),
            ]
        };
        assert!(!linearizable(&race(true, true)));
        assert!(linearizable(&race(true, false)) && linearizable(&race(false, true)));
        assert!(
            !linearizable(&race(false, false)),
            "the register held a, so one must win"
        );
        // A CAS of unknown outcome on a mismatched value is a no-op, on a matching one may win.
        let unknown = [
            setup.clone(),
            op("k", cas("a", "b", false), 20, -1),
            op("k", get("b"), 30, 40),
        ];
        assert!(linearizable(&unknown));
        let mismatched = [setup, op("k", cas("z", "b", true), 20, -1), op("k", get("b"), 30, 40)];
        assert!(!linearizable(&mismatched));
    }

    #[test]
    fn unknown_outcome_put_may_or_may_not_take_effect_but_not_flip_flop() {
        // Proves timed-out writes may land at any time after their call or never, but only once.
        let base = [op("k", put("old"), 0, 10), op("k", put("new"), 20, -1)];
        let with_reads = |seen: &[&str]| {
            let reads = seen
                .iter()
                .enumerate()
                .map(|(i, v)| op("k", get(v), 30 + 20 * i as i64, 40 + 20 * i as i64));
            base.iter().cloned().chain(reads).collect::<Vec<_>>()
        };
        for seen in [
            &["old"][..],
            &["new"],
            &["old", "old"],
            &["old", "new"],
            &["new", "new"],
        ] {
            assert!(linearizable(&with_reads(seen)), "observed {seen:?}");
        }
        assert!(!linearizable(&with_reads(&["new", "old"])));
        assert!(!linearizable(&with_reads(&["new", "old", "new"])));
        // It cannot take effect before its call.
        assert!(!linearizable(&[
            op("k", get("new"), 0, 10),
            op("k", put("new"), 20, -1)
        ]));
        // An unknown-outcome get is dropped, whatever it claims to have seen.
        assert!(linearizable(&[op("k", put("a"), 0, 10), op("k", get("zzz"), 20, -1)]));
    }

    #[test]
    fn delete_makes_the_key_absent() {
        // Proves delete semantics: after a completed delete, reads see absence until the next write.
        let history = [
            op("k", put("a"), 0, 10),
            op("k", OpKind::Delete, 20, 30),
            op("k", get(""), 40, 50),
        ];
        assert!(linearizable(&history));
        let mut stale = history.to_vec();
        stale.push(op("k", get("a"), 60, 70));
        assert!(!linearizable(&stale));
        assert!(linearizable(&[
            op("k", OpKind::Delete, 0, 10),
            op("k", cas("", "b", true), 20, 30)
        ]));
    }

    #[test]
    fn independent_keys_do_not_interfere_and_violations_name_their_key() {
        // Proves per-key partitioning: a write to one key never explains a read of another.
        let history = [
            op("a", put("1"), 0, 10),
            op("b", get(""), 20, 30),
            op("b", put("2"), 40, 50),
        ];
        assert!(linearizable(&history));
        let mut bad = history.to_vec();
        bad.push(op("a", get("2"), 60, 70));
        let CheckResult::NotLinearizable { key, ops, .. } = check(&bad) else {
            panic!("{:?}", check(&bad))
        };
        assert_eq!((key.as_slice(), ops.contains(&3)), (&b"a"[..], true));
    }

    #[test]
    fn scans_expand_into_present_and_absent_reads() {
        // Proves scan expansion: returned pairs become reads, known keys missing from the range become
        // absent reads, and a scan missing an acknowledged key is caught.
        let mut history = vec![
            op("a", put("1"), 0, 10),
            op("b", put("2"), 0, 10),
            op("d", put("4"), 0, 10),
        ];
        let pair = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let scan = |observed| Scan {
            client: 9,
            start: b"a".to_vec(),
            end: Some(b"c".to_vec()),
            observed,
            call_ns: 20,
            return_ns: Some(30),
        };
        let keys = history_keys(&history);
        let good = expand_scan(&scan(vec![pair("a", "1"), pair("b", "2")]), &keys).unwrap();
        assert_eq!(good.len(), 2, "d is outside [a, c)");
        let missing = expand_scan(&scan(vec![pair("a", "1")]), &keys).unwrap();
        assert_eq!(missing.iter().filter(|o| o.kind == get("")).count(), 1);
        history.extend(good);
        assert!(linearizable(&history));
        history.extend(missing);
        assert!(!linearizable(&history));
        let outside = expand_scan(&scan(vec![pair("d", "4")]), &keys);
        assert_eq!(outside, Err(ScanError::KeyOutsideRange { index: 0 }));
        let unsorted = expand_scan(&scan(vec![pair("b", "2"), pair("a", "1")]), &keys);
        assert_eq!(unsorted, Err(ScanError::KeysNotAscending { index: 1 }));
    }

    #[test]
    fn an_op_returning_before_its_call_is_reported_as_malformed() {
        // Proves a broken recorder is reported as such instead of as a store bug.
        let history = [op("k", put("a"), 0, 10), op("k", get("a"), 30, 20)];
        assert_eq!(
            check(&history),
            CheckResult::Malformed {
                op: 1,
                reason: "returns before it is called"
            }
        );
    }

    #[test]
    fn state_limit_returns_inconclusive_instead_of_searching_on() {
        // Proves the search is bounded: with a tiny limit it gives up rather than running on.
        let history: Vec<Op> = (0..20).map(|i| op("k", put(&i.to_string()), i, 100 + i)).collect();
        let result = check_with_limit(&history, 3);
        assert_eq!(
            result,
            CheckResult::Inconclusive {
                key: b"k".to_vec(),
                states_explored: 3
            }
        );
        assert_eq!(check(&history), CheckResult::Linearizable);
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
    /// inside an interval of up to `spread_ns` either side; so the history is linearizable.
    fn random_history(seed: u64, ops: usize, keys: u64, spread_ns: u64) -> Vec<Op> {
        let mut rng = SplitMix64(seed);
        let mut register: Vec<Option<Vec<u8>>> = vec![None; keys as usize];
        let mut fresh = 0u32;
        let mut history = Vec::with_capacity(ops);
        for i in 0..ops {
            let at = 100 * (i as i64 + 1);
            let key = rng.below(keys) as usize;
            let current = register[key].clone();
            let mut value = || Some((fresh += 1, fresh).1.to_le_bytes().to_vec());
            let (kind, mut known) = match rng.below(10) {
                0..=3 => (OpKind::Get { observed: current }, true),
                4..=5 => (
                    OpKind::Put {
                        value: value().unwrap_or_default(),
                    },
                    true,
                ),
                6 => (OpKind::Delete, true),
                7..=8 => {
                    let expected = if rng.below(2) == 0 { current.clone() } else { value() };
                    let new = if rng.below(4) == 0 { None } else { value() };
                    (
                        OpKind::Cas {
                            succeeded: expected == current,
                            expected,
                            new,
                        },
                        true,
                    )
                }
                _ => (
                    OpKind::Put {
                        value: value().unwrap_or_default(),
                    },
                    false,
                ),
            };
            // A timed-out put took effect or not; a known one always did.
            let effective = known || rng.below(2) == 0;
            match &kind {
                OpKind::Put { value } if effective => register[key] = Some(value.clone()),
                OpKind::Delete => register[key] = None,
                OpKind::Cas {
                    new, succeeded: true, ..
                } => register[key] = new.clone(),
                _ => {}
            }
            known &= rng.below(20) != 0 || matches!(kind, OpKind::Get { .. }); // some timeouts landed
            let (call, ret) = (
                at - rng.below(spread_ns + 1) as i64,
                at + rng.below(spread_ns + 1) as i64,
            );
            let k = format!("key{key}");
            history.push(Op {
                client: rng.below(10),
                key: k.into_bytes(),
                kind,
                call_ns: call,
                return_ns: known.then_some(ret),
            });
        }
        history
    }

    #[test]
    fn random_register_histories_pass_and_one_corrupted_read_fails() {
        // Proves no false alarms on many linearizable histories with overlaps and timeouts, and that
        // changing one completed read to a never-written value is always caught on its key.
        for seed in 0..300 {
            let mut history = random_history(seed, 300, 3, 400);
            assert_eq!(check(&history), CheckResult::Linearizable, "seed {seed}");
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| matches!(history[i].kind, OpKind::Get { .. }))
                .collect();
            assert!(!reads.is_empty(), "seed {seed}");
            let victim = reads[(seed as usize * 7919) % reads.len()];
            history[victim].kind = get("never written");
            let CheckResult::NotLinearizable { key, .. } = check(&history) else {
                panic!("seed {seed}")
            };
            assert_eq!(key, history[victim].key, "seed {seed}");
        }
    }

    #[test]
    fn ten_thousand_ops_and_a_hot_key_check_within_the_default_limit() {
        // Proves the target scale is tractable: 10k ops over 10 keys, and 1k ops on one key with ~10
        // concurrent ops, both finish as Linearizable without hitting the state limit.
        assert_eq!(check(&random_history(1, 10_000, 10, 1_000)), CheckResult::Linearizable);
        assert_eq!(check(&random_history(2, 1_000, 1, 500)), CheckResult::Linearizable);
    }
}
