//! The id allocator: ids for stores, regions and peers, unique across the cluster's life,
//! handed out below a durable end saved `ID_BATCH` ahead (one raft write per batch), so a
//! successor, which starts at the last saved end, never hands out an id twice.
//!
//! Owns: the next id and its durable window. Must not: persist anything itself (it says what
//! to save; the caller proposes it and reports back), or hand out an id below `IDS_FLOOR`.

use super::window::{Wait, Window};

/// Ids below this are the bootstrap layout's (regions numbered from 1, peers `region * 1000 +
/// node`); the allocator starts here.
pub const IDS_FLOOR: u64 = 1 << 32;
/// How many ids one save reserves ahead (PD: 1000).
pub const ID_BATCH: u64 = 1000;

#[derive(Debug, Clone)]
pub struct Ids {
    next: u64,
    window: Window,
}

impl Ids {
    /// A leader that read `saved_end` as the durable end (0: none yet): it starts there, as
    /// its predecessor may have handed out everything below.
    /// Whether `id` may have been handed out (by this leader or a predecessor).
    pub fn issued(&self, id: u64) -> bool {
        (IDS_FLOOR..self.next).contains(&id)
    }

    pub fn load(saved_end: u64) -> Ids {
        Ids {
            next: saved_end.max(IDS_FLOOR),
            window: Window::new(saved_end),
        }
    }

    /// The end to save now, with the one it replaces, if the window runs low.
    pub fn to_save(&mut self) -> Option<(u64, u64)> {
        self.window.to_save(self.next, ID_BATCH)
    }

    /// The save of `end` was applied (`true`) or refused or lost (`false`).
    pub fn on_saved(&mut self, end: u64, ok: bool) {
        self.window.on_saved(end, ok);
    }

    /// `count` consecutive ids; returns the first.
    pub fn take(&mut self, count: u64) -> Result<u64, Wait> {
        if count == 0 || count > ID_BATCH / 2 {
            return Err(Wait::TooMany);
        }
        if self.next + count > self.window.saved() {
            return Err(Wait::Window);
        }
        let first = self.next;
        self.next += count;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves ids start at the floor, stop at the saved end, and that a successor loading the
    // saved end starts above every id handed out before.
    #[test]
    fn ids_are_unique_across_leaders() {
        let mut old = Ids::load(0);
        assert_eq!(old.take(1), Err(Wait::Window), "nothing before the first save");
        let (prev, end) = old.to_save().unwrap();
        assert_eq!((prev, end), (0, IDS_FLOOR + ID_BATCH));
        old.on_saved(end, true);
        let mut last = 0;
        while let Ok(id) = old.take(7) {
            assert!(id >= IDS_FLOOR && id > last);
            last = id + 6;
        }
        assert!(last < end);
        let mut new = Ids::load(end);
        let (_, next_end) = new.to_save().unwrap();
        new.on_saved(next_end, true);
        assert!(new.take(1).unwrap() > last);
        assert_eq!(new.take(ID_BATCH), Err(Wait::TooMany));
    }
}
