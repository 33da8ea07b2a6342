//! Tasks as AWS Lambda invocations of the `squall-lambda` function.
//!
//! # What belongs here
//! [`LambdaBackend`]: one synchronous `Invoke` (RequestResponse) per task attempt,
//! and everything between the scheduler and that call: the backend-wide
//! concurrency cap (lowered while Lambda throttles, see `aimd`), jittered
//! exponential backoff while Lambda throttles or fails
//! on its side, the per-invocation timeout, specs and results too large for the
//! 6 MB payload routed through the bucket, and turning function errors into task
//! failures. The payload types and the handler are in `squall_executor::lambda`.
//!
//! Outcomes, in the terms of [`ExecutorBackend`]:
//! - the function ran and returned a TaskResult (success or the task's own typed
//!   failure): `Ok` with that result;
//! - the function failed (real Lambda: 200 with `X-Amz-Function-Error`; emulators:
//!   500 with `{"errorType","errorMessage"}`), timed out, or Lambda refused the
//!   call for good (no such function, no permission): `Ok` with a failed
//!   TaskResult carrying the function's message, retryable unless another attempt
//!   is certain to fail the same way;
//! - Lambda throttled or answered 5xx, or could not be reached, on every try:
//!   `Err`, which the scheduler treats as a retryable attempt failure.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use super::ExecutorBackend;
use super::aimd::{Aimd, FlowStats};
use super::fanout::{Fanout, NEW_ENVIRONMENTS_PER_10S, function_names};
use crate::commit::delete_quietly;
use crate::error::{Result, SquallError};
use async_trait::async_trait;
use aws_sdk_lambda::config::SharedHttpClient;
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::timeout::TimeoutConfig;
use aws_sdk_lambda::config::{BehaviorVersion, StalledStreamProtectionConfig};
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::{InvokeError, InvokeOutput};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_smithy_http_client::tls;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Deserialize;
use squall_executor::lambda::{
    Invocation, InvocationResponse, MAX_INLINE_SPEC_BYTES, function_error_is_retryable,
};
use squall_executor::stores::local_scheme;
use squall_executor::{
    FailureKind, RequestCounter, StoreRegistry, TaskFailure, TaskId, TaskOutcome, TaskResult,
    TaskSpec, WIRE_VERSION, add_requests,
};

/// Invocations in flight at once unless configured.
pub const DEFAULT_CONCURRENCY: usize = 100;

/// Lambda's own limit on one synchronous invocation (15 minutes).
pub const MAX_INVOCATION_TIMEOUT: Duration = Duration::from_secs(900);

/// Jittered exponential backoff between tries of one invocation ("full jitter":
/// each delay is uniform in `[0, min(max, first × 2^try)]`), so that a burst of
/// throttled tasks does not come back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Tries after the first before the attempt is given up.
    pub max_retries: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(100),
            max: Duration::from_secs(20),
            max_retries: 10,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .first
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Which function to call, where, and how hard.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// Function name or ARN.
    pub function: String,
    /// Published version or alias; None: `$LATEST`.
    pub qualifier: Option<String>,
    /// (pool bytes, qualifier): an attempt whose memory pool is at least the
    /// bytes goes to the qualifier (of the largest such entry) instead, so that
    /// a task retried with a larger pool after running out of memory runs on a
    /// version or alias configured with more memory (Lambda's memory is fixed
    /// per version and cannot be set per invocation).
    pub memory_qualifiers: Vec<(u64, String)>,
    /// Lambda API endpoint (LocalStack, `cargo lambda watch`); None: AWS's, from
    /// the environment (`AWS_ENDPOINT_URL_LAMBDA`, `AWS_ENDPOINT_URL` also work).
    pub endpoint: Option<String>,
    /// Invocations in flight at once, over all jobs sharing this backend.
    pub max_concurrency: usize,
    /// How long one invocation may take before the attempt counts as failed.
    pub invocation_timeout: Duration,
    pub backoff: Backoff,
    /// Specs whose JSON is larger go through the bucket (default: what fits in
    /// Lambda's 6 MB payload with room for the envelope).
    pub max_inline_spec_bytes: usize,
    /// Identical functions invocations are spread over: `function`, then
    /// `function-2` … (as `infra/`'s `FunctionCount` deploys them).
    pub function_count: usize,
    /// New execution environments one function may gain per 10 s (Lambda's
    /// scaling rate: 1,000).
    pub new_environments_per_10s: u32,
}

