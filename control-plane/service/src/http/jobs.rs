//! `/v1/jobs`: submit, list, get, cancel; a job's result pages and attempts.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::extract::{ApiQuery, json_body, page_limit};
use super::problem::ApiError;
use crate::api::{
    Accepted, AttemptList, JobList, JobState, JobView, Order, PlanView, Problem, ResultPage,
    SubmitJob,
};
use crate::core::Service;
use crate::limits::check_label_key;
use crate::principals::Principal;
use crate::results::Download;
use axum::response::IntoResponse;

/// Submit a job. It is planned first, so bad SQL, unknown tables, tables the
/// executors cannot reach and scans over the job's limit are refused here.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = SubmitJob,
    responses(
        (status = 202, description = "Queued", body = Accepted, links(
            ("GetJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/id")))),
            ("CancelJob" = (operation_id = "cancel_job", parameters(("id" = "$response.body#/id")))),
            ("GetResult" = (operation_id = "get_result", parameters(("id" = "$response.body#/id")))),
            ("GetAttempts" = (operation_id = "get_attempts", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 200, description = "The job ended within `wait_timeout` (with its error or first page of rows), or `client_request_token` named an earlier submission", body = Accepted, links(
            ("GetJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "Bad SQL, table, URL or body; an option over its limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A table or output outside the prefixes the server allows", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The output is another job's; or the client request token was used for other SQL", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The queue is full (see Retry-After)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn submit_job(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    let submitted: SubmitJob = json_body(body, "a job")?;
    let wait = wait_timeout(submitted.wait_timeout.as_deref())?;
    let (accepted, replayed) = service.submit(&caller, submitted).await?;
    let ended = match wait {
        Some(wait) => service.wait_for_end(&caller, &accepted.id, wait).await?,
        None => None,
    };
    Ok(match ended {
        Some(ended) => (StatusCode::OK, axum::Json(ended)),
        None if replayed => (StatusCode::OK, axum::Json(accepted)),
        None => (StatusCode::ACCEPTED, axum::Json(accepted)),
    })
}

/// Longest `wait_timeout`.
const MAX_WAIT: Duration = Duration::from_secs(50);

/// A submission's `wait_timeout` (`"10s"`, at most [`MAX_WAIT`]); None for none or 0 s.
fn wait_timeout(text: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let seconds = text
        .strip_suffix('s')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n <= MAX_WAIT.as_secs())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid job",
                format!(
                    "wait_timeout must be whole seconds from 0s to {}s, not {text:?}",
                    MAX_WAIT.as_secs()
                ),
            )
        })?;
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Only jobs with this label, as `key:value` (`team:data`).
    label: Option<String>,
    /// `newest` (the default: most recently submitted first) or `oldest`.
    #[param(value_type = Option<String>, pattern = "^(newest|oldest)$")]
    order: Option<String>,
    /// The `next` of the previous page (in the same order).
    after: Option<i64>,
    /// Jobs per page (1 to 1000; default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Jobs, newest first unless asked otherwise, a page at a time.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "Unknown state, bad label or bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_jobs(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    let state =
        match query.state.as_deref() {
            None => None,
            Some(text) => Some(JobState::parse_named(text).map_err(|detail| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid state", detail)
            })?),
        };
    let label = match query.label.as_deref() {
        None => None,
        Some(text) => Some(parse_label(text)?),
    };
    let limit = page_limit(query.limit, 50, 1000)?;
    let order = parse_order(query.order.as_deref())?;
    Ok(axum::Json(service.jobs(
        &caller,
        state,
        label,
        order,
        query.after,
        limit,
    )?))
}

/// A listing's `order` (absent: newest first).
pub(super) fn parse_order(text: Option<&str>) -> Result<Order, ApiError> {
    text.map(Order::parse)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|detail| ApiError::new(StatusCode::BAD_REQUEST, "invalid order", detail))
}

/// `key:value`, the key checked as a label key is.
fn parse_label(text: &str) -> Result<(&str, &str), ApiError> {
    let bad = |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid label", detail);
    let (key, value) = text
        .split_once(':')
        .ok_or_else(|| bad("label must be key:value (team:data)".into()))?;
    check_label_key(key).map_err(|e| bad(e.to_string()))?;
    Ok((key, value))
}

/// One job: state, times, error, per-stage progress, and its result once succeeded.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_job(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    Ok(axum::Json(service.job(&caller, &id)?))
}

