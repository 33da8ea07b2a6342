//! A stand-in for the Lambda Invoke API on loopback, for the backend's failure
//! tests: it runs each invocation through the real handler
//! (`squall_executor::lambda::LambdaExecutor`, the code `squall-lambda` runs) in
//! this process, unless a script tells it to answer like AWS or an emulator does
//! when things go wrong: throttling (429), a Lambda-side 500, a crashed function
//! (real Lambda's 200 with `X-Amz-Function-Error`, or the emulators' 500 with an
//! error body), an unknown function, a slow invocation.
//!
//! The end-to-end tests through `cargo lambda watch` and the real binary are in
//! `tests/tests/emulated_aws.rs`; this fake exists because those emulators never
//! throttle and cannot be told to fail one chosen invocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use squall_tools::tpch;

use crate::TEST_PARTS;
use squall_engine::Engine;
use squall_engine::backend::{Backoff, LambdaBackend, LambdaConfig};
use squall_executor::lambda::{Invocation, InvocationResponse, LambdaExecutor};
use squall_executor::{StoreRegistry, TaskId, TaskSpec};

/// The memory the fake function says it has (what its attempts are billed at).
pub const FAKE_MEMORY_MB: u64 = 2048;

/// How the fake answers one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Run the task and return its result.
    Run,
    /// Run the task, then put the result in the bucket and return its URL, as the
    /// handler does with a result too large for the payload.
    RunResultInBucket,
    /// Run the task and also leave an object under the job's folder that the
    /// scheduler never hears of, as a straggling attempt would.
    RunAndLeaveStray,
    /// 429 TooManyRequestsException; the task does not run.
    Throttle,
    /// 500 ServiceException from Lambda itself; the task does not run.
    ServiceError,
    /// The function ran the task (its output is written) and then died: real
    /// Lambda's 200 with `X-Amz-Function-Error: Unhandled`.
    CrashAfterRunning,
    /// The function died: an emulator's 500 with `{"errorType","errorMessage"}`.
    CrashEmulatorStyle,
    /// The handler's answer to a malformed invocation (not retryable).
    InvalidInvocation,
    /// 404 ResourceNotFoundException.
    NoSuchFunction,
    /// Run the task after sleeping this long.
    Slow(Duration),
    /// Answer with the URL of another object as the task's result, as a
    /// compromised or buggy function might: the control plane must neither read
    /// nor delete it.
    ResultElsewhere(&'static str),
}

/// One invocation as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub function: String,
    pub qualifier: Option<String>,
    pub id: TaskId,
    /// The spec came by URL (too large for the payload), not inline.
    pub spec_in_bucket: bool,
    pub reply: Reply,
    /// Invocations of this stage in flight when this one arrived, itself included.
    pub stage_in_flight: usize,
    /// Invocations in flight when this one arrived, itself included.
    pub in_flight: usize,
    /// Per input stage of the spec: its slice and how many partition slots it holds.
    pub inputs: Vec<(u32, Option<u32>, usize)>,
}

/// Picks a reply from the task, the invocation's sequence number and the
/// invocations in flight when it arrived (itself included).
type Script = Box<dyn Fn(&TaskId, usize, usize) -> Reply + Send + Sync>;

struct FakeState {
    executor: LambdaExecutor,
    stores: Arc<StoreRegistry>,
    /// Decides each reply from the task and the invocation's sequence number.
    script: Script,
    calls: Mutex<Vec<Call>>,
    in_flight: Mutex<HashMap<u32, usize>>,
}

