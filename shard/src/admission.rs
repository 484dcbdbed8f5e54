//! Admission of connections: how many a node holds, and how many one client address holds.
//!
//! Owns: the node-wide counts (shared by the node's shards; touched once per accept and once
//! per close, never per request) and the `Admitted` guard that gives a connection's place back
//! when dropped. Must not: read frames (a refused connection is told why and closed at once).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The node's open connections against its limits.
pub struct Admission {
    total: AtomicUsize,
    total_max: usize,
    /// Client-port connections per remote address (peers are bounded by membership instead).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_ip_max: usize,
}

/// A connection's place; given back on drop.
pub struct Admitted {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Admission {
    pub fn new(total_max: usize, per_ip_max: usize) -> Arc<Admission> {
        assert!(total_max > 0 && per_ip_max > 0, "limits are at least 1");
        Arc::new(Admission {
            total: AtomicUsize::new(0),
            total_max,
            per_ip: Mutex::new(HashMap::new()),
            per_ip_max,
        })
    }

    /// A place for a connection from `ip` (counted per address when `per_ip`), or why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, per_ip: bool) -> Result<Admitted, String> {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        // Dropped on a refusal: the place is given back.
        let mut guard = Admitted {
            admission: Arc::clone(self),
            ip: None,
        };
        if total > self.total_max {
            return Err(format!("this node holds its maximum of {} connections", self.total_max));
        }
        if !per_ip {
            return Ok(guard);
        }
        let mut counts = self.per_ip.lock().expect("admission lock");
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.per_ip_max {
            return Err(format!(
                "{ip} holds its maximum of {} connections to this node",
                self.per_ip_max
            ));
        }
        *count += 1;
        guard.ip = Some(ip);
        Ok(guard)
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Admitted({:?})", self.ip)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let before = self.admission.total.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "a place given back twice");
        let Some(ip) = self.ip else { return };
        let mut counts = self.admission.per_ip.lock().expect("admission lock");
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves both limits: the per-address one for client connections only, the node-wide one
    // for all, and that dropping a place (refused ones too) gives it back.
    #[test]
    fn limits_count_and_give_back() {
        let a = Admission::new(3, 2);
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = a.admit(x, true).unwrap();
        let _second = a.admit(x, true).unwrap();
        assert!(a.admit(x, true).unwrap_err().contains("10.0.0.1"));
        assert_eq!(a.open(), 2, "a refusal gives its place back");
        let _peer = a.admit(x, false).unwrap();
        assert!(a.admit(y, true).unwrap_err().contains("maximum of 3"));
        drop(first);
        let _third = a.admit(y, true).unwrap();
        assert_eq!(a.open(), 3);
    }
}
