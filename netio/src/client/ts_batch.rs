//! Batching of concurrent timestamp requests (TiKV's client does the same): while
//! `ts_requests_in_flight_max` requests for timestamps are in flight, later callers queue; when
//! one returns, the queued callers go out as ONE request for the sum of their counts, sent by
//! the first of them (the driver), who hands each its share of the range. Requests in flight
//! together are concurrent: each caller's timestamp is above every one handed out before its
//! call began, whichever request carried it.
//!
//! Owns: the queue of waiting callers (at most `TS_BATCH_MAX` timestamps a request) and the
//! hand-over of the driver's role, also when a driver is cancelled mid-request (its guard hands
//! everyone it carried to a new driver). Must not: talk to the network (`Client::get_ts_once`
//! does), or leave a caller waiting with no driver.

use std::cell::RefCell;
use std::collections::VecDeque;

use futures_channel::oneshot;

use crate::error::Result;

/// Timestamps one request may ask for (the server's limit: one millisecond's logical range).
pub const TS_BATCH_MAX: u64 = (1 << 18) - 1;

/// A waiting caller: how many timestamps it wants, where its turn comes.
pub(super) type Waiter = (u32, oneshot::Sender<Turn>);

/// What a waiting caller is told.
pub(super) enum Turn {
    /// Its timestamps (the first of its `count`), or why none came.
    Done(Result<u64>),
    /// It sends the next request: for itself and for these callers.
    Drive(Vec<Waiter>),
}

/// Whether the caller sends now or waits for its turn.
pub(super) enum Join {
    Drive,
    Wait(oneshot::Receiver<Turn>),
}

#[derive(Default)]
pub(super) struct TsBatcher {
    /// Requests in flight (each a driver's).
    in_flight: usize,
    waiting: VecDeque<Waiter>,
}

impl TsBatcher {
    /// A caller of `count` timestamps joins: it drives a request of its own while fewer than
    /// `in_flight_max` are in flight, else it waits for a returning driver to pass it on.
    pub(super) fn join(&mut self, count: u32, in_flight_max: usize) -> Join {
        if self.in_flight < in_flight_max.max(1) {
            debug_assert!(self.waiting.is_empty(), "callers wait only while every slot is taken");
            self.in_flight += 1;
            return Join::Drive;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.push_back((count, tx));
        Join::Wait(rx)
    }

    /// A driver's request is over: `carried` (callers it did not serve, when it was
    /// cancelled) and the queue go to the first caller still waiting, as much as one request
    /// holds, with the driver's slot; the rest wait for the next turn. Nobody left: the slot
    /// is free.
    pub(super) fn hand_over(&mut self, carried: Vec<Waiter>) {
        for waiter in carried.into_iter().rev() {
            self.waiting.push_front(waiter);
        }
        while let Some((count, tx)) = self.waiting.pop_front() {
            let mut total = u64::from(count);
            let mut batch = Vec::new();
            while let Some(&(next, _)) = self.waiting.front() {
                if total + u64::from(next) > TS_BATCH_MAX {
                    break;
                }
                total += u64::from(next);
                batch.extend(self.waiting.pop_front());
            }
            match tx.send(Turn::Drive(batch)) {
                Ok(()) => return,
                // That caller is gone: its batch goes back to the queue for the next one.
                Err(Turn::Drive(batch)) => {
                    for waiter in batch.into_iter().rev() {
                        self.waiting.push_front(waiter);
                    }
                }
                Err(Turn::Done(_)) => unreachable!("sent a Drive"),
            }
        }
        debug_assert!(self.in_flight > 0, "a request over that was never counted");
        self.in_flight -= 1;
    }
}

/// A caller waiting for its turn. Dropped after its turn to drive came but before it took it
/// (its future cancelled), it hands that turn, with the slot and the batch, to the next caller.
pub(super) struct Waiting<'a> {
    batcher: &'a RefCell<TsBatcher>,
    rx: oneshot::Receiver<Turn>,
}

impl<'a> Waiting<'a> {
    pub(super) fn new(batcher: &'a RefCell<TsBatcher>, rx: oneshot::Receiver<Turn>) -> Waiting<'a> {
        Waiting { batcher, rx }
    }

    pub(super) async fn turn(mut self) -> std::result::Result<Turn, oneshot::Canceled> {
        (&mut self.rx).await
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Some(Turn::Drive(batch))) = self.rx.try_recv() {
            drop(Driving::new(self.batcher, batch));
        }
    }
}

/// The driver's duty, kept even if its future is dropped mid-request: on drop, whoever it
/// still carries and the queue get a new driver.
pub(super) struct Driving<'a> {
    batcher: &'a RefCell<TsBatcher>,
    batch: Vec<Waiter>,
}

