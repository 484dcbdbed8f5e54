//! What clients of the TSO may rely on, as a check over a recorded history: every timestamp is
//! handed out once, and a request that began after another returned gets larger timestamps
//! (real-time order, whichever leader served each).
//!
//! Owns: the history format of timestamp requests ([`TsOp`]) and [`check_timestamps`].
//! Must not: read clocks or do I/O; it judges what a simulator or a test harness recorded.

/// One client request for timestamps, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsOp {
    pub client: u64,
    pub count: u64,
    pub call_ns: i64,
    /// `None`: no answer (gave up); such a request constrains nothing.
    pub return_ns: Option<i64>,
    /// The first timestamp of the answer (it holds `count` consecutive ones).
    pub first: Option<u64>,
}

impl TsOp {
    /// The answered range `[first, end)` and the return time.
    fn answered(&self) -> Option<(u64, u64, i64)> {
        Some((self.first?, self.first? + self.count, self.return_ns?))
    }
}

/// `Err` names the first two requests that break the contract.
pub fn check_timestamps(history: &[TsOp]) -> Result<(), String> {
    let mut answered: Vec<(u64, u64, i64, &TsOp)> = (history.iter())
        .filter_map(|op| op.answered().map(|(first, end, ret)| (first, end, ret, op)))
        .collect();
    answered.sort_by_key(|a| a.0);
    for pair in answered.windows(2) {
        let ((_, end_a, _, a), (first_b, _, _, b)) = (pair[0], pair[1]);
        if end_a > first_b {
            return Err(format!("timestamps handed out twice: {a:?} and {b:?}"));
        }
    }
    // In timestamp order, every request must have been called before all later-numbered
    // ones returned: track the earliest return among the larger timestamps, from the top.
    let mut earliest_return_above: Option<(i64, &TsOp)> = None;
    for &(_, _, ret, op) in answered.iter().rev() {
        if let Some((later_ret, later)) = earliest_return_above {
            if later_ret < op.call_ns {
                return Err(format!(
                    "{later:?} returned before {op:?} was called, with larger timestamps"
                ));
            }
        }
        if earliest_return_above.is_none_or(|(r, _)| ret < r) {
            earliest_return_above = Some((ret, op));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(first: u64, count: u64, call_ns: i64, return_ns: i64) -> TsOp {
        TsOp {
            client: 1,
            count,
            call_ns,
            return_ns: Some(return_ns),
            first: Some(first),
        }
    }

    // Proves concurrent requests may be answered in either order, unanswered ones are ignored,
    // and sequential ones must increase.
    #[test]
    fn real_time_order_and_uniqueness_are_checked() {
        let concurrent = [op(20, 1, 0, 10), op(10, 5, 5, 15)];
        assert_eq!(check_timestamps(&concurrent), Ok(()));
        let lost = TsOp {
            return_ns: None,
            first: None,
            ..op(0, 1, 0, 0)
        };
        assert_eq!(check_timestamps(&[op(1, 1, 0, 1), lost, op(2, 1, 2, 3)]), Ok(()));
        let backwards = [op(20, 1, 0, 10), op(10, 1, 11, 12)];
        assert!(check_timestamps(&backwards).unwrap_err().contains("returned before"));
        let twice = [op(10, 5, 0, 10), op(14, 1, 11, 12)];
        assert!(check_timestamps(&twice).unwrap_err().contains("twice"));
    }
}
