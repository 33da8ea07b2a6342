//! The executor behind AWS Lambda's Invoke API: what an invocation carries, and
//! the handler the `squall-lambda` binary runs for each one.
//!
//! # What belongs here
//! The invocation payloads ([`Invocation`], [`InvocationResponse`]), reading a
//! TaskSpec that did not fit in the payload from the bucket and putting a
//! TaskResult that would not fit there, and the function's configuration from its
//! environment. The task itself is [`run_task`], exactly as the in-process backend
//! runs it. Nothing here talks to the Lambda runtime API: the binary does.
//!
//! A task's own failure (bad plan, missing file, out of memory) is a successful
//! invocation whose TaskResult says `Failed` with its `retryable` flag; the
//! handler returns an error only when it cannot produce a TaskResult at all (an
//! unreadable event, a spec that cannot be fetched), which Lambda reports as a
//! function error.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::context::ExecutorContext;
use crate::protocol::{TaskResult, TaskSpec};
use crate::run::run_task;
use crate::stores::StoreRegistry;
use crate::usage::{FunctionUsage, RequestCounter, add_requests};

/// Largest synchronous Invoke payload, request or response (6 MB).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Room left for the envelope around a spec or result kept inline.
const PAYLOAD_MARGIN: usize = 64 * 1024;
/// Share of the function's memory a task's memory pool may take; the rest is the
/// binary, buffers outside the pool, and the runtime.
const POOL_SHARE_OF_FUNCTION_MEMORY: f64 = 0.7;

/// What the control plane sends one invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invocation {
    /// The spec itself, when it fits in the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_spec: Option<TaskSpec>,
    /// Where the control plane put a spec too large for the payload (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_spec_url: Option<String>,
    /// Where to put the result if it is too large to return.
    pub result_url: String,
}

/// What one invocation answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvocationResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_result: Option<TaskResult>,
    /// Where the result went when it was too large for the payload (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_result_url: Option<String>,
}

/// Why an invocation produced no TaskResult (Lambda reports it as a function error).
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("invalid invocation: {0}")]
    Invalid(String),
    #[error("cannot read the task spec at {url}: {message}")]
    SpecUnreadable { url: String, message: String },
    #[error("cannot store the task result at {url}: {message}")]
    ResultUnwritable { url: String, message: String },
}

/// Error type a function error carries when the invocation itself was malformed:
/// another attempt of the same invocation cannot help.
pub const ERROR_TYPE_INVALID: &str = "Squall.InvalidInvocation";
/// Error type of a spec that could not be read from the bucket.
pub const ERROR_TYPE_SPEC_UNREADABLE: &str = "Squall.SpecUnreadable";
/// Error type of a result that could not be put in the bucket.
pub const ERROR_TYPE_RESULT_UNWRITABLE: &str = "Squall.ResultUnwritable";

impl InvocationError {
    /// The `errorType` Lambda reports for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            InvocationError::Invalid(_) => ERROR_TYPE_INVALID,
            InvocationError::SpecUnreadable { .. } => ERROR_TYPE_SPEC_UNREADABLE,
            InvocationError::ResultUnwritable { .. } => ERROR_TYPE_RESULT_UNWRITABLE,
        }
    }
}

/// The error as the Lambda runtime reports it (the `lambda` feature, which the
/// `squall-lambda` binary needs).
#[cfg(feature = "lambda")]
impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

/// Whether a function error of `error_type` may go away on another attempt. Only a
/// malformed invocation is certain to fail again; crashes (`Runtime.ExitError`),
/// timeouts (`Sandbox.Timedout`), panics and storage trouble may not.
pub fn function_error_is_retryable(error_type: &str) -> bool {
    error_type != ERROR_TYPE_INVALID
}

/// The function's configuration, read once per cold start.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// Where tasks spill (Lambda's writable disk is /tmp).
    pub spill_dir: PathBuf,
    /// Cap on any task's memory pool, from the function's configured memory.
    pub max_pool_bytes: Option<u64>,
    /// The function's configured memory, MB (what Lambda bills by).
    pub memory_mb: Option<u64>,
    /// When the process started: a cold start's init time is counted from
    /// here to the executor's construction (see [`LambdaExecutor::new`]).
    pub started: Instant,
}