impl<'a> Driving<'a> {
    pub(super) fn new(batcher: &'a RefCell<TsBatcher>, batch: Vec<Waiter>) -> Driving<'a> {
        Driving { batcher, batch }
    }

    /// The timestamps the request asks for: the driver's `count` and its batch's.
    pub(super) fn total(&self, count: u32) -> u32 {
        let total = u64::from(count) + self.batch.iter().map(|(c, _)| u64::from(*c)).sum::<u64>();
        debug_assert!(total <= TS_BATCH_MAX.max(u64::from(count)));
        total as u32
    }

    /// Hands each carried caller its share of the range that starts at `first` (the driver
    /// took the first `count`), or the error.
    pub(super) fn settle(&mut self, count: u32, result: &Result<u64>) {
        let mut next = result.as_ref().map(|first| first + u64::from(count));
        for (c, tx) in self.batch.drain(..) {
            let share = match &next {
                Ok(first) => Ok(*first),
                Err(e) => Err(e.duplicate()),
            };
            let _ = tx.send(Turn::Done(share)); // a caller that is gone wanted nothing
            if let Ok(first) = next.as_mut() {
                *first += u64::from(c);
            }
        }
    }
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        let carried = std::mem::take(&mut self.batch);
        self.batcher.borrow_mut().hand_over(carried);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(batcher: &mut TsBatcher, count: u32) -> oneshot::Receiver<Turn> {
        match batcher.join(count, 1) {
            Join::Wait(rx) => rx,
            Join::Drive => panic!("should wait"),
        }
    }

    // Proves the first caller drives, later ones queue and are handed over as one batch within
    // the request limit, a gone caller is skipped, and the batcher goes idle when nobody waits.
    #[test]
    fn callers_queue_and_the_role_is_handed_on() {
        let mut b = TsBatcher::default();
        assert!(matches!(b.join(1, 1), Join::Drive));
        let mut gone = waiting(&mut b, 5);
        gone.close();
        drop(gone);
        let mut next = waiting(&mut b, 2);
        let mut rest = waiting(&mut b, 3);
        let mut big = waiting(&mut b, TS_BATCH_MAX as u32);
        b.hand_over(Vec::new());
        let Ok(Some(Turn::Drive(batch))) = next.try_recv() else {
            panic!("caller 2 drives")
        };
        assert_eq!(batch.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [3]);
        assert!(matches!(rest.try_recv(), Ok(None)), "carried by caller 2, not told yet");
        drop(batch);
        b.hand_over(Vec::new());
        assert!(matches!(big.try_recv(), Ok(Some(Turn::Drive(v))) if v.is_empty()));
        b.hand_over(Vec::new());
        assert!(matches!(b.join(1, 1), Join::Drive), "idle again");
    }

    // Proves two requests go out at once when two may be in flight: the second caller drives
    // too, the third waits, and the slot a returning driver frees goes to it.
    #[test]
    fn callers_drive_while_a_slot_is_free() {
        let mut b = TsBatcher::default();
        assert!(matches!(b.join(1, 2), Join::Drive));
        assert!(matches!(b.join(1, 2), Join::Drive));
        let mut third = match b.join(1, 2) {
            Join::Wait(rx) => rx,
            Join::Drive => panic!("both slots are taken"),
        };
        b.hand_over(Vec::new());
        assert!(matches!(third.try_recv(), Ok(Some(Turn::Drive(v))) if v.is_empty()));
        b.hand_over(Vec::new());
        assert!(matches!(b.join(1, 2), Join::Drive), "a slot is free again");
        assert!(matches!(b.join(1, 2), Join::Wait(_)), "the other is still taken");
    }

    // Proves a batch's shares are consecutive and each caller gets the start of its own.
    #[test]
    fn shares_are_consecutive() {
        let batcher = RefCell::new(TsBatcher::default());
        assert!(matches!(batcher.borrow_mut().join(1, 1), Join::Drive));
        let (tx_a, mut rx_a) = oneshot::channel();
        let (tx_b, mut rx_b) = oneshot::channel();
        let mut driving = Driving::new(&batcher, vec![(2, tx_a), (3, tx_b)]);
        assert_eq!(driving.total(1), 6);
        driving.settle(1, &Ok(100));
        assert!(matches!(rx_a.try_recv(), Ok(Some(Turn::Done(Ok(101))))));
        assert!(matches!(rx_b.try_recv(), Ok(Some(Turn::Done(Ok(103))))));
    }

    // Proves a caller that goes away after its turn to drive came, before it took it, hands
    // the turn on with the callers it was to carry: nobody is left waiting with no driver.
    #[test]
    fn a_driver_gone_before_its_turn_hands_it_on() {
        let batcher = RefCell::new(TsBatcher::default());
        assert!(matches!(batcher.borrow_mut().join(1, 1), Join::Drive));
        let gone = Waiting::new(&batcher, waiting(&mut batcher.borrow_mut(), 1));
        let mut next = waiting(&mut batcher.borrow_mut(), 1);
        batcher.borrow_mut().hand_over(Vec::new()); // `gone` is to drive, carrying `next`
        assert!(matches!(next.try_recv(), Ok(None)));
        drop(gone);
        assert!(matches!(next.try_recv(), Ok(Some(Turn::Drive(v))) if v.is_empty()));
        batcher.borrow_mut().hand_over(Vec::new());
        assert!(
            matches!(batcher.borrow_mut().join(1, 1), Join::Drive),
            "the slot is free again"
        );
    }
}