/// Functions one backend spreads invocations over, at most.
pub const MAX_FUNCTIONS: usize = 100;

impl LambdaConfig {
    pub fn new(function: impl Into<String>) -> Self {
        Self {
            function: function.into(),
            qualifier: None,
            memory_qualifiers: Vec::new(),
            endpoint: None,
            max_concurrency: DEFAULT_CONCURRENCY,
            invocation_timeout: MAX_INVOCATION_TIMEOUT,
            backoff: Backoff::default(),
            max_inline_spec_bytes: MAX_INLINE_SPEC_BYTES,
            function_count: 1,
            new_environments_per_10s: NEW_ENVIRONMENTS_PER_10S,
        }
    }

    /// The functions invocations go to.
    pub fn function_names(&self) -> Vec<String> {
        function_names(&self.function, self.function_count)
    }

    /// The qualifier an attempt with a memory pool of `pool` bytes invokes.
    pub fn qualifier_for(&self, pool: u64) -> Option<&str> {
        self.memory_qualifiers
            .iter()
            .filter(|(bytes, _)| *bytes <= pool)
            .max_by_key(|(bytes, _)| *bytes)
            .map(|(_, q)| q.as_str())
            .or(self.qualifier.as_deref())
    }

    fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(SquallError::InvalidArgument(m));
        if self.function.trim().is_empty() {
            return invalid("the Lambda function name is empty".into());
        }
        if self.max_concurrency == 0 {
            return invalid("the Lambda concurrency must be at least 1".into());
        }
        if !(1..=MAX_FUNCTIONS).contains(&self.function_count) {
            return invalid(format!(
                "the function count must be from 1 to {MAX_FUNCTIONS}, not {}",
                self.function_count
            ));
        }
        if self.new_environments_per_10s == 0 {
            return invalid(
                "a function must be allowed at least 1 new environment per 10 s".into(),
            );
        }
        if self.invocation_timeout.is_zero() || self.invocation_timeout > MAX_INVOCATION_TIMEOUT {
            return invalid(format!(
                "the invocation timeout must be between 1 s and {} s, not {} s",
                MAX_INVOCATION_TIMEOUT.as_secs(),
                self.invocation_timeout.as_secs_f64()
            ));
        }
        if self.max_inline_spec_bytes > MAX_INLINE_SPEC_BYTES {
            return invalid(format!(
                "specs of up to {MAX_INLINE_SPEC_BYTES} bytes fit in an invocation, not {}",
                self.max_inline_spec_bytes
            ));
        }
        for (bytes, qualifier) in &self.memory_qualifiers {
            if qualifier.trim().is_empty() {
                return invalid(format!("the qualifier for pools of {bytes} bytes is empty"));
            }
            if self
                .memory_qualifiers
                .iter()
                .filter(|(b, _)| b == bytes)
                .count()
                > 1
            {
                return invalid(format!(
                    "pools of {bytes} bytes have more than one qualifier"
                ));
            }
        }
        if let Some(endpoint) = &self.endpoint
            && url::Url::parse(endpoint).is_err()
        {
            return invalid(format!("the Lambda endpoint '{endpoint}' is not a URL"));
        }
        Ok(())
    }
}

/// Runs each task attempt as one invocation of the executor function.
#[derive(Debug)]
pub struct LambdaBackend {
    client: aws_sdk_lambda::Client,
    config: LambdaConfig,
    stores: Arc<StoreRegistry>,
    /// Prefix under which specs and results that do not fit a payload are kept
    /// while their invocation runs (`{root}/{job}/invocations/...`).
    payload_root: String,
    /// Invocations in flight, halved on throttling (see [`Aimd`]).
    flow: Aimd,
    /// The functions they go to, within each one's scaling rate.
    fanout: Arc<Fanout>,
    /// Invocations still running, by job: one whose attempt was dropped (a
    /// losing backup, a stopped job) runs on to its end or timeout.
    live: Arc<super::LiveTasks>,
}

/// The AWS SDK's HTTPS client on rustls with ring, the crypto the object
/// stores use (the SDK's default would build a second one, aws-lc-rs).
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

