//! [`FaultyBackend`]: any backend, with a seeded fraction of attempts made to
//! straggle, crash or fail (a [`FaultPlan`]), for `squall bench faults` and
//! tests. Faults are applied around the invocation, as the control plane sees
//! them: a straggler answers late (its slot held, as a slow Lambda holds its
//! concurrency), a crash loses the answer of an attempt that ran and wrote its
//! object, a failure answers at once without running.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use squall_executor::{
    FailureKind, Fault, FaultPlan, TaskFailure, TaskOutcome, TaskResult, TaskSpec, WIRE_VERSION,
};

use super::ExecutorBackend;
use crate::error::{Result, SquallError};

/// Faults injected so far, by kind.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub stragglers: AtomicU64,
    pub crashes: AtomicU64,
    pub failures: AtomicU64,
}

impl FaultCounts {
    /// (stragglers, crashes, failures).
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.stragglers.load(Ordering::Relaxed),
            self.crashes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// Wraps a backend and injects the faults `plan` draws for each attempt.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn ExecutorBackend>,
    plan: FaultPlan,
    counts: FaultCounts,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn ExecutorBackend>, plan: FaultPlan) -> Result<Self> {
        plan.validate().map_err(SquallError::InvalidArgument)?;
        Ok(Self {
            inner,
            plan,
            counts: FaultCounts::default(),
        })
    }

    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }
}

#[async_trait]
impl ExecutorBackend for FaultyBackend {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }

    fn can_reach(&self, url: &url::Url) -> bool {
        self.inner.can_reach(url)
    }

    async fn wait_idle(&self, job_id: &str) {
        self.inner.wait_idle(job_id).await
    }

    fn strays(&self, job_id: &str) -> usize {
        self.inner.strays(job_id)
    }

    async fn wait_strays(&self, job_id: &str) {
        self.inner.wait_strays(job_id).await
    }

    fn flow(&self) -> Option<super::FlowStats> {
        self.inner.flow()
    }

    fn bills_invocations(&self) -> bool {
        self.inner.bills_invocations()
    }

    async fn invoke(&self, spec: TaskSpec) -> Result<TaskResult> {
        let id = spec.id.clone();
        match self.plan.draw(&id) {
            Fault::None => self.inner.invoke(spec).await,
            Fault::Fail => {
                self.counts.failures.fetch_add(1, Ordering::Relaxed);
                Ok(TaskResult {
                    wire_version: WIRE_VERSION,
                    outcome: TaskOutcome::Failed(TaskFailure {
                        kind: FailureKind::Storage,
                        message: format!("fault injection: failing {id}"),
                        retryable: true,
                    }),
                    id,
                    usage: Default::default(),
                })
            }
            Fault::Crash => {
                self.counts.crashes.fetch_add(1, Ordering::Relaxed);
                // Its object is written; the answer never comes.
                let _ = self.inner.invoke(spec).await;
                Err(SquallError::Executor {
                    message: format!("fault injection: the executor of {id} crashed"),
                })
            }
            Fault::Straggle { factor } => {
                self.counts.stragglers.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                let answer = self.inner.invoke(spec).await;
                tokio::time::sleep(began.elapsed().mul_f64(factor - 1.0)).await;
                answer
            }
        }
    }
}
