//! The timestamp oracle's arithmetic: timestamps `physical_ms << 18 | logical`, handed out
//! only below a window whose end is durable, so that a successor (which starts past the last
//! durable end) never hands out a smaller one. After PD's `pkg/tso`: load, save ahead, serve.
//!
//! Owns: the current (physical, logical) pair and the durable window end as this leader knows
//! it. Must not: read a clock (time comes in as `now_ms`), persist anything itself (it says
//! what to save; the caller proposes it and reports back), or serve before it is loaded.

use super::window::{Wait, Window};

/// Bits of a timestamp that count within one millisecond.
pub const LOGICAL_BITS: u32 = 18;
/// Timestamps one millisecond can hand out.
pub const LOGICAL_MAX: u64 = 1 << LOGICAL_BITS;

/// The physical millisecond and the logical counter of timestamp `ts`.
pub fn split(ts: u64) -> (u64, u64) {
    (ts >> LOGICAL_BITS, ts & (LOGICAL_MAX - 1))
}

fn compose(physical_ms: u64, logical: u64) -> u64 {
    debug_assert!(logical < LOGICAL_MAX);
    physical_ms << LOGICAL_BITS | logical
}

#[derive(Debug, Clone)]
pub struct Tso {
    save_interval_ms: u64,
    /// The durable window end (ms): no timestamp at or above `compose(saved, 0)` is handed out.
    window: Window,
    physical_ms: u64,
    /// The next logical value to hand out within `physical_ms`.
    logical: u64,
}

impl Tso {
    /// A leader that read `saved_ms` as the durable window end (0: none yet). It starts past
    /// it, whatever its own clock says (a clock behind its predecessor's is not trusted).
    pub fn load(saved_ms: u64, now_ms: u64, save_interval_ms: u64) -> Tso {
        assert!(save_interval_ms > 0);
        Tso {
            save_interval_ms,
            window: Window::new(saved_ms),
            physical_ms: now_ms.max(saved_ms + 1),
            logical: 0,
        }
    }

    pub fn saved_ms(&self) -> u64 {
        self.window.saved()
    }

    /// The window end to save now, with the one it replaces (a compare-and-swap), if the
    /// current millisecond has come within half an interval of the durable end and no save
    /// is in flight.
    pub fn to_save(&mut self, now_ms: u64) -> Option<(u64, u64)> {
        self.advance(now_ms);
        self.window.to_save(self.physical_ms, self.save_interval_ms)
    }

    /// The save of `end` was applied (`true`) or refused or lost (`false`).
    pub fn on_saved(&mut self, end: u64, ok: bool) {
        self.window.on_saved(end, ok);
    }

    /// `count` consecutive timestamps; returns the first.
    pub fn take(&mut self, count: u64, now_ms: u64) -> Result<u64, Wait> {
        if count == 0 || count >= LOGICAL_MAX {
            return Err(Wait::TooMany);
        }
        self.advance(now_ms);
        if self.logical + count > LOGICAL_MAX {
            // This millisecond is spent: borrow the next one (the clock catches up).
            self.physical_ms += 1;
            self.logical = 0;
        }
        if self.physical_ms >= self.window.saved() {
            return Err(Wait::Window);
        }
        let first = compose(self.physical_ms, self.logical);
        self.logical += count;
        debug_assert!(self.logical <= LOGICAL_MAX);
        Ok(first)
    }

    /// Moves to the clock's millisecond when it is ahead (never back: a clock that jumps back
    /// keeps the current millisecond until it is passed).
    fn advance(&mut self, now_ms: u64) {
        if now_ms > self.physical_ms {
            self.physical_ms = now_ms;
            self.logical = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(saved: u64, now: u64) -> Tso {
        let mut t = Tso::load(saved, now, 3000);
        let (old, end) = t.to_save(now).expect("a fresh leader saves first");
        assert_eq!(old, saved);
        assert!(t.take(1, now).is_err(), "nothing before the first save");
        t.on_saved(end, true);
        t
    }

    // Proves timestamps strictly increase within a leader through a clock that jumps back,
    // a spent millisecond and batches, and stop at the durable window's end.
    #[test]
    fn strictly_increasing_within_the_window() {
        let mut t = loaded(0, 1_000);
        let mut last = 0;
        for (count, now) in [
            (1, 1_000),
            (5, 1_000),
            (1, 500),
            (LOGICAL_MAX - 1, 999),
            (3, 1_001),
            (1, 2_000),
        ] {
            let first = t.take(count, now).unwrap();
            assert!(first > last, "{first} after {last}");
            last = first + count - 1;
        }
        assert_eq!(t.take(1, 4_000), Err(Wait::Window));
        assert_eq!(t.take(LOGICAL_MAX, 2_000), Err(Wait::TooMany));
    }

    // Proves a successor that loads the durable end starts above every timestamp its
    // predecessor handed out, even with a clock far behind.
    #[test]
    fn a_successor_starts_past_the_saved_window() {
        let mut old = loaded(0, 10_000);
        let mut last = 0;
        for now in 10_000..12_000 {
            last = old.take(1, now).unwrap_or(last);
            if let Some((_, end)) = old.to_save(now) {
                old.on_saved(end, true);
            }
        }
        let mut new = loaded(old.saved_ms(), 3);
        assert!(new.take(1, 3).unwrap() > last);
    }

    // Proves a save is asked for once per low window, again after one is refused, and that a
    // refused save does not extend the window.
    #[test]
    fn saves_ahead_once_at_a_time() {
        let mut t = loaded(0, 1_000);
        assert_eq!(t.to_save(1_000), None, "a full window is not saved again");
        let (old, end) = t.to_save(3_000).expect("half the window left");
        assert_eq!((old, end), (4_000, 6_000));
        assert_eq!(t.to_save(3_001), None, "one save in flight");
        t.on_saved(end, false);
        assert_eq!(t.saved_ms(), 4_000);
        assert!(t.to_save(3_002).is_some());
    }
}
