//! [`Aimd`]: how many invocations a backend keeps in flight when its service
//! throttles. Additive increase, multiplicative decrease, as TCP does with a
//! congestion window: a throttle (Lambda's 429) halves the limit, at most once
//! per congestion event; every success grows it by `step / limit`, so about
//! `step` per round of `limit` invocations, until it is back at the maximum.
//!
//! One limiter per backend, not per stage: a function's concurrency is shared
//! by every stage and job that invokes it, so that is where the limit belongs.
//! A throttled invocation gives its slot back before it backs off and takes one
//! again before it retries, so the limit bounds what is offered to Lambda, not
//! only what runs.

use std::sync::Mutex;

use tokio::sync::Notify;

/// The limiter's figures, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FlowStats {
    /// Invocations allowed in flight now.
    pub limit: usize,
    /// The most it ever allows (the configured concurrency).
    pub max: usize,
    pub in_flight: usize,
    /// The lowest the limit has been.
    pub lowest: usize,
    /// Throttles seen, and how many of them lowered the limit.
    pub throttles: u64,
    pub decreases: u64,
}

#[derive(Debug)]
pub struct Aimd {
    state: Mutex<State>,
    changed: Notify,
    max: usize,
    floor: usize,
    step: f64,
}

#[derive(Debug)]
struct State {
    limit: f64,
    lowest: f64,
    in_flight: usize,
    /// Bumped at each decrease: a throttle of an invocation that started in an
    /// earlier epoch belongs to a congestion event already answered.
    epoch: u64,
    throttles: u64,
    decreases: u64,
}

/// One invocation's place in flight; given back when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    aimd: &'a Aimd,
    epoch: u64,
}

impl Aimd {
    /// At most `max` in flight (at least 1). The limit never falls below a
    /// tenth of `max` (between 1 and 10), and grows back by about a twentieth
    /// of `max` per round.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            state: Mutex::new(State {
                limit: max as f64,
                lowest: max as f64,
                in_flight: 0,
                epoch: 0,
                throttles: 0,
                decreases: 0,
            }),
            changed: Notify::new(),
            max,
            floor: (max / 10).clamp(1, 10),
            step: (max as f64 / 20.0).max(1.0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until fewer than the limit are in flight, and takes a slot.
    pub async fn acquire(&self) -> Slot<'_> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state();
                if (state.in_flight as f64) < state.limit.floor() {
                    state.in_flight += 1;
                    return Slot {
                        aimd: self,
                        epoch: state.epoch,
                    };
                }
            }
            changed.await;
        }
    }

    pub fn stats(&self) -> FlowStats {
        let state = self.state();
        FlowStats {
            limit: state.limit.floor() as usize,
            max: self.max,
            in_flight: state.in_flight,
            lowest: state.lowest.floor() as usize,
            throttles: state.throttles,
            decreases: state.decreases,
        }
    }
}

impl Slot<'_> {
    /// The invocation was throttled: halve the limit unless this congestion
    /// event already did, and give the slot back (the caller backs off).
    pub fn throttled(self) {
        let aimd = self.aimd;
        let mut state = aimd.state();
        state.throttles += 1;
        if self.epoch == state.epoch {
            state.limit = (state.limit / 2.0).max(aimd.floor as f64);
            state.lowest = state.lowest.min(state.limit);
            state.epoch += 1;
            state.decreases += 1;
            tracing::info!(
                limit = state.limit.floor() as usize,
                "throttled: invocations in flight limited"
            );
        }
        // Dropping `self` gives the slot back.
    }

    /// The invocation got through: grow the limit a little.
    pub fn succeeded(self) {
        let aimd = self.aimd;
        let mut state = aimd.state();
        state.limit = (state.limit + aimd.step / state.limit.max(1.0)).min(aimd.max as f64);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.aimd.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        drop(state);
        self.aimd.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_throttle_halves_once_per_event_and_successes_grow_it_back() {
        let aimd = Aimd::new(40);
        let slots: Vec<Slot> = futures::future::join_all((0..40).map(|_| aimd.acquire())).await;
        assert_eq!(aimd.stats().in_flight, 40);
        // The 41st waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), aimd.acquire())
                .await
                .is_err()
        );
        // Ten throttles of one burst: one decrease.
        let mut slots = slots.into_iter();
        for slot in slots.by_ref().take(10) {
            slot.throttled();
        }
        let stats = aimd.stats();
        assert_eq!((stats.limit, stats.throttles, stats.decreases), (20, 10, 1));
        assert_eq!(stats.in_flight, 30);
        // Nothing starts while 20 or more are in flight.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), aimd.acquire())
                .await
                .is_err()
        );
        for slot in slots {
            slot.succeeded();
        }
        assert_eq!(aimd.stats().in_flight, 0);
        // A throttle of a new invocation is a new event; the floor holds.
        for _ in 0..10 {
            aimd.acquire().await.throttled();
        }
        let stats = aimd.stats();
        assert_eq!(stats.limit, 4, "the floor is a tenth of 40");
        assert_eq!(stats.lowest, 4);
        // Successes grow it back, to the maximum and no further.
        for _ in 0..2000 {
            aimd.acquire().await.succeeded();
        }
        assert_eq!(aimd.stats().limit, 40);
        assert_eq!(aimd.stats().in_flight, 0);
    }
}
