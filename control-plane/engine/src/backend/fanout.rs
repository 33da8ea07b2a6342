//! Invocations spread over several identical functions, within each one's
//! scaling budget.
//!
//! Lambda lets one function gain at most 1,000 new execution environments
//! every 10 seconds (its concurrency scaling rate), so 10,000 cold workers
//! take at least 90 s from one function. The stack in `infra/` can deploy N
//! copies (`FunctionCount`: `NAME`, `NAME-2`, … `NAME-N`), and [`Fanout`]
//! spreads invocations over them: an invocation goes to a function with an
//! idle environment (one that answered and is likely still warm) if any,
//! else to the function with the most budget for a new environment (a token
//! bucket of `new_per_10s` tokens, refilled at that rate), else waits for
//! the first token due. It sits under the AIMD in-flight limit (`aimd`):
//! that one bounds invocations in flight, this one how fast they may grow.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::time::Instant;

use tokio::sync::Notify;

/// Lambda's scaling rate: new environments a function gains per 10 s.
pub const NEW_ENVIRONMENTS_PER_10S: u32 = 1000;

/// How long an environment that answered is taken to stay warm.
const WARM_FOR: Duration = Duration::from_secs(300);

/// The functions invocations are spread over, and each one's state.
#[derive(Debug)]
pub struct Fanout {
    names: Vec<String>,
    new_per_10s: f64,
    state: Mutex<Vec<Function>>,
    /// Told when an invocation ends (an environment is idle again).
    freed: Notify,
}

#[derive(Debug)]
struct Function {
    in_flight: usize,
    /// Environments it has started that are likely still there.
    environments: usize,
    /// Budget for new environments, and when it was last refilled.
    tokens: f64,
    refilled: Instant,
    /// When it last had nothing in flight.
    idle_since: Instant,
}

/// One invocation's function, held while it runs.
#[derive(Debug)]
pub struct FunctionSlot {
    fanout: Arc<Fanout>,
    index: usize,
}

impl FunctionSlot {
    pub fn name(&self) -> &str {
        &self.fanout.names[self.index]
    }
}

impl Drop for FunctionSlot {
    fn drop(&mut self) {
        self.fanout.release(self.index, Instant::now());
        self.fanout.freed.notify_waiters();
    }
}

/// What the functions have at one moment (for tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionLoad {
    pub in_flight: usize,
    pub environments: usize,
}