impl FunctionConfig {
    /// From the environment: `SQUALL_SPILL_DIR` (default: the OS temp dir, /tmp on
    /// Lambda) and `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (MB, set by Lambda).
    pub fn from_env() -> Result<Self, InvocationError> {
        let spill_dir = std::env::var_os("SQUALL_SPILL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let memory_mb = match std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
            Ok(mb) => Some(memory_mb(&mb)?),
            Err(_) => None,
        };
        Ok(Self {
            spill_dir,
            max_pool_bytes: memory_mb.map(pool_cap),
            memory_mb,
            started: Instant::now(),
        })
    }
}

/// Lambda's `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (MB, as text), checked.
fn memory_mb(text: &str) -> Result<u64, InvocationError> {
    text.trim()
        .parse()
        .ok()
        .filter(|mb| (1..=1 << 20).contains(mb))
        .ok_or_else(|| {
            InvocationError::Invalid(format!(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE is '{text}', not a number of megabytes"
            ))
        })
}

/// The pool cap for a function of `mb` megabytes.
fn pool_cap(mb: u64) -> u64 {
    ((mb * 1024 * 1024) as f64 * POOL_SHARE_OF_FUNCTION_MEMORY) as u64
}

/// Variables the Lambda runtime (or an emulator) sets for a function process;
/// lambda_runtime panics when one is missing, so the binary checks first.
pub const RUNTIME_VARIABLES: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// The runtime variables `lookup` does not have, as an error naming them.
pub fn check_runtime_variables(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), InvocationError> {
    let missing: Vec<&str> = RUNTIME_VARIABLES
        .into_iter()
        .filter(|name| lookup(name).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(InvocationError::Invalid(format!(
        "squall-lambda runs inside AWS Lambda or a Lambda emulator (cargo lambda watch); {} not set",
        missing.join(", ")
    )))
}

/// Built once per cold start; handles every invocation of that container.
#[derive(Debug, Clone)]
pub struct LambdaExecutor {
    ctx: ExecutorContext,
    config: FunctionConfig,
    /// No invocation has run in this process yet.
    fresh: Arc<AtomicBool>,
    /// The cold start's init: from the process's start to this executor
    /// being built, the last thing before the runtime first polls for work.
    /// Time an environment then idles before its first task (pre-warmed,
    /// or an emulator's) is not init.
    init: std::time::Duration,
}

impl LambdaExecutor {
    /// Built last in the function's init: what it took from the process's
    /// start to here is the cold start's init time.
    pub fn new(stores: Arc<StoreRegistry>, config: FunctionConfig) -> Self {
        let ctx = ExecutorContext::new(stores, config.spill_dir.clone());
        Self {
            init: config.started.elapsed(),
            ctx,
            config,
            fresh: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Runs the task of one invocation; its result says what the invocation
    /// used (see [`crate::usage`]).
    pub async fn handle(
        &self,
        invocation: Invocation,
    ) -> Result<InvocationResponse, InvocationError> {
        let began = Instant::now();
        let cold_start = self.fresh.swap(false, Ordering::SeqCst);
        let function = self.config.memory_mb.map(|memory_mb| FunctionUsage {
            memory_mb,
            arch: std::env::consts::ARCH.to_string(),
            cold_start,
            init_ms: if cold_start {
                self.init.as_millis() as u64
            } else {
                0
            },
        });
        let requests = RequestCounter::new();
        let spec = self
            .spec_of(invocation.task_spec, invocation.task_spec_url, &requests)
            .await?;
        // The invocation joins the trace of the attempt that sent it.
        let span = tracing::info_span!(
            "invocation",
            job = %spec.id.job_id,
            stage = spec.id.stage_id,
            task = spec.id.task,
            attempt = spec.id.attempt,
            cold_start,
        );
        crate::telemetry::set_parent(&span, spec.trace_context.as_deref());
        let mut result = self.run(spec).instrument(span).await;
        add_requests(&mut result.usage.requests, &requests.snapshot());
        result.usage.reported = true;
        // Lambda bills by the millisecond, rounded up.
        result.usage.duration_ms = began.elapsed().as_micros().div_ceil(1000) as u64;
        result.usage.function = function;
        self.respond(result, &invocation.result_url).await
    }

    /// The invocation's task spec: carried in it, or at the URL it names.
    async fn spec_of(
        &self,
        task_spec: Option<TaskSpec>,
        task_spec_url: Option<String>,
        requests: &Arc<RequestCounter>,
    ) -> Result<TaskSpec, InvocationError> {
        match (task_spec, task_spec_url) {
            (Some(spec), None) => Ok(spec),
            (None, Some(url)) => self.fetch_spec(&url, requests).await,
            _ => Err(InvocationError::Invalid(
                "an invocation carries exactly one of task_spec and task_spec_url".into(),
            )),
        }
    }

    async fn run(&self, mut spec: TaskSpec) -> TaskResult {
        #[cfg(feature = "fault-injection")]
        let fault = faults::apply(&mut spec);
        self.limit_memory(&mut spec);
        #[cfg(feature = "fault-injection")]
        if fault == crate::faults::Fault::Fail {
            return faults::failed(&spec);
        }
        #[cfg(feature = "fault-injection")]
        let started = std::time::Instant::now();
        let result = run_task(&self.ctx, spec).await;
        #[cfg(feature = "fault-injection")]
        faults::after_running(fault, started.elapsed()).await;
        result
    }

    /// No task's pool may outgrow the function's memory.
    fn limit_memory(&self, spec: &mut TaskSpec) {
        if let Some(cap) = self.config.max_pool_bytes {
            spec.memory_limit_bytes = spec.memory_limit_bytes.min(cap);
        }
    }

    async fn fetch_spec(
        &self,
        url: &str,
        requests: &Arc<RequestCounter>,
    ) -> Result<TaskSpec, InvocationError> {
        let unreadable = |message: String| InvocationError::SpecUnreadable {
            url: url.to_string(),
            message,
        };
        let (store, path) = self
            .ctx
            .stores
            .counted(requests.clone())
            .resolve(url)
            .map_err(|e| unreadable(e.to_string()))?;
        let bytes = store
            .get(&path)
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .bytes()
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("not a task spec: {e}")))
    }

    /// The result inline, or put at `result_url` when it would not fit (that
    /// PUT counted in the result's usage).
    async fn respond(
        &self,
        mut result: TaskResult,
        result_url: &str,
    ) -> Result<InvocationResponse, InvocationError> {
        let unwritable = |message: String| InvocationError::ResultUnwritable {
            url: result_url.to_string(),
            message,
        };
        let body = serde_json::to_vec(&result).map_err(|e| unwritable(e.to_string()))?;
        if body.len() + PAYLOAD_MARGIN <= MAX_PAYLOAD_BYTES {
            return Ok(InvocationResponse {
                task_result: Some(result),
                task_result_url: None,
            });
        }
        let scheme = url::Url::parse(result_url)
            .map(|u| u.scheme().to_string())
            .map_err(|e| unwritable(e.to_string()))?;
        result.usage.requests.entry(scheme).or_default().put += 1;
        let body = serde_json::to_vec(&result).map_err(|e| unwritable(e.to_string()))?;
        let (store, path) = self
            .ctx
            .stores
            .resolve(result_url)
            .map_err(|e| unwritable(e.to_string()))?;
        store
            .put(&path, PutPayload::from(Bytes::from(body)))
            .await
            .map_err(|e| unwritable(e.to_string()))?;
        Ok(InvocationResponse {
            task_result: None,
            task_result_url: Some(result_url.to_string()),
        })
    }
}

/// Whether a serialized spec of `bytes` must go through the bucket.
pub fn spec_needs_bucket(bytes: usize) -> bool {
    bytes > MAX_INLINE_SPEC_BYTES
}

/// Largest encoded TaskSpec sent inline in an invocation payload.
pub const MAX_INLINE_SPEC_BYTES: usize = MAX_PAYLOAD_BYTES - PAYLOAD_MARGIN;

/// Crashes on request, for tests of what a backend does when the function dies.
#[cfg(feature = "fault-injection")]
pub mod faults {
    use crate::faults::{Fault, FaultPlan};
    use crate::protocol::{
        FailureKind, TaskFailure, TaskOutcome, TaskResult, TaskSpec, WIRE_VERSION,
    };

    /// Session option `STAGE:TASK`: the first attempt of that task exits the
    /// process before running, as a function killed mid-invocation does.
    pub const EXIT_AT: &str = "squall.fault.exit_at";
    /// Session option `STAGE:TASK`: the first attempt of that task panics in the
    /// handler; the runtime reports it as a function error.
    pub const PANIC_AT: &str = "squall.fault.panic_at";

    /// Session option: a JSON [`FaultPlan`] whose draw for each attempt decides
    /// whether it straggles, crashes (exits after running) or fails.
    pub const PLAN: &str = "squall.fault.plan";

    /// Removes the fault options from `spec` (DataFusion does not know them),
    /// crashes if one names this attempt, and returns what the plan, if any,
    /// draws for it.
    pub fn apply(spec: &mut TaskSpec) -> Fault {
        let target = format!("{}:{}", spec.id.stage_id, spec.id.task);
        let first = spec.id.attempt == 0;
        let (mut exit, mut panic) = (false, false);
        let mut plan: Option<FaultPlan> = None;
        spec.session_options
            .retain(|(key, value)| match key.as_str() {
                EXIT_AT => {
                    exit |= first && *value == target;
                    false
                }
                PANIC_AT => {
                    panic |= first && *value == target;
                    false
                }
                PLAN => {
                    plan = serde_json::from_str(value).ok();
                    false
                }
                _ => true,
            });
        if exit {
            eprintln!("fault injection: exiting at {}", spec.id);
            std::process::exit(70);
        }
        if panic {
            panic!("fault injection: panic at {}", spec.id);
        }
        plan.map_or(Fault::None, |p| p.draw(&spec.id))
    }

    /// The answer of an attempt that fails at once.
    pub fn failed(spec: &TaskSpec) -> TaskResult {
        TaskResult {
            wire_version: WIRE_VERSION,
            id: spec.id.clone(),
            outcome: TaskOutcome::Failed(TaskFailure {
                kind: FailureKind::Storage,
                message: format!("fault injection: failing {}", spec.id),
                retryable: true,
            }),
            usage: Default::default(),
        }
    }

    /// After the task ran for `took`: a straggler waits, a crash exits.
    pub async fn after_running(fault: Fault, took: std::time::Duration) {
        match fault {
            Fault::Straggle { factor } => {
                tokio::time::sleep(took.mul_f64((factor - 1.0).max(0.0))).await
            }
            Fault::Crash => {
                eprintln!("fault injection: crashing after the task ran");
                std::process::exit(70);
            }
            Fault::None | Fault::Fail => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_lambda_the_missing_variables_are_named() {
        let err = check_runtime_variables(|name| {
            (name == "AWS_LAMBDA_RUNTIME_API").then(|| "127.0.0.1:9001".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("AWS_LAMBDA_FUNCTION_NAME"), "{err}");
        assert!(!err.contains("AWS_LAMBDA_RUNTIME_API"), "{err}");
        assert!(check_runtime_variables(|_| Some("1".into())).is_ok());
    }
    use crate::protocol::{TaskAction, TaskId, TaskOutcome};

    fn ping(job: &str) -> TaskSpec {
        let id = TaskId {
            job_id: job.into(),
            run_id: "r".into(),
            stage_id: 1,
            task: 0,
            attempt: 0,
        };
        TaskSpec {
            memory_limit_bytes: 1 << 30,
            ..TaskSpec::ping(id)
        }
    }

    fn executor() -> (LambdaExecutor, Arc<StoreRegistry>) {
        let stores = Arc::new(StoreRegistry::new());
        let config = FunctionConfig {
            spill_dir: std::env::temp_dir(),
            max_pool_bytes: Some(pool_cap(1024)),
            memory_mb: Some(1024),
            started: Instant::now(),
        };
        (LambdaExecutor::new(stores.clone(), config), stores)
    }

    #[test]
    fn pool_follows_function_memory() {
        assert_eq!(pool_cap(memory_mb("1000").unwrap()), 734_003_200);
        assert!(memory_mb("0").is_err());
        let err = memory_mb("lots").unwrap_err().to_string();
        assert!(err.contains("'lots'"), "{err}");
    }

    #[tokio::test]
    async fn inline_and_bucket_specs_run() {
        let (executor, stores) = executor();
        let inline = Invocation {
            task_spec: Some(ping("a")),
            task_spec_url: None,
            result_url: "memory:///results/a.json".into(),
        };
        let response = executor.handle(inline).await.unwrap();
        let result = response.task_result.unwrap();
        assert_eq!(result.id.job_id, "a");
        assert!(matches!(result.outcome, TaskOutcome::Succeeded { .. }));

        // A spec put in the bucket by the control plane.
        let (store, path) = stores.resolve("memory:///specs/b.json").unwrap();
        let body = serde_json::to_vec(&ping("b")).unwrap();
        store.put(&path, PutPayload::from(body)).await.unwrap();
        let by_url = Invocation {
            task_spec: None,
            task_spec_url: Some("memory:///specs/b.json".into()),
            result_url: "memory:///results/b.json".into(),
        };
        let result = executor.handle(by_url).await.unwrap().task_result.unwrap();
        assert_eq!(result.id.job_id, "b");
    }

    #[tokio::test]
    async fn a_cold_starts_init_ends_when_the_runtime_first_polls_not_at_the_first_task() {
        // 150 ms of init, then 400 ms idle before the first task (a
        // pre-warmed environment): the init billed is the 150 ms.
        let stores = Arc::new(StoreRegistry::new());
        let config = FunctionConfig {
            spill_dir: std::env::temp_dir(),
            max_pool_bytes: Some(pool_cap(1024)),
            memory_mb: Some(1024),
            started: Instant::now() - std::time::Duration::from_millis(150),
        };
        let executor = LambdaExecutor::new(stores, config);
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let invocation = |job: &str| Invocation {
            task_spec: Some(ping(job)),
            task_spec_url: None,
            result_url: format!("memory:///results/{job}.json"),
        };
        let first = executor.handle(invocation("a")).await.unwrap();
        let function = first.task_result.unwrap().usage.function.unwrap();
        assert!(function.cold_start);
        assert!(
            (150..400).contains(&function.init_ms),
            "init {} ms",
            function.init_ms
        );
        // The next invocation is warm: no init.
        let second = executor.handle(invocation("b")).await.unwrap();
        let function = second.task_result.unwrap().usage.function.unwrap();
        assert!(!function.cold_start);
        assert_eq!(function.init_ms, 0);
    }

    #[tokio::test]
    async fn bad_invocations_name_the_problem() {
        let (executor, _) = executor();
        let neither = Invocation {
            task_spec: None,
            task_spec_url: None,
            result_url: "memory:///r.json".into(),
        };
        let err = executor.handle(neither).await.unwrap_err().to_string();
        assert!(err.contains("exactly one of"), "{err}");
        let missing = Invocation {
            task_spec: None,
            task_spec_url: Some("memory:///specs/none.json".into()),
            result_url: "memory:///r.json".into(),
        };
        let err = executor.handle(missing).await.unwrap_err().to_string();
        assert!(err.contains("memory:///specs/none.json"), "{err}");
    }

    #[tokio::test]
    async fn task_failures_are_results_and_memory_is_capped() {
        let (executor, _) = executor();
        let mut spec = ping("c");
        spec.memory_limit_bytes = u64::MAX;
        executor.limit_memory(&mut spec);
        assert_eq!(spec.memory_limit_bytes, pool_cap(1024));

        // A plan that cannot decode is the task's failure, not the function's.
        spec.action = TaskAction::Run;
        spec.plan = vec![1, 2, 3];
        let invocation = Invocation {
            task_spec: Some(spec),
            task_spec_url: None,
            result_url: "memory:///r.json".into(),
        };
        let result = executor
            .handle(invocation)
            .await
            .unwrap()
            .task_result
            .unwrap();
        match result.outcome {
            TaskOutcome::Failed(f) => assert!(!f.retryable, "{f:?}"),
            other => panic!("expected a typed failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn large_results_go_to_the_bucket() {
        let (executor, stores) = executor();
        let mut result = run_task(&executor.ctx, ping("d")).await;
        if let TaskOutcome::Succeeded { output, .. } = &mut result.outcome {
            output.url = "x".repeat(MAX_PAYLOAD_BYTES);
        }
        let response = executor
            .respond(result, "memory:///results/d.json")
            .await
            .unwrap();
        assert!(response.task_result.is_none());
        assert_eq!(
            response.task_result_url.as_deref(),
            Some("memory:///results/d.json")
        );
        let (store, path) = stores.resolve("memory:///results/d.json").unwrap();
        let stored = store.get(&path).await.unwrap().bytes().await.unwrap();
        let back: TaskResult = serde_json::from_slice(&stored).unwrap();
        assert_eq!(back.id.job_id, "d");
    }
}
