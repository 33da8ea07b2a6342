//! Where tasks run. One trait, [`ExecutorBackend`]; the scheduler knows nothing else.
//!
//! The in-process backend is the embedded default: it runs `run_task` on tokio
//! tasks, and still sends every spec and result through their JSON encoding, so
//! tasks share nothing with the control plane but the object store — exactly as a
//! remote backend would. The Lambda backend ([`lambda`]) invokes the same
//! `run_task` inside the `squall-lambda` function.

use std::sync::Arc;

use async_trait::async_trait;
use squall_executor::{ExecutorContext, TaskResult, TaskSpec, run_task};

use crate::error::{Result, SquallError};

pub mod lambda;

pub use lambda::{Backoff, LambdaBackend, LambdaConfig};

/// Runs task attempts somewhere. `Ok` carries the task's own result (success or a
/// typed failure); `Err` means the executor could not be reached or crashed.
#[async_trait]
pub trait ExecutorBackend: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;

    /// How many tasks this backend runs at once.
    fn max_concurrency(&self) -> usize;

    async fn invoke(&self, spec: TaskSpec) -> Result<TaskResult>;

    /// Whether this backend's executors can read and write objects at `url`
    /// (remote executors cannot see the control plane's disk or memory).
    fn can_reach(&self, url: &url::Url) -> bool {
        let _ = url;
        true
    }
}

/// Runs tasks on this process's tokio runtime.
#[derive(Debug, Clone)]
pub struct InProcessBackend {
    ctx: ExecutorContext,
    concurrency: usize,
}

impl InProcessBackend {
    pub fn new(ctx: ExecutorContext, concurrency: usize) -> Result<Self> {
        if concurrency == 0 {
            return Err(SquallError::InvalidArgument(
                "executors must be at least 1".into(),
            ));
        }
        Ok(Self { ctx, concurrency })
    }
}

#[async_trait]
impl ExecutorBackend for InProcessBackend {
    fn name(&self) -> &str {
        "in-process"
    }

    fn max_concurrency(&self) -> usize {
        self.concurrency
    }

    async fn invoke(&self, spec: TaskSpec) -> Result<TaskResult> {
        let payload = serde_json::to_vec(&spec)
            .map_err(|e| SquallError::Backend(format!("cannot encode task spec: {e}")))?;
        let ctx = self.ctx.clone();
        let handle = tokio::spawn(async move {
            let spec: TaskSpec = serde_json::from_slice(&payload)
                .map_err(|e| format!("executor cannot decode task spec: {e}"))?;
            let result = run_task(&ctx, spec).await;
            serde_json::to_vec(&result).map_err(|e| format!("cannot encode task result: {e}"))
        });
        let bytes = handle
            .await
            .map_err(|e| SquallError::Backend(format!("executor task crashed: {e}")))?
            .map_err(SquallError::Backend)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| SquallError::Backend(format!("cannot decode task result: {e}")))
    }
}

/// Shares one backend between jobs.
pub type SharedBackend = Arc<dyn ExecutorBackend>;