impl Fanout {
    /// `names`, each gaining at most `new_per_10s` environments per 10 s
    /// (a full budget to start with).
    pub fn new(names: Vec<String>, new_per_10s: u32) -> Self {
        let now = Instant::now();
        let rate = f64::from(new_per_10s.max(1));
        let state = names
            .iter()
            .map(|_| Function {
                in_flight: 0,
                environments: 0,
                tokens: rate,
                refilled: now,
                idle_since: now,
            })
            .collect();
        Self {
            names,
            new_per_10s: rate,
            state: Mutex::new(state),
            freed: Notify::new(),
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn load(&self) -> Vec<FunctionLoad> {
        self.lock()
            .iter()
            .map(|f| FunctionLoad {
                in_flight: f.in_flight,
                environments: f.environments,
            })
            .collect()
    }

    /// Environments started and idle now (those idle for minutes taken to
    /// be gone).
    pub fn idle(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|f| f.in_flight > 0 || now.saturating_duration_since(f.idle_since) < WARM_FOR)
            .map(|f| f.environments.saturating_sub(f.in_flight))
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Function>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A function for one invocation: waits while every function is busy
    /// and out of budget for a new environment.
    pub async fn acquire(self: &Arc<Self>) -> FunctionSlot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let wait = match self.try_acquire(Instant::now()) {
                Ok(index) => {
                    return FunctionSlot {
                        fanout: self.clone(),
                        index,
                    };
                }
                Err(wait) => wait,
            };
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// An invocation of function `index` ended at `now`.
    fn release(&self, index: usize, now: Instant) {
        let mut state = self.lock();
        let function = &mut state[index];
        function.in_flight = function.in_flight.saturating_sub(1);
        if function.in_flight == 0 {
            function.idle_since = now;
        }
    }

    /// The function an invocation goes to at `now`, or how long until a
    /// token is due.
    fn try_acquire(&self, now: Instant) -> Result<usize, Duration> {
        let per_second = self.new_per_10s / 10.0;
        let mut state = self.lock();
        for f in state.iter_mut() {
            let elapsed = now.saturating_duration_since(f.refilled).as_secs_f64();
            f.tokens = (f.tokens + elapsed * per_second).min(self.new_per_10s);
            f.refilled = now;
            // Environments idle that long are taken to be gone.
            if f.in_flight == 0 && now.saturating_duration_since(f.idle_since) >= WARM_FOR {
                f.environments = 0;
            }
        }
        // An idle environment first: the least loaded function with one.
        let warm = (0..state.len())
            .filter(|&i| state[i].in_flight < state[i].environments)
            .min_by_key(|&i| state[i].in_flight);
        if let Some(i) = warm {
            state[i].in_flight += 1;
            return Ok(i);
        }
        // Else a new environment where the budget is largest.
        let budget = (0..state.len())
            .filter(|&i| state[i].tokens >= 1.0)
            .max_by(|&a, &b| state[a].tokens.total_cmp(&state[b].tokens));
        if let Some(i) = budget {
            let f = &mut state[i];
            f.tokens -= 1.0;
            f.in_flight += 1;
            f.environments += 1;
            return Ok(i);
        }
        let most = state.iter().map(|f| f.tokens).fold(0.0f64, |a, b| a.max(b));
        Err(Duration::from_secs_f64(
            ((1.0 - most) / per_second).max(0.001),
        ))
    }
}

/// The names of `count` functions deployed as `infra/` deploys them:
/// `name`, then `name-2` … `name-{count}`.
pub fn function_names(name: &str, count: usize) -> Vec<String> {
    (1..=count.max(1))
        .map(|i| {
            if i == 1 {
                name.to_string()
            } else {
                format!("{name}-{i}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `n` invocations at `at`, each as soon as one may go (moving
    /// `at` on by the waits); returns their functions.
    fn take(fanout: &Fanout, n: usize, at: &mut Instant) -> Vec<usize> {
        (0..n)
            .map(|_| {
                loop {
                    match fanout.try_acquire(*at) {
                        Ok(i) => break i,
                        Err(wait) => *at += wait,
                    }
                }
            })
            .collect()
    }

    #[test]
    fn new_environments_spread_over_functions_within_their_budgets() {
        let start = Instant::now();
        let fanout = Fanout::new(function_names("f", 3), 2);
        assert_eq!(fanout.names(), ["f", "f-2", "f-3"]);
        let mut at = start;
        let mut taken = take(&fanout, 6, &mut at);
        assert_eq!(at, start);
        taken.sort_unstable();
        assert_eq!(taken, [0, 0, 1, 1, 2, 2]);
        let load = fanout.load();
        assert!(
            load.iter().all(|l| l.in_flight == 2 && l.environments == 2),
            "{load:?}"
        );
        // Every budget spent: the seventh waits for a token (2 per 10 s:
        // one every 5 s).
        take(&fanout, 1, &mut at);
        let waited = at.duration_since(start).as_secs_f64();
        assert!((waited - 5.0).abs() < 0.01, "{waited}");
        // An environment that answered is reused at once, on its function.
        fanout.release(1, at);
        assert_eq!(fanout.idle(), 1);
        assert_eq!(take(&fanout, 1, &mut at), [1]);
        assert!((at.duration_since(start).as_secs_f64() - waited).abs() < 1e-9);
        assert_eq!(fanout.load()[1].environments, 2);
    }

    #[test]
    fn one_function_takes_ninety_seconds_to_ten_thousand_ten_take_none() {
        for (functions, took) in [(1, 90.0), (10, 0.0)] {
            let start = Instant::now();
            let fanout = Fanout::new(function_names("f", functions), NEW_ENVIRONMENTS_PER_10S);
            let mut at = start;
            take(&fanout, 10_000, &mut at);
            let elapsed = at.duration_since(start).as_secs_f64();
            assert!((elapsed - took).abs() < 0.5, "{functions}: {elapsed} s");
        }
    }

    #[test]
    fn environments_idle_for_minutes_are_gone() {
        let start = Instant::now();
        let fanout = Fanout::new(function_names("f", 1), 1);
        let mut at = start;
        take(&fanout, 1, &mut at);
        fanout.release(0, at);
        assert_eq!(fanout.load()[0].environments, 1);
        at += WARM_FOR;
        take(&fanout, 1, &mut at);
        // A new one, from the refilled budget.
        assert_eq!(fanout.load()[0].environments, 1);
        assert_eq!(fanout.load()[0].in_flight, 1);
    }
}