/// The fake, listening until dropped.
pub struct FakeLambda {
    pub endpoint: String,
    state: Arc<FakeState>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeLambda {
    /// Serves on a free loopback port; `script(task, n)` picks the reply of the
    /// `n`th invocation (from 0). Tasks read and write through `stores`.
    pub async fn start(
        stores: Arc<StoreRegistry>,
        script: impl Fn(&TaskId, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_load(stores, move |id, n, _| script(id, n)).await
    }

    /// Like [`start`](Self::start), with a script that also sees how many
    /// invocations are in flight, as a function's concurrency limit does.
    pub async fn start_with_load(
        stores: Arc<StoreRegistry>,
        script: impl Fn(&TaskId, usize, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let config = squall_executor::lambda::FunctionConfig {
            spill_dir: std::env::temp_dir(),
            max_pool_bytes: None,
            memory_mb: Some(FAKE_MEMORY_MB),
            started: std::time::Instant::now(),
        };
        let state = Arc::new(FakeState {
            executor: LambdaExecutor::new(stores.clone(), config),
            stores,
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint,
            state,
            server,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }
}

impl FakeLambda {
    /// A Lambda backend's config pointed at this fake: 4 invocations in
    /// flight, a minute per invocation, a quick backoff.
    pub fn config(&self) -> LambdaConfig {
        LambdaConfig {
            endpoint: Some(self.endpoint.clone()),
            max_concurrency: 4,
            invocation_timeout: Duration::from_secs(60),
            backoff: Backoff {
                first: Duration::from_millis(2),
                max: Duration::from_millis(50),
                max_retries: 8,
            },
            ..LambdaConfig::new("squall-executor")
        }
    }
}

/// A Lambda backend configured by `config` (test credentials, us-east-1),
/// its oversized payloads under `work`.
pub fn lambda_backend(
    config: LambdaConfig,
    stores: &Arc<StoreRegistry>,
    work: &str,
) -> LambdaBackend {
    let sdk = aws_sdk_lambda::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"));
    LambdaBackend::with_sdk_config(config, sdk, stores.clone(), work).unwrap()
}

/// An engine on [`lambda_backend`], with its work files under `work`.
pub fn lambda_engine(config: LambdaConfig, stores: &Arc<StoreRegistry>, work: &str) -> Engine {
    let backend = lambda_backend(config, stores, work);
    Engine::with_backend(stores.clone(), Arc::new(backend), work)
}

/// A registry whose `bucket` (an `s3://` URL) is one in-memory store
/// holding TPC-H SF 0.01 under `tpch/`; the store is returned to look inside.
pub async fn bucket_with_tpch(bucket: &str) -> (Arc<StoreRegistry>, Arc<InMemory>) {
    let stores = Arc::new(StoreRegistry::new());
    let memory = Arc::new(InMemory::new());
    stores.register(bucket, memory.clone()).unwrap();
    tpch::generate(&stores, 0.01, &format!("{bucket}/tpch"), TEST_PARTS, |_| {})
        .await
        .unwrap();
    (stores, memory)
}

/// Objects in such a bucket outside the tables.
pub async fn leftovers(memory: &InMemory) -> Vec<String> {
    let objects: Vec<_> = memory.list(None).try_collect().await.unwrap();
    objects
        .into_iter()
        .map(|o| o.location.to_string())
        .filter(|p| !p.starts_with("tpch/"))
        .collect()
}

impl Drop for FakeLambda {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Counts an invocation of a stage in flight until dropped.
struct InFlight<'a> {
    state: &'a FakeState,
    stage: u32,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.state.in_flight.lock().unwrap();
        if let Some(n) = map.get_mut(&self.stage) {
            *n -= 1;
        }
    }
}

async fn invoke(
    State(state): State<Arc<FakeState>>,
    Path(function): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let invocation: Invocation = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => {
            return function_error(StatusCode::OK, "Squall.InvalidInvocation", &e.to_string());
        }
    };
    let spec = match (&invocation.task_spec, &invocation.task_spec_url) {
        (Some(spec), _) => spec.clone(),
        (None, Some(url)) => read_spec(&state.stores, url).await,
        (None, None) => panic!("invocation without a spec"),
    };
    let (reply, _guard) = {
        let mut calls = state.calls.lock().unwrap();
        let mut map = state.in_flight.lock().unwrap();
        let stage_in_flight = {
            let n = map.entry(spec.id.stage_id).or_default();
            *n += 1;
            *n
        };
        let in_flight = map.values().sum();
        let reply = (state.script)(&spec.id, calls.len(), in_flight);
        calls.push(Call {
            function,
            qualifier: query.get("Qualifier").cloned(),
            id: spec.id.clone(),
            spec_in_bucket: invocation.task_spec_url.is_some(),
            reply,
            stage_in_flight,
            in_flight,
            inputs: spec
                .inputs
                .iter()
                .map(|i| {
                    let slots = i.producers.iter().map(|p| p.partitions.len()).sum();
                    (i.stage_id, i.slice.map(|s| s.start), slots)
                })
                .collect(),
        });
        let guard = InFlight {
            state: &state,
            stage: spec.id.stage_id,
        };
        (reply, guard)
    };
    match reply {
        Reply::Run => run(&state, invocation).await,
        Reply::RunAndLeaveStray => {
            let stray = invocation.result_url.replace(".result.json", ".stray");
            let (store, path) = state.stores.resolve(&stray).expect("stray URL");
            store
                .put(&path, PutPayload::from("stray"))
                .await
                .expect("put stray object");
            run(&state, invocation).await
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            run(&state, invocation).await
        }
        Reply::RunResultInBucket => {
            let url = invocation.result_url.clone();
            let response = state.executor.handle(invocation).await.expect("handler");
            let mut result = response.task_result.expect("inline result");
            // As the handler does: the PUT is counted in the attempt's usage.
            let scheme = url.split(':').next().unwrap_or_default().to_string();
            result.usage.requests.entry(scheme).or_default().put += 1;
            let (store, path) = state.stores.resolve(&url).expect("result URL");
            let body = serde_json::to_vec(&result).expect("encode result");
            store
                .put(&path, PutPayload::from(body))
                .await
                .expect("put result");
            let answer = InvocationResponse {
                task_result: None,
                task_result_url: Some(url),
            };
            json(StatusCode::OK, HeaderMap::new(), &answer)
        }
        Reply::ResultElsewhere(url) => {
            let answer = InvocationResponse {
                task_result: None,
                task_result_url: Some(url.to_string()),
            };
            json(StatusCode::OK, HeaderMap::new(), &answer)
        }
        Reply::Throttle => aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            r#"{"Type":"User","message":"Rate Exceeded.","Reason":"ReservedFunctionConcurrentInvocationLimitExceeded"}"#,
        ),
        Reply::ServiceError => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            r#"{"Type":"Service","message":"Internal error"}"#,
        ),
        Reply::NoSuchFunction => aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            r#"{"Type":"User","message":"Function not found"}"#,
        ),
        Reply::CrashAfterRunning => {
            let _ = state.executor.handle(invocation).await;
            function_error(
                StatusCode::OK,
                "Runtime.ExitError",
                "Runtime exited with error: signal: killed",
            )
        }
        Reply::CrashEmulatorStyle => function_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.ExitError",
            "process exited with status 101",
        ),
        Reply::InvalidInvocation => function_error(
            StatusCode::OK,
            "Squall.InvalidInvocation",
            "invalid invocation: scripted",
        ),
    }
}