/// Cancel a queued or running job: no new tasks, running ones abandoned,
/// temporary objects removed.
#[utoipa::path(
    delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled", body = JobView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job already finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn cancel_job(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    let job = service.cancel(&caller, &id).await?;
    Ok(axum::Json(service.view(job)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ResultQuery {
    /// First row of the page (default 0).
    offset: Option<u64>,
    /// Rows per page (1 to 10000; default 1000); with `csv` and `arrow`, rows
    /// at most (default: all from `offset`).
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// `objects` (the default: a page of JSON objects), `arrays` (a page of
    /// JSON arrays in column order, under `data`), `csv` (CSV text with a
    /// header row) or `arrow` (an Arrow IPC stream); the last two stream the
    /// whole result from `offset`.
    #[param(value_type = Option<String>, pattern = "^(objects|arrays|csv|arrow)$")]
    format: Option<String>,
}

/// A page of a succeeded job's rows, and its result files; or (`format=csv`,
/// `format=arrow`) the whole result as one CSV text or Arrow IPC stream.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/result", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), ResultQuery),
    responses(
        (status = 200, description = "A page of rows, or the rows as CSV or Arrow", content(
            (ResultPage = "application/json"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"),
        )),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not succeeded", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_result(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ResultQuery>,
) -> Result<axum::response::Response, ApiError> {
    let bad = |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid query", detail);
    let offset = query.offset.unwrap_or(0);
    if offset > i64::MAX as u64 {
        return Err(bad(format!("offset {offset} is out of range")));
    }
    let download = match query.format.as_deref() {
        None | Some("objects") | Some("arrays") => None,
        Some("csv") => Some((Download::Csv, "text/csv; charset=utf-8", "csv")),
        Some("arrow") => Some((
            Download::Arrow,
            "application/vnd.apache.arrow.stream",
            "arrows",
        )),
        Some(other) => {
            return Err(bad(format!(
                "format must be objects, arrays, csv or arrow, not {other:?}"
            )));
        }
    };
    let Some((kind, content_type, extension)) = download else {
        let limit = page_limit(
            query.limit.map(|l| l.min(usize::MAX as u64) as usize),
            1000,
            10_000,
        )?;
        let arrays = query.format.as_deref() == Some("arrays");
        let page = service
            .result_page(&caller, &id, offset, limit, arrays)
            .await?;
        return Ok(axum::Json(page).into_response());
    };
    if query.limit == Some(0) {
        return Err(bad("limit must be at least 1".into()));
    }
    let stream = service.result_download(&caller, &id, offset, query.limit, kind)?;
    attachment(content_type, &format!("{id}.{extension}"), None, stream)
}

/// A streamed download named `file_name`, of `length` bytes when known.
fn attachment<S, E>(
    content_type: &str,
    file_name: &str,
    length: Option<u64>,
    stream: S,
) -> Result<axum::response::Response, ApiError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut response = axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, content_type)
        .header(
            axum::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        );
    if let Some(length) = length {
        response = response.header(axum::http::header::CONTENT_LENGTH, length);
    }
    response
        .body(axum::body::Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AttemptsQuery {
    /// Only attempts that failed (default false).
    failed: Option<bool>,
}

/// How each task attempt of a job ended, stage by stage (stored as each stage
/// finishes, and when the job ends), with when it started and ended and
/// whether it was a backup; while the job runs, also the attempts running.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/attempts", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), AttemptsQuery),
    responses(
        (status = 200, description = "The job's attempts", body = AttemptList),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_attempts(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<AttemptsQuery>,
) -> Result<axum::Json<AttemptList>, ApiError> {
    Ok(axum::Json(service.attempts(
        &caller,
        &id,
        query.failed.unwrap_or(false),
    )?))
}

/// The stage DAG a job runs, as planned when it started: each stage's kind,
/// inputs, partitions and output, and the text `squall plan` prints
/// (`planned` false, no stages, until it has started).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/plan", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job's stages", body = PlanView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_plan(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<axum::Json<PlanView>, ApiError> {
    Ok(axum::Json(service.plan(&caller, &id)?.unwrap_or_default()))
}

/// File `index` (from 0, in the order `result`'s `files` lists them) of a
/// succeeded job's result, as Parquet.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/files/{index}", tag = "jobs",
    params(
        ("id" = String, Path, description = "Job id"),
        ("index" = usize, Path, description = "Index of the file in the result's `files`"),
    ),
    responses(
        (status = 200, description = "The Parquet file", content_type = "application/vnd.apache.parquet", body = Vec<u8>),
        (status = 400, description = "Bad index", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job or file", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not succeeded", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_result_file(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path((id, index)): Path<(String, String)>,
) -> Result<axum::response::Response, ApiError> {
    let index: usize = index.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid index",
            format!("file index '{index}' is not a number from 0"),
        )
    })?;
    let (size, stream) = service.result_file(&caller, &id, index).await?;
    let name = format!("{id}-{index}.parquet");
    attachment("application/vnd.apache.parquet", &name, Some(size), stream)
}