impl LambdaBackend {
    /// A client configured from the standard AWS environment (region, credentials,
    /// endpoint), with the SDK's own retries off: this backend retries itself.
    pub async fn connect(
        config: LambdaConfig,
        stores: Arc<StoreRegistry>,
        payload_root: &str,
    ) -> Result<Self> {
        config.validate()?;
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .load()
            .await;
        if shared.region().is_none() {
            return Err(SquallError::InvalidArgument(
                "no AWS region for Lambda: set AWS_REGION (or AWS_DEFAULT_REGION)".into(),
            ));
        }
        Self::with_sdk_config(
            config,
            aws_sdk_lambda::config::Builder::from(&shared),
            stores,
            payload_root,
        )
    }

    /// Like [`connect`](Self::connect), with the region and credentials of
    /// `builder` instead of the environment's.
    pub fn with_sdk_config(
        config: LambdaConfig,
        builder: aws_sdk_lambda::config::Builder,
        stores: Arc<StoreRegistry>,
        payload_root: &str,
    ) -> Result<Self> {
        config.validate()?;
        let mut builder = builder
            .http_client(https_client())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            )
            // A task may run for minutes before the first response byte.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = aws_sdk_lambda::Client::from_conf(builder.build());
        Ok(Self {
            client,
            flow: Aimd::new(config.max_concurrency),
            fanout: Arc::new(Fanout::new(
                config.function_names(),
                config.new_environments_per_10s,
            )),
            live: Arc::default(),
            config,
            stores,
            payload_root: payload_root.trim_end_matches('/').to_string(),
        })
    }

    pub fn config(&self) -> &LambdaConfig {
        &self.config
    }

    /// Where an attempt's oversized spec or result is kept.
    fn payload_url(&self, id: &TaskId, what: &str) -> String {
        format!(
            "{}/{}/invocations/s{}-t{}-{}-a{}.{what}.json",
            self.payload_root, id.job_id, id.stage_id, id.task, id.run_id, id.attempt
        )
    }

    /// The invocation payload: the spec inline, or put in the bucket when too large.
    /// Returns the payload and the URL of the spec object, if one was written.
    async fn payload(
        &self,
        stores: &StoreRegistry,
        spec: TaskSpec,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let result_url = self.payload_url(&spec.id, "result");
        let spec_json = serde_json::to_vec(&spec).map_err(|source| SquallError::Encode {
            what: "a task spec".into(),
            source,
        })?;
        let (invocation, spec_url) = if spec_json.len() <= self.config.max_inline_spec_bytes {
            let invocation = Invocation {
                task_spec: Some(spec),
                task_spec_url: None,
                result_url,
            };
            (invocation, None)
        } else {
            let spec_url = self.payload_url(&spec.id, "spec");
            put(stores, &spec_url, spec_json).await?;
            let invocation = Invocation {
                task_spec: None,
                task_spec_url: Some(spec_url.clone()),
                result_url,
            };
            (invocation, Some(spec_url))
        };
        let body = serde_json::to_vec(&invocation).map_err(|source| SquallError::Encode {
            what: "an invocation".into(),
            source,
        })?;
        Ok((body, spec_url))
    }

    /// One invocation with backoff on throttling and Lambda-side errors.
    async fn invoke_with_backoff(
        &self,
        id: &TaskId,
        qualifier: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<Answer> {
        let payload = Blob::new(payload);
        let mut retry = 0;
        loop {
            let waiting = tracing::info_span!("lambda slot", retry);
            let slot = self.flow.acquire().instrument(waiting.clone()).await;
            // Under the in-flight limit, a function with an idle environment
            // or the budget for a new one.
            let function = self.fanout.acquire().instrument(waiting).await;
            let invoke = tracing::info_span!("invoke", function = %function.name(), retry);
            let mut call = self
                .client
                .invoke()
                .function_name(function.name())
                .invocation_type(InvocationType::RequestResponse)
                .payload(payload.clone());
            if let Some(q) = qualifier {
                call = call.qualifier(q);
            }
            // The call runs on by itself, counted for its job (and holding
            // its function's environment), if this attempt is dropped: the
            // engine sweeps again once it ends.
            let live = self.live.started(&id.job_id);
            let timeout = self.config.invocation_timeout;
            let call = tokio::spawn(
                async move {
                    let _live = live;
                    let _function = function;
                    tokio::time::timeout(timeout, call.send()).await
                }
                .instrument(invoke),
            );
            let sent = match call.await {
                Ok(sent) => sent,
                Err(source) => {
                    return Err(SquallError::Crashed {
                        what: "a Lambda invocation",
                        source,
                    });
                }
            };
            let transient = match sent {
                Err(_) => {
                    return Ok(Answer::Failed(TaskFailure {
                        kind: FailureKind::Internal,
                        message: format!(
                            "invocation of {} timed out after {} s",
                            self.config.function,
                            self.config.invocation_timeout.as_secs_f64()
                        ),
                        retryable: true,
                    }));
                }
                Ok(Ok(output)) => {
                    slot.succeeded();
                    return Ok(self.answer(output));
                }
                Ok(Err(error)) => match classify(&self.config.function, error) {
                    Classified::Answer(answer) => {
                        slot.succeeded();
                        return Ok(answer);
                    }
                    Classified::Throttled(message) => {
                        // The slot goes back while this invocation backs off.
                        slot.throttled();
                        message
                    }
                    Classified::Transient(message) => {
                        drop(slot);
                        message
                    }
                },
            };
            if retry >= self.config.backoff.max_retries {
                return Err(SquallError::LambdaUnavailable {
                    function: self.config.function.clone(),
                    tries: retry + 1,
                    last: format!("{id}: {transient}"),
                });
            }
            let delay = self.config.backoff.delay(retry);
            tracing::debug!(task = %id, retry, delay_ms = delay.as_millis() as u64, "{transient}; retrying");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// The function answered 200: its result, or its error.
    fn answer(&self, output: InvokeOutput) -> Answer {
        let body = output.payload().map(|b| b.as_ref()).unwrap_or_default();
        if let Some(kind) = output.function_error() {
            return Answer::Failed(function_failure(&self.config.function, kind, body));
        }
        match serde_json::from_slice::<InvocationResponse>(body) {
            Ok(InvocationResponse {
                task_result: Some(result),
                ..
            }) => Answer::Result(Box::new(result)),
            Ok(InvocationResponse {
                task_result_url: Some(url),
                ..
            }) => Answer::InBucket(url),
            Ok(_) => Answer::Failed(TaskFailure {
                kind: FailureKind::Internal,
                message: format!(
                    "{} answered with neither a result nor its URL",
                    self.config.function
                ),
                retryable: true,
            }),
            Err(e) => Answer::Failed(TaskFailure {
                kind: FailureKind::Internal,
                message: format!(
                    "{} answered with something that is not a task result ({e}): {}",
                    self.config.function,
                    excerpt(body)
                ),
                retryable: true,
            }),
        }
    }
}

async fn put(stores: &StoreRegistry, url: &str, body: Vec<u8>) -> Result<()> {
    let (store, path) = stores
        .resolve(url)
        .map_err(|source| SquallError::Internal { source })?;
    store.put(&path, PutPayload::from(body)).await?;
    Ok(())
}

async fn fetch_result(stores: &StoreRegistry, url: &str) -> Result<TaskResult> {
    let (store, path) = stores
        .resolve(url)
        .map_err(|source| SquallError::Internal { source })?;
    let bytes = store.get(&path).await?.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|source| SquallError::Decode {
        what: format!("the task result at {url}"),
        source,
    })
}

async fn delete(stores: &StoreRegistry, url: &str) {
    if let Ok((store, path)) = stores.resolve(url) {
        let one = futures::stream::iter([Ok(path)]).boxed();
        delete_quietly(store.as_ref(), one, url).await;
    }
}

#[async_trait]
impl ExecutorBackend for LambdaBackend {
    fn name(&self) -> &str {
        "lambda"
    }

    fn max_concurrency(&self) -> usize {
        self.config.max_concurrency
    }

    fn can_reach(&self, url: &url::Url) -> bool {
        remote_scheme(url)
    }

    fn bills_invocations(&self) -> bool {
        true
    }

    fn flow(&self) -> Option<FlowStats> {
        Some(self.flow.stats())
    }

    fn idle_environments(&self) -> usize {
        self.fanout.idle()
    }

    /// Requests this backend makes for an attempt (its spec or result put
    /// in the bucket) are added to the attempt's usage.
    fn strays(&self, job_id: &str) -> usize {
        self.live.count(job_id)
    }

    async fn wait_strays(&self, job_id: &str) {
        self.live.none_of(job_id).await
    }

    async fn invoke(&self, spec: TaskSpec) -> Result<TaskResult> {
        let requests = RequestCounter::new();
        let stores = self.stores.counted(requests.clone());
        let mut result = self.invoke_counted(&stores, spec).await?;
        add_requests(&mut result.usage.requests, &requests.snapshot());
        Ok(result)
    }
}

impl LambdaBackend {
    async fn invoke_counted(&self, stores: &StoreRegistry, spec: TaskSpec) -> Result<TaskResult> {
        let id = spec.id.clone();
        let qualifier = self.config.qualifier_for(spec.memory_limit_bytes);
        let (payload, spec_url) = self.payload(stores, spec).await?;
        let answer = self.invoke_with_backoff(&id, qualifier, payload).await;
        if let Some(url) = &spec_url {
            delete(stores, url).await;
        }
        let failed = |id, failure| TaskResult {
            wire_version: WIRE_VERSION,
            id,
            outcome: TaskOutcome::Failed(failure),
            usage: Default::default(),
        };
        match answer? {
            Answer::Result(result) => Ok(*result),
            // Only the URL this attempt was given is read (and deleted): a
            // function answering with another would have the control plane
            // fetch and delete objects it names.
            Answer::InBucket(url) if url != self.payload_url(&id, "result") => Ok(failed(
                id,
                TaskFailure {
                    kind: FailureKind::Internal,
                    message: format!(
                        "{} answered with result URL {url}, not the one its attempt was given",
                        self.config.function
                    ),
                    retryable: false,
                },
            )),
            Answer::InBucket(url) => {
                let result = fetch_result(stores, &url).await;
                delete(stores, &url).await;
                result
            }
            Answer::Failed(failure) => Ok(failed(id, failure)),
        }
    }
}

/// Object stores a function can reach: not the control plane's disk or memory.
fn remote_scheme(url: &url::Url) -> bool {
    !local_scheme(url.scheme())
}

/// What one invocation came to, short of "could not reach Lambda".
#[derive(Debug)]
enum Answer {
    Result(Box<TaskResult>),
    /// The result was too large to return and is at this URL.
    InBucket(String),
    Failed(TaskFailure),
}

enum Classified {
    Answer(Answer),
    /// Lambda refused for now (429): fewer invocations should be in flight.
    Throttled(String),
    /// Throttling, a Lambda-side 5xx, or the network: try again after a while.
    Transient(String),
}

/// Sorts an error from `Invoke` into "the function failed", "try again later" and
/// "this will never work".
fn classify(
    function: &str,
    error: SdkError<InvokeError, aws_sdk_lambda::config::http::HttpResponse>,
) -> Classified {
    let Some(service) = error.as_service_error() else {
        return match &error {
            SdkError::ConstructionFailure(_) => Classified::Answer(Answer::Failed(TaskFailure {
                kind: FailureKind::Internal,
                message: format!(
                    "cannot build an invocation of {function}: {}",
                    DisplayErrorContext(&error)
                ),
                retryable: false,
            })),
            // Timeouts, connection failures, unreadable responses.
            _ => Classified::Transient(format!(
                "cannot reach Lambda for {function}: {}",
                DisplayErrorContext(&error)
            )),
        };
    };
    let raw = error.raw_response();
    let status = raw.map(|r| r.status().as_u16()).unwrap_or_default();
    let body = raw.and_then(|r| r.body().bytes()).unwrap_or_default();
    if service.is_too_many_requests_exception()
        || service.is_ec2_throttled_exception()
        || status == 429
    {
        return Classified::Throttled(format!("Lambda throttled {function} ({status})"));
    }
    // Emulators (cargo lambda, the runtime interface emulator) report a function
    // error as a 500 whose body is the function's error.
    if let Some(error) = FunctionError::parse(body) {
        return Classified::Answer(Answer::Failed(error.into_failure(function)));
    }
    if status >= 500
        || service.is_service_exception()
        || service.is_resource_not_ready_exception()
        || service.is_resource_conflict_exception()
    {
        return Classified::Transient(format!(
            "Lambda failed invoking {function} ({status}): {}",
            DisplayErrorContext(&error)
        ));
    }
    // No such function or qualifier, no permission, payload refused: no attempt
    // will fare better.
    let code = service.code().unwrap_or("error");
    let message = service.message().unwrap_or_default();
    Classified::Answer(Answer::Failed(TaskFailure {
        kind: FailureKind::Internal,
        message: format!("Lambda refused to invoke {function}: {code} ({status}) {message}"),
        retryable: false,
    }))
}

/// The body of a function error, as Lambda and the runtime API report it.
#[derive(Debug, Deserialize)]
struct FunctionError {
    #[serde(rename = "errorType")]
    error_type: String,
    #[serde(rename = "errorMessage", default)]
    error_message: String,
}

impl FunctionError {
    fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    fn into_failure(self, function: &str) -> TaskFailure {
        TaskFailure {
            kind: FailureKind::Internal,
            retryable: function_error_is_retryable(&self.error_type),
            message: format!(
                "function {function} failed: {}: {}",
                self.error_type, self.error_message
            ),
        }
    }
}

/// A failure from a 200 answer flagged with `X-Amz-Function-Error` (`kind` is
/// `Unhandled` or `Handled`), whose body is the function's error when readable.
fn function_failure(function: &str, kind: &str, body: &[u8]) -> TaskFailure {
    match FunctionError::parse(body) {
        Some(error) => error.into_failure(function),
        None => TaskFailure {
            kind: FailureKind::Internal,
            message: format!("function {function} failed ({kind}): {}", excerpt(body)),
            retryable: true,
        },
    }
}

/// The start of a body, for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
    if body.len() > 300 {
        format!("{text}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_retries: 5,
        };
        for retry in 0..40 {
            let ceiling = Duration::from_millis(100 * (1u64 << retry.min(20))).min(backoff.max);
            for _ in 0..50 {
                assert!(backoff.delay(retry) <= ceiling, "retry {retry}");
            }
        }
        // Jitter: 50 draws of the same retry are not all equal.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| backoff.delay(3)).collect();
        assert!(draws.len() > 1);
        // Growth: late retries wait longer on average than early ones.
        let mean = |r| {
            (0..400)
                .map(|_| backoff.delay(r).as_secs_f64())
                .sum::<f64>()
                / 400.0
        };
        assert!(mean(4) > 2.0 * mean(0), "{} vs {}", mean(4), mean(0));
    }

    #[test]
    fn function_errors_keep_the_message_and_retryability() {
        let crash = br#"{"errorType":"Runtime.ExitError","errorMessage":"exit status 101"}"#;
        let failure = function_failure("squall", "Unhandled", crash);
        assert!(failure.retryable);
        assert!(
            failure
                .message
                .contains("Runtime.ExitError: exit status 101"),
            "{}",
            failure.message
        );
        let invalid = br#"{"errorType":"Squall.InvalidInvocation","errorMessage":"bad"}"#;
        assert!(!function_failure("squall", "Unhandled", invalid).retryable);
        let garbage = function_failure("squall", "Unhandled", b"segfault");
        assert!(garbage.retryable);
        assert!(garbage.message.contains("segfault"), "{}", garbage.message);
    }

    #[test]
    fn functions_reach_only_remote_stores() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        assert!(remote_scheme(&url("s3://bucket/tpch/lineitem/")));
        assert!(!remote_scheme(&url("file:///tmp/tpch/lineitem/")));
        assert!(!remote_scheme(&url("memory:///x")));
    }

    #[test]
    fn bad_configuration_is_refused() {
        let mut config = LambdaConfig::new("f");
        assert!(config.validate().is_ok());
        config.max_concurrency = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("concurrency")
        );
        let mut config = LambdaConfig::new("f");
        config.invocation_timeout = Duration::from_secs(901);
        assert!(config.validate().unwrap_err().to_string().contains("900"));
        let mut config = LambdaConfig::new(" ");
        assert!(config.validate().is_err());
        config = LambdaConfig::new("f");
        config.endpoint = Some("not a url".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("not a URL")
        );
    }
}
