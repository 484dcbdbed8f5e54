//! A durable upper bound: what the placement service hands out (timestamps, ids) stays below
//! an end saved through the system region, saved ahead of use so that a successor, which
//! starts at the last saved end, never hands out anything twice.
//!
//! Owns: the saved end as this leader knows it and the one save in flight. Must not: persist
//! anything itself (it says what to save; the caller proposes it and reports back).

/// Why a request cannot be served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Its answer would reach the durable end: wait for the next save.
    Window,
    /// More than one request may ask for at once.
    TooMany,
}

#[derive(Debug, Clone)]
pub struct Window {
    saved: u64,
    /// An end being saved (proposed, not yet applied).
    saving: Option<u64>,
}

impl Window {
    /// A window whose durable end was read as `saved` (0: none yet).
    pub fn new(saved: u64) -> Window {
        Window { saved, saving: None }
    }

    /// Nothing at or above this is handed out.
    pub fn saved(&self) -> u64 {
        self.saved
    }

    /// The end to save now, with the one it replaces (a compare-and-swap), if `used` has come
    /// within half of `ahead` of the saved end and no save is in flight.
    pub fn to_save(&mut self, used: u64, ahead: u64) -> Option<(u64, u64)> {
        let low = self.saved.saturating_sub(used) < ahead / 2 + 1;
        if !low || self.saving.is_some() {
            return None;
        }
        let end = used + ahead;
        self.saving = Some(end);
        Some((self.saved, end))
    }

    /// The save of `end` was applied (`true`) or refused or lost (`false`).
    pub fn on_saved(&mut self, end: u64, ok: bool) {
        if self.saving == Some(end) {
            self.saving = None;
        }
        if ok {
            assert!(end > self.saved, "a saved end only grows");
            self.saved = end;
        }
    }
}
