//! A typed client of `squall serve`'s HTTP API, for the CLI (`squall submit`,
//! `squall jobs`, ...) and for programs that drive Squall.
//!
//! Every call sends the bearer token and decodes either the answer or the
//! server's `application/problem+json` error, which keeps its status, title and
//! detail (4xx: the request was wrong; 5xx: the server failed).

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::JobState;
use crate::api::{
    Accepted, AttemptList, JobList, JobView, NewSchedule, Order, Problem, PutTable, ResultPage,
    ScheduleChange, ScheduleList, ScheduleView, SubmitJob, TableList, TableView,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{title} ({status}): {detail}")]
    Api {
        status: u16,
        title: String,
        detail: String,
    },
    #[error("cannot reach the Squall server at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    #[error("invalid server URL '{url}': {message}")]
    BadUrl { url: String, message: String },
}

impl ClientError {
    /// True when the request was at fault (a 4xx answer), not the server or network.
    pub fn is_user_error(&self) -> bool {
        match self {
            ClientError::Api { status, .. } => (400..500).contains(status),
            ClientError::BadUrl { .. } => true,
            ClientError::Transport { .. } | ClientError::Decode { .. } => false,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// `server` is the base URL (`http://127.0.0.1:8080`).
    pub fn new(server: &str, token: &str) -> Result<Self> {
        let bad = |message: String| ClientError::BadUrl {
            url: server.to_string(),
            message,
        };
        let url = url::Url::parse(server).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("use http:// or https://".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|source| ClientError::Transport {
                url: server.to_string(),
                source,
            })?;
        Ok(Self {
            base: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    pub async fn submit(&self, job: &SubmitJob) -> Result<Accepted> {
        self.call(Method::POST, "/v1/jobs", Some(job)).await
    }

    /// One page of jobs in `order`, optionally of one state, past cursor `after`.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        label: Option<&str>,
        order: Order,
        after: Option<i64>,
        limit: usize,
    ) -> Result<JobList> {
        let mut path = format!("/v1/jobs?limit={limit}&order={}", order.as_str());
        if let Some(state) = state {
            path.push_str(&format!("&state={}", state.as_str()));
        }
        if let Some(label) = label {
            path.push_str(&format!("&label={}", segment(label)));
        }
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        self.get(&path).await
    }

    pub async fn job(&self, id: &str) -> Result<JobView> {
        self.get(&format!("/v1/jobs/{}", segment(id))).await
    }

    pub async fn cancel(&self, id: &str) -> Result<JobView> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/jobs/{}", segment(id)), None)
            .await
    }

    pub async fn result(&self, id: &str, offset: u64, limit: usize) -> Result<ResultPage> {
        self.get(&format!(
            "/v1/jobs/{}/result?offset={offset}&limit={limit}",
            segment(id)
        ))
        .await
    }

    /// A job's whole result (at most `limit` rows), as record batches: read
    /// as an Arrow stream, so every type and digit arrives as it was.
    pub async fn result_batches(
        &self,
        id: &str,
        limit: Option<u64>,
    ) -> Result<(arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>)> {
        let mut path = format!("/v1/jobs/{}/result?format=arrow", segment(id));
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        let (url, bytes) = self.send::<()>(Method::GET, &path, None).await?;
        let decode = |e: arrow::error::ArrowError| ClientError::Decode {
            url: url.clone(),
            message: e.to_string(),
        };
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(decode)?;
        let schema = reader.schema();
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(decode)?;
        Ok((schema, batches))
    }

    /// How a job's task attempts ended (only the failed ones with `failed_only`).
    pub async fn attempts(&self, id: &str, failed_only: bool) -> Result<AttemptList> {
        self.get(&format!(
            "/v1/jobs/{}/attempts?failed={failed_only}",
            segment(id)
        ))
        .await
    }

    pub async fn tables(&self) -> Result<TableList> {
        self.get("/v1/tables").await
    }

    pub async fn table(&self, name: &str) -> Result<TableView> {
        self.get(&format!("/v1/tables/{}", segment(name))).await
    }

    pub async fn put_table(&self, name: &str, table: &PutTable) -> Result<TableView> {
        self.call(
            Method::PUT,
            &format!("/v1/tables/{}", segment(name)),
            Some(table),
        )
        .await
    }

    pub async fn delete_table(&self, name: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &format!("/v1/tables/{}", segment(name)))
            .await
    }

    pub async fn schedules(&self) -> Result<ScheduleList> {
        self.get("/v1/schedules").await
    }

    pub async fn schedule(&self, id: &str) -> Result<ScheduleView> {
        self.get(&format!("/v1/schedules/{}", segment(id))).await
    }

    pub async fn create_schedule(&self, schedule: &NewSchedule) -> Result<ScheduleView> {
        self.call(Method::POST, "/v1/schedules", Some(schedule))
            .await
    }

    pub async fn change_schedule(&self, id: &str, change: &ScheduleChange) -> Result<ScheduleView> {
        self.call(
            Method::PATCH,
            &format!("/v1/schedules/{}", segment(id)),
            Some(change),
        )
        .await
    }

    pub async fn delete_schedule(&self, id: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &format!("/v1/schedules/{}", segment(id)))
            .await
    }

    pub async fn schedule_runs(
        &self,
        id: &str,
        order: Order,
        after: Option<i64>,
        limit: usize,
    ) -> Result<JobList> {
        let mut path = format!(
            "/v1/schedules/{}/runs?limit={limit}&order={}",
            segment(id),
            order.as_str()
        );
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        self.get(&path).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let (url, bytes) = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            message: e.to_string(),
        })
    }

    async fn call_empty(&self, method: Method, path: &str) -> Result<()> {
        self.send::<()>(method, path, None).await.map(|_| ())
    }

    /// Sends a request; an error status becomes [`ClientError::Api`].
    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(String, bytes::Bytes)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok((url, bytes));
        }
        Err(match serde_json::from_slice::<Problem>(&bytes) {
            Ok(problem) => ClientError::Api {
                status: status.as_u16(),
                title: problem.title,
                detail: problem.detail,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                title: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase(),
                detail: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            },
        })
    }
}

/// A path segment with the characters that would change the path escaped.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
