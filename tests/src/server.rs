//! A `squall serve` on loopback for the service tests, spoken to over raw HTTP
//! (reqwest and JSON, not Squall's own client), and a backend whose later
//! stages never answer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::ObjectStoreExt;
use squall_engine::backend::ExecutorBackend;
use squall_engine::{AccessPolicy, Engine, Manifest, read_result};
use squall_executor::{FailureKind, OutputFile, TaskFailure, TaskOutcome, TaskResult, TaskSpec};
use squall_service::api::JobView;
use squall_service::{JobState, JobStore, Service, ServiceConfig, router};
use squall_tools::tpch;

use crate::{compare, expected_answer, is_ordered, render};

pub const TOKEN: &str = "test-token";

pub struct Server {
    pub url: String,
    pub service: Arc<Service>,
    dispatcher: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A server on `data` that lets callers read the TPC-H test data and
    /// `{data}/tables/`, with `max_running` jobs at once.
    pub async fn start(engine: Engine, data: &std::path::Path, max_running: usize) -> Self {
        Self::start_with(engine, data, |config| config.max_running = max_running).await
    }

    /// A server configured as [`Server::start`]'s, then changed by `configure`.
    pub async fn start_with(
        engine: Engine,
        data: &std::path::Path,
        configure: impl FnOnce(&mut ServiceConfig),
    ) -> Self {
        let store = Arc::new(JobStore::open(&data.join("squall.db")).unwrap());
        let results_root = format!("file://{}", data.join("results").display());
        let mut config = ServiceConfig::new(vec![TOKEN.into()], results_root.clone(), &engine);
        config.shuffle_partitions = 3;
        config.access = Arc::new(
            AccessPolicy::new(
                &[
                    crate::data_root().to_string_lossy().to_string(),
                    data.join("tables").to_string_lossy().to_string(),
                ],
                &[results_root],
                &[
                    data.join("squall.db").to_string_lossy().to_string(),
                    engine.work_root.clone(),
                ],
            )
            .unwrap(),
        );
        configure(&mut config);
        let service = Service::new(engine, store, config).unwrap();
        let dispatcher = service.start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = router(service.clone());
        let limits = service.config().http;
        let http = tokio::spawn(async move {
            let _ = squall_service::serve(listener, app, limits, std::future::pending()).await;
        });
        Self {
            url,
            service,
            dispatcher,
            http,
        }
    }

    /// Serves Arrow Flight SQL for this server's service on a port of its
    /// own; returns its address (`127.0.0.1:PORT`).
    pub async fn start_flight(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let service = self.service.clone();
        tokio::spawn(async move {
            let _ = squall_service::flight::serve_flight(listener, service, std::future::pending())
                .await;
        });
        address
    }

    /// Stops everything at once, with no cleanup: a killed process.
    pub fn kill(self) {
        self.service.abort_jobs();
        self.dispatcher.abort();
        self.http.abort();
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// A request with the token and, if given, a JSON body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.send_as(TOKEN, method, path, body).await
    }

    /// A request with `token` and, if given, a JSON body.
    pub async fn send_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        decode(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        decode(request.send().await.unwrap()).await
    }

    pub async fn wait_final(&self, id: &str) -> JobView {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get(&format!("/v1/jobs/{id}"), Some(TOKEN)).await;
            assert_eq!(status, 200, "{body}");
            let view: JobView = serde_json::from_value(body).unwrap();
            if matches!(
                view.state,
                JobState::Succeeded | JobState::Failed | JobState::Cancelled
            ) {
                return view;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} never finished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn decode(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    let bytes = response.bytes().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into()),
    );
    if status >= 400 {
        assert!(problem, "an error must be problem+json: {status} {body}");
    }
    (status, body)
}

pub fn tpch_job(data: &std::path::Path, q: usize) -> serde_json::Value {
    let tables: Vec<_> = tpch::TABLES
        .iter()
        .map(|t| serde_json::json!({"name": t, "url": format!("{}/{t}/", data.display())}))
        .collect();
    serde_json::json!({"sql": tpch::query(q).unwrap(), "tables": tables})
}

/// Reads a finished job's result through its manifest and checks the answer.
pub async fn check_answer(engine: &Engine, view: &JobView, q: usize) {
    assert_eq!(view.state, JobState::Succeeded, "{view:?}");
    let manifest_url = view.manifest_url.clone().expect("manifest");
    let (store, path) = engine.stores.resolve(&manifest_url).unwrap();
    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    let manifest: Manifest = serde_json::from_slice(&bytes).unwrap();
    let files: Vec<OutputFile> = manifest
        .files
        .iter()
        .map(|f| OutputFile {
            url: f.url.clone(),
            keys: vec![],
            size: f.bytes,
            partitions: vec![],
        })
        .collect();
    let batches = read_result(&engine.stores, &files).await.unwrap();
    let mut rows = render(&batches);
    if rows.is_empty() {
        rows.push(manifest.columns.iter().map(|c| c.name.clone()).collect());
    }
    compare(&expected_answer("0.01", q), &rows, is_ordered(q))
        .unwrap_or_else(|e| panic!("Q{q}: {e}"));
    assert_eq!(view.rows, Some(manifest.rows));
}

/// The in-process backend; tasks of stages after the second never answer.
#[derive(Debug)]
pub struct Hanging {
    pub inner: Arc<dyn ExecutorBackend>,
}

impl Hanging {
    /// `engine`, its backend hanging so.
    pub fn engine(engine: &Engine) -> Engine {
        Engine {
            backend: Arc::new(Hanging {
                inner: engine.backend.clone(),
            }),
            ..engine.clone()
        }
    }
}

/// The in-process backend, failing the first attempt of stage 1's tasks —
/// every one, or only `task` — retryably, with "injected: connection reset".
#[derive(Debug)]
pub struct FirstAttemptFails {
    pub inner: Arc<dyn ExecutorBackend>,
    pub task: Option<u32>,
}

impl FirstAttemptFails {
    /// `engine`, its backend failing so.
    pub fn engine(engine: &Engine, task: Option<u32>) -> Engine {
        Engine {
            backend: Arc::new(FirstAttemptFails {
                inner: engine.backend.clone(),
                task,
            }),
            ..engine.clone()
        }
    }
}

#[async_trait]
impl ExecutorBackend for FirstAttemptFails {
    fn name(&self) -> &str {
        "first-attempt-fails"
    }
    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }
    async fn invoke(&self, spec: TaskSpec) -> squall_engine::Result<TaskResult> {
        let chosen = self.task.is_none_or(|t| t == spec.id.task);
        if spec.id.stage_id == 1 && spec.id.attempt == 0 && chosen {
            return Ok(TaskResult {
                wire_version: spec.wire_version,
                id: spec.id,
                outcome: TaskOutcome::Failed(TaskFailure {
                    kind: FailureKind::Storage,
                    message: "injected: connection reset".into(),
                    retryable: true,
                }),
                usage: Default::default(),
            });
        }
        self.inner.invoke(spec).await
    }
}

#[async_trait]
impl ExecutorBackend for Hanging {
    fn name(&self) -> &str {
        "hanging"
    }
    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }
    async fn invoke(&self, spec: TaskSpec) -> squall_engine::Result<TaskResult> {
        if spec.id.stage_id > 2 {
            std::future::pending::<()>().await;
        }
        self.inner.invoke(spec).await
    }
}
