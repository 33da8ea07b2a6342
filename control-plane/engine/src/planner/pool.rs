//! Where planning runs: a few threads of their own, each with a large stack
//! ([`PLANNING_STACK_BYTES`]), so a query that is deep but within the bounds of
//! `guard` is planned and dropped without touching the stacks of the
//! threads that serve HTTP or run tasks; at most [`PlanningLimits::concurrency`]
//! at once, at most [`PlanningLimits::queue`] waiting (then
//! [`SquallError::PlanningBusy`]); each within [`PlanningLimits::time`]
//! (then [`SquallError::PlanningTimedOut`]).
//!
//! # What belongs here
//! [`PlanningPool`] and its limits, and [`PlanBudget`], what a planning run
//! checks (the optimizer rules of `guard` and every function call while
//! constant folding) to stop once its time is spent or its caller gave up.
//! A planning run whose caller stopped waiting keeps its thread until it
//! reaches the next check; the pool's slot is held until then, so abandoned
//! runs never add up past the concurrency.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datafusion::common::{DataFusionError, Result as DfResult};
use squall_executor::bounds::CallBudget;
use tokio::sync::Semaphore;

use crate::error::{Result, SquallError};

/// Stack of each planning thread. Planning a statement at the bounds of
/// `guard` takes a few MiB on a debug build; the rest is margin (only the
/// pages used are ever committed).
pub const PLANNING_STACK_BYTES: usize = 64 << 20;

/// How much planning one engine does at once, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanningLimits {
    /// Longest one job's planning may take (listing its tables included).
    pub time: Duration,
    /// Jobs planned at once (one thread each).
    pub concurrency: usize,
    /// Jobs waiting to be planned at most; more are refused.
    pub queue: usize,
}

impl Default for PlanningLimits {
    fn default() -> Self {
        Self {
            time: Duration::from_secs(60),
            concurrency: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 8),
            queue: 64,
        }
    }
}

/// The planning threads.
pub struct PlanningPool {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    limits: PlanningLimits,
}

impl std::fmt::Debug for PlanningPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanningPool")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Drop for PlanningPool {
    fn drop(&mut self) {
        // Dropped on a runtime thread maybe: never block it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PlanningPool {
    pub fn new(limits: PlanningLimits) -> Result<Self> {
        if limits.concurrency == 0 || limits.time.is_zero() {
            return Err(SquallError::InvalidArgument(
                "planning needs at least one thread and a time limit above zero".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.concurrency)
            .thread_stack_size(PLANNING_STACK_BYTES)
            .thread_name("squall-plan")
            .enable_all()
            .build()
            .map_err(|source| SquallError::Io {
                context: "cannot start the planning threads".into(),
                source,
            })?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            permits: Arc::new(Semaphore::new(limits.concurrency)),
            waiting: AtomicUsize::new(0),
            limits,
        })
    }

    pub fn limits(&self) -> PlanningLimits {
        self.limits
    }

    /// Runs `plan` (given the run's budget) on a planning thread and returns
    /// what it returns, or an error once the time limit passes.
    pub async fn run<T, F>(&self, plan: impl FnOnce(Arc<PlanBudget>) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let permit = {
            let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
            let _queued = Queued(&self.waiting);
            if waiting >= self.limits.queue {
                return Err(SquallError::PlanningBusy {
                    waiting,
                    planning: self.limits.concurrency,
                });
            }
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SquallError::Closed {
                    what: "the planning threads",
                })?
        };
        let budget = PlanBudget::new(self.limits.time);
        let run = plan(budget.clone());
        let task = self.handle.spawn(async move {
            // The slot is free only once the run has stopped.
            let _permit = permit;
            run.await
        });
        let limit = self.limits.time;
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Err(_))) if budget.spent() => Err(SquallError::PlanningTimedOut { limit }),
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(SquallError::Panicked {
                message: format!("planning: {join}"),
            }),
            Err(_) => {
                budget.abandon();
                Err(SquallError::PlanningTimedOut { limit })
            }
        }
    }
}

/// Counts a caller waiting for a planning slot while it exists.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one planning run may still spend: until its deadline, unless its
/// caller abandons it first.
#[derive(Debug)]
pub struct PlanBudget {
    deadline: Option<Instant>,
    limit: Duration,
    abandoned: AtomicBool,
    /// Why the query cannot run: a function call that would fail in any
    /// executor, met while folding constants (where errors are swallowed).
    hopeless: std::sync::Mutex<Option<String>>,
}

impl PlanBudget {
    /// A budget of `limit` from now.
    pub fn new(limit: Duration) -> Arc<Self> {
        Arc::new(Self {
            deadline: Instant::now().checked_add(limit),
            limit,
            abandoned: AtomicBool::new(false),
            hopeless: Default::default(),
        })
    }

    /// No time limit (planning outside a pool, e.g. `squall plan`).
    pub fn unlimited() -> Arc<Self> {
        Arc::new(Self {
            deadline: None,
            limit: Duration::MAX,
            abandoned: AtomicBool::new(false),
            hopeless: Default::default(),
        })
    }

    /// Stops the run at its next check.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
    }

    /// Whether the run is past its deadline or abandoned.
    pub fn spent(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// An error once the budget is spent, or the query was found hopeless.
    pub fn check(&self) -> DfResult<()> {
        if let Some(why) = self
            .hopeless
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Err(DataFusionError::Plan(why.clone()));
        }
        if self.spent() {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "planning took longer than {} s",
                self.limit.as_secs_f64()
            )));
        }
        Ok(())
    }
}

impl CallBudget for PlanBudget {
    fn check(&self) -> DfResult<()> {
        PlanBudget::check(self)
    }

    fn hopeless(&self, refusal: &DataFusionError) {
        let mut hopeless = self.hopeless.lock().unwrap_or_else(|e| e.into_inner());
        // The first one found is the one reported.
        hopeless.get_or_insert_with(|| refusal.message().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_are_bounded_in_time_in_number_and_in_depth() {
        let pool = PlanningPool::new(PlanningLimits {
            time: Duration::from_millis(300),
            concurrency: 1,
            queue: 1,
        })
        .unwrap();
        // A deep recursion that would overflow a 2 MiB stack runs.
        fn depth(n: u64) -> u64 {
            let pad = std::hint::black_box([0u8; 512]);
            if n == 0 {
                pad[0] as u64
            } else {
                1 + depth(n - 1) + pad[1] as u64
            }
        }
        let deep = pool
            .run(|_| async { Ok(std::hint::black_box(depth(20_000))) })
            .await
            .unwrap();
        assert_eq!(deep, 20_000);
        // A run past its time: refused at the limit; its slot stays taken
        // until it reaches a check, so a second run waits, and a third is
        // refused at once.
        let started = Instant::now();
        let slow = pool.run(|budget| async move {
            while budget.check().is_ok() {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        });
        let err = slow.await.unwrap_err();
        assert!(matches!(err, SquallError::PlanningTimedOut { .. }), "{err}");
        assert!(err.to_string().contains("0.3"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // It stops at its next check and frees its slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.permits.available_permits(), 1);
        let hold = pool.run(|_| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(1)
        });
        let second = pool.run(|_| async { Ok(2) });
        let third = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool.run(|_| async { Ok(3) }).await
        };
        let (held, second, third) = tokio::join!(hold, second, third);
        assert_eq!((held.unwrap(), second.unwrap()), (1, 2));
        let err = third.unwrap_err();
        assert!(matches!(err, SquallError::PlanningBusy { .. }), "{err}");
    }
}
