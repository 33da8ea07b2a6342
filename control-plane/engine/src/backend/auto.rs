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
use std::time::{Duration, Instant};

use async_trait::async_trait;
use squall_executor::{TaskResult, TaskSpec};

use super::placement::{Capacity, decide};
use super::{
    BurstPolicy, ExecutorBackend, FlowStats, InProcessBackend, Place, Placed, Placement,
    SharedBackend, StageOutlook,
};
use crate::error::Result;

/// How long an environment that answered stays warm, as the placement
/// assumes (Lambda keeps idle environments for minutes; AWS does not say
/// how many).
const WARM_FOR: Duration = Duration::from_secs(300);

/// In-process executors and Lambda, placed per stage.
#[derive(Debug)]
pub struct AutoBackend {
    local: InProcessBackend,
    lambda: SharedBackend,
    /// Invocations in flight at once the placement counts on (None: the
    /// Lambda backend's limit). An emulated function on this machine shares
    /// its cores: set it to them.
    lambda_slots: Option<usize>,
    state: Mutex<AutoState>,
}

#[derive(Debug)]
struct AutoState {
    policy: BurstPolicy,
    /// Invocations in flight now, the most since `last_answer`'s window
    /// began, and when one last answered.
    in_flight: usize,
    peak: usize,
    last_answer: Option<Instant>,
}

impl AutoBackend {
    pub fn new(local: InProcessBackend, lambda: SharedBackend, policy: BurstPolicy) -> Self {
        Self {
            local,
            lambda,
            lambda_slots: None,
            state: Mutex::new(AutoState {
                policy,
                in_flight: 0,
                peak: 0,
                last_answer: None,
            }),
        }
    }

    /// The placement counts on `slots` invocations at once.
    pub fn with_lambda_slots(self, slots: usize) -> Self {
        Self {
            lambda_slots: Some(slots.max(1)),
            ..self
        }
    }

    pub fn policy(&self) -> BurstPolicy {
        self.lock().policy.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AutoState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Environments likely still warm: as many as were busy at once since
    /// an invocation last answered, if that was lately.
    fn warm(state: &AutoState) -> usize {
        match state.last_answer {
            Some(at) if at.elapsed() < WARM_FOR => state.peak,
            _ => state.in_flight,
        }
    }

    async fn on_lambda(&self, spec: TaskSpec) -> Result<TaskResult> {
        {
            let mut state = self.lock();
            if state.last_answer.is_some_and(|at| at.elapsed() >= WARM_FOR) {
                state.peak = 0;
            }
            state.in_flight += 1;
            state.peak = state.peak.max(state.in_flight);
        }
        // Counted out however the invocation ends (dropped too).
        let _flight = Flight(self);
        let answer = self.lambda.invoke(spec).await;
        if let Ok(result) = &answer
            && let Some(function) = &result.usage.function
        {
            let mut state = self.lock();
            state.last_answer = Some(Instant::now());
            if function.memory_mb > 0 {
                state.policy.lambda.memory_mb = Some(function.memory_mb);
            }
        }
        answer
    }
}

/// One invocation in flight.
struct Flight<'a>(&'a AutoBackend);

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
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
        let state = self.lock();
        let capacity = Capacity {
            local_free: self.local.free(),
            lambda_concurrency: self
                .lambda_slots
                .unwrap_or_else(|| self.lambda.max_concurrency()),
            lambda_warm: Self::warm(&state),
        };
        decide(&state.policy, outlook, capacity)
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