async fn run(state: &FakeState, invocation: Invocation) -> Response {
    match state.executor.handle(invocation).await {
        Ok(answer) => json(StatusCode::OK, HeaderMap::new(), &answer),
        Err(e) => function_error(StatusCode::OK, e.error_type(), &e.to_string()),
    }
}

async fn read_spec(stores: &StoreRegistry, url: &str) -> TaskSpec {
    let (store, path) = stores.resolve(url).expect("spec URL");
    let bytes = store
        .get(&path)
        .await
        .expect("spec object")
        .bytes()
        .await
        .expect("spec bytes");
    serde_json::from_slice(&bytes).expect("spec JSON")
}

fn json(status: StatusCode, headers: HeaderMap, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).expect("encode");
    let mut response = (status, headers, body).into_response();
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("header value"),
    );
    response
}

/// A Lambda service error, shaped as AWS sends it.
fn aws_error(status: StatusCode, error_type: &str, body: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amzn-errortype",
        error_type.parse().expect("header value"),
    );
    let mut response = (status, headers, body).into_response();
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("header value"),
    );
    response
}

/// A function error: with status 200 the way real Lambda reports it (with the
/// `X-Amz-Function-Error` header), with 500 the way the emulators do (without).
fn function_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    if status == StatusCode::OK {
        headers.insert(
            "x-amz-function-error",
            "Unhandled".parse().expect("header value"),
        );
    }
    json(
        status,
        headers,
        &serde_json::json!({ "errorType": error_type, "errorMessage": message }),
    )
}
