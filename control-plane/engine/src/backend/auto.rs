//! `--backend auto`: this machine's in-process executors and a Lambda
//! function together, each stage placed where it is predicted to finish
//! sooner within the job's cost limit (see [`super::placement`]), and tasks
//! of a stage kept here overflowing to Lambda when every local executor is
//! busy and the placement allows it.
//!
//! Every object a job's tasks read or write must be where both kinds of
//! executor reach it: the engine refuses a job whose tables, output or work
//! folder Lambda cannot reach, as it does for `--backend lambda`.

use std::sync::Mutex;

use async_trait::async_trait;
use squall_executor::{TaskResult, TaskSpec};

use super::placement::{Capacity, decide};
use super::{
    BurstPolicy, ExecutorBackend, FlowStats, InProcessBackend, Place, Placed, Placement,
    SharedBackend, StageOutlook,
};
use crate::error::Result;

/// In-process executors and Lambda, placed per stage.
#[derive(Debug)]
pub struct AutoBackend {
    local: InProcessBackend,
    lambda: SharedBackend,
    /// Invocations in flight at once the placement counts on (None: the
    /// Lambda backend's limit). An emulated function on this machine shares
    /// its cores: set it to them.
    lambda_slots: Option<usize>,
    /// How stages are placed; the function's memory is learnt from its
    /// answers.
    policy: Mutex<BurstPolicy>,
}

impl AutoBackend {
    pub fn new(local: InProcessBackend, lambda: SharedBackend, policy: BurstPolicy) -> Self {
        Self {
            local,
            lambda,
            lambda_slots: None,
            policy: Mutex::new(policy),
        }
    }

    /// The placement counts on `slots` invocations at once.
    pub fn with_lambda_slots(self, slots: usize) -> Self {
        Self {
            lambda_slots: Some(slots.max(1)),
            ..self
        }
    }

    fn policy(&self) -> std::sync::MutexGuard<'_, BurstPolicy> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn on_lambda(&self, spec: TaskSpec) -> Result<TaskResult> {
        let answer = self.lambda.invoke(spec).await;
        if let Ok(result) = &answer
            && let Some(function) = result.usage.function.as_ref().filter(|f| f.memory_mb > 0)
        {
            self.policy().lambda.memory_mb = Some(function.memory_mb);
        }
        answer
    }
}

#[async_trait]
impl ExecutorBackend for AutoBackend {
    fn name(&self) -> &str {
        "auto"
    }

    fn max_concurrency(&self) -> usize {
        self.local
            .max_concurrency()
            .saturating_add(self.lambda.max_concurrency())
    }

    /// Tasks without a placement run here.
    async fn invoke(&self, spec: TaskSpec) -> Result<TaskResult> {
        self.local.invoke(spec).await
    }

    fn places(&self) -> Vec<Place> {
        vec![Place::Local, Place::Lambda]
    }

    fn keeps_here(&self, job: &StageOutlook) -> Option<String> {
        let placement = self.place(job);
        (placement.label() == "local").then(|| {
            format!(
                "the whole job stays here, its files on local disk: its scans together {}",
                placement.reason
            )
        })
    }

    fn place(&self, outlook: &StageOutlook) -> Placement {
        let capacity = Capacity {
            local_free: self.local.free(),
            lambda_concurrency: self
                .lambda_slots
                .unwrap_or_else(|| self.lambda.max_concurrency()),
            lambda_warm: self.lambda.idle_environments(),
        };
        decide(&self.policy(), outlook, capacity)
    }

    fn route(&self, placed: &Placed) -> Place {
        match placed.placement.place {
            Place::Lambda => Place::Lambda,
            // An overflow: only a task that finds every executor busy.
            Place::Local if self.local.free() == 0 && placed.take_burst() => Place::Lambda,
            Place::Local => Place::Local,
        }
    }

    async fn invoke_at(&self, place: Place, spec: TaskSpec) -> Result<TaskResult> {
        match place {
            Place::Lambda => self.on_lambda(spec).await,
            Place::Local => self.local.invoke(spec).await,
        }
    }

    fn can_reach(&self, url: &url::Url) -> bool {
        self.lambda.can_reach(url) && self.local.can_reach(url)
    }

    fn flow(&self) -> Option<FlowStats> {
        self.lambda.flow()
    }

    async fn wait_idle(&self, job_id: &str) {
        self.local.wait_idle(job_id).await;
        self.lambda.wait_idle(job_id).await;
    }

    fn strays(&self, job_id: &str) -> usize {
        self.lambda.strays(job_id)
    }

    async fn wait_strays(&self, job_id: &str) {
        self.lambda.wait_strays(job_id).await
    }
}
