//! The HTTP surface of `squall serve`: the router, the job, table and metrics
//! handlers (schedules have theirs in `schedules`), bearer-token checks, and
//! the OpenAPI document built from the annotations on these handlers.
//!
//! Every error, including a malformed query string or an unknown route or
//! method, is answered as `application/problem+json`.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use utoipa::OpenApi;

use super::api::{
    Accepted, AttemptList, JobList, JobView, Problem, PutTable, ResultPage, SubmitJob, TableList,
    TableView,
};
use super::problem::ApiError;
use super::store::{CatalogTable, JobState};
use super::{Service, now_ms};

/// Largest request body (a job is SQL and table URLs).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The router: `/healthz`, `/metrics` and `/openapi.json` open, everything
/// under `/v1` behind a bearer token.
pub fn router(service: Arc<Service>) -> Router {
    let v1 = Router::new()
        .route("/jobs", get(list_jobs).post(submit_job))
        .route("/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/jobs/{id}/result", get(get_result))
        .route("/jobs/{id}/attempts", get(get_attempts))
        .route("/tables", get(list_tables))
        .route(
            "/tables/{name}",
            get(get_table).put(put_table).delete(delete_table),
        )
        .merge(super::schedules::routes())
        .route_layer(middleware::from_fn_with_state(service.clone(), authorize));
    Router::new()
        .nest("/v1", v1)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not found", "no such route".into())
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                "this route does not take that method".into(),
            )
        })
        .with_state(service)
}

/// The API as OpenAPI 3.1, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Squall",
        description = "Serverless MPP SQL over object storage: jobs, catalog tables, schedules."
    ),
    paths(
        submit_job,
        list_jobs,
        get_job,
        cancel_job,
        get_result,
        get_attempts,
        list_tables,
        get_table,
        put_table,
        delete_table,
        super::schedules::create_schedule,
        super::schedules::list_schedules,
        super::schedules::get_schedule,
        super::schedules::change_schedule,
        super::schedules::delete_schedule,
        super::schedules::schedule_runs,
        healthz,
        metrics,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => {
            let mut response = json.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => {
            ApiError::internal(format!("cannot render the OpenAPI document: {e}")).into_response()
        }
    }
}

async fn authorize(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer t` is `Bearer t`.
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if !token.is_some_and(|t| service.accepts_token(t)) {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid API token as `Authorization: Bearer TOKEN`".into(),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// A JSON request body as `T`: 413 over the size limit, 400 naming what is
/// wrong with it otherwise.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the body is over {MAX_BODY_BYTES} bytes")
        } else {
            rejection.body_text()
        };
        ApiError::new(status, "unreadable body", detail)
    })?;
    let invalid = |detail: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid body",
            format!("the body is not {what}: {detail}"),
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    if let Some(path) = misplaced_array(&value, "") {
        return Err(invalid(format!(
            "{path} is an array where an object or value belongs"
        )));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

/// Fields of request bodies that hold arrays; serde would otherwise take an
/// array for a struct (`"options": [1, 2]`), which the API does not document.
const ARRAY_FIELDS: &[&str] = &["tables"];

/// The path of the first array outside [`ARRAY_FIELDS`], if any.
fn misplaced_array(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::Array(items) => {
            let field = path.rsplit('.').next().unwrap_or_default();
            if !ARRAY_FIELDS.contains(&field) {
                return Some(if path.is_empty() {
                    "the body".into()
                } else {
                    format!("`{path}`")
                });
            }
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| misplaced_array(item, &format!("{path}[{i}]")))
        }
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            misplaced_array(item, &inner)
        }),
        _ => None,
    }
}

/// A page size from a query: `default` when absent, refused outside 1..=max.
pub(super) fn page_limit(
    limit: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid query",
            format!("limit {n} is out of range (1 to {max})"),
        )),
    }
}

/// A query string as `T`, refused as problem+json (axum's own rejection is
/// plain text).
pub(super) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid query",
                rejection.body_text(),
            )),
        }
    }
}

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
        (status = 400, description = "Bad SQL, table, URL or body; an option over its limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A table or output outside the prefixes the server allows", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The output is another job's", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The queue is full (see Retry-After)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn submit_job(
    State(service): State<Arc<Service>>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    let submitted: SubmitJob = json_body(body, "a job")?;
    let accepted = service.submit(submitted).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// The `next` of the previous page.
    after: Option<i64>,
    /// Jobs per page (1 to 1000; default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Jobs in submission order, a page at a time.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "Unknown state or bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_jobs(
    State(service): State<Arc<Service>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    let state =
        match query.state.as_deref() {
            None => None,
            Some(text) => Some(JobState::parse_named(text).map_err(|detail| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid state", detail)
            })?),
        };
    let limit = page_limit(query.limit, 50, 1000)?;
    let (jobs, next) = service
        .store
        .list_jobs(state, query.after, limit)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(service.job_list(jobs, next)?))
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
async fn get_job(
    State(service): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    let job = service
        .store
        .job(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::unknown_job(&id))?;
    Ok(axum::Json(service.view(job)?))
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
async fn cancel_job(
    State(service): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    let job = service.cancel(&id).await?;
    Ok(axum::Json(service.view(job)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ResultQuery {
    /// First row of the page (default 0).
    offset: Option<u64>,
    /// Rows per page (1 to 10000; default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// A page of a succeeded job's rows, and its result files.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/result", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), ResultQuery),
    responses(
        (status = 200, description = "A page of rows", body = ResultPage),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not succeeded", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_result(
    State(service): State<Arc<Service>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ResultQuery>,
) -> Result<axum::Json<ResultPage>, ApiError> {
    let limit = page_limit(query.limit, 1000, 10_000)?;
    let offset = query.offset.unwrap_or(0);
    if offset > i64::MAX as u64 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid query",
            format!("offset {offset} is out of range"),
        ));
    }
    let page = service.result_page(&id, offset, limit).await?;
    Ok(axum::Json(page))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AttemptsQuery {
    /// Only attempts that failed (default false).
    failed: Option<bool>,
}

/// How each task attempt of a job ended, stage by stage (stored as each stage
/// finishes, and when the job ends).
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
async fn get_attempts(
    State(service): State<Arc<Service>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<AttemptsQuery>,
) -> Result<axum::Json<AttemptList>, ApiError> {
    let internal = |e: super::StoreError| ApiError::internal(e.to_string());
    service
        .store
        .job(&id)
        .map_err(internal)?
        .ok_or_else(|| ApiError::unknown_job(&id))?;
    let attempts = service
        .store
        .attempts(&id, query.failed.unwrap_or(false))
        .map_err(internal)?;
    Ok(axum::Json(AttemptList { attempts }))
}

/// Liveness (open).
#[utoipa::path(
    get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Serving", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics (open): jobs by state, tasks, retries, bytes, task durations.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(service): State<Arc<Service>>) -> Result<Response, ApiError> {
    let text = service
        .metrics
        .render(&service.store)
        .map_err(ApiError::internal)?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

/// Catalog tables with the schemas read from their files.
#[utoipa::path(
    get, path = "/v1/tables", tag = "tables",
    responses(
        (status = 200, description = "All tables", body = TableList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_tables(
    State(service): State<Arc<Service>>,
) -> Result<axum::Json<TableList>, ApiError> {
    let tables = service
        .store
        .tables()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut views = Vec::new();
    for table in tables {
        views.push(service.table_view(table).await?);
    }
    Ok(axum::Json(TableList { tables: views }))
}

/// One catalog table.
#[utoipa::path(
    get, path = "/v1/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name")),
    responses(
        (status = 200, description = "The table", body = TableView),
        (status = 400, description = "Its files cannot be read", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Its URL is no longer inside the prefixes the server allows", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such table", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_table(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
) -> Result<axum::Json<TableView>, ApiError> {
    let table = service
        .store
        .table(&name)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::unknown_table(&name))?;
    Ok(axum::Json(service.table_view(table).await?))
}

/// Add or replace a catalog table; its files must be readable (the schema is
/// read from them before the table is stored, and shown as read until the
/// table is put again).
#[utoipa::path(
    put, path = "/v1/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name: letters, digits and _")),
    request_body = PutTable,
    responses(
        (status = 200, description = "Stored", body = TableView, links(
            ("GetTable" = (operation_id = "get_table", parameters(("name" = "$response.body#/name")))),
            ("DeleteTable" = (operation_id = "delete_table", parameters(("name" = "$response.body#/name")))),
        )),
        (status = 400, description = "Bad name, URL, format or body; unreadable files; too many files", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The URL is outside the prefixes the server allows", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_table(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<axum::Json<TableView>, ApiError> {
    let put: PutTable = json_body(body, "a table")?;
    let mut table = CatalogTable {
        name,
        url: put.url,
        format: put.format.map(|f| f.to_ascii_lowercase()),
        options: serde_json::json!({}),
        created_at_ms: now_ms(),
        columns: None,
    };
    // Read the schema now; it is shown as read until the table is put again.
    let view = service.table_view(table.clone()).await?;
    // Stored as checked: the URL normalised.
    table.url = view.url.clone();
    table.columns =
        Some(serde_json::to_value(&view.columns).map_err(|e| ApiError::internal(e.to_string()))?);
    service
        .store
        .put_table(&table)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(view))
}

/// Remove a catalog table (its files stay).
#[utoipa::path(
    delete, path = "/v1/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such table", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_table(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if service
        .store
        .delete_table(&name)
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::unknown_table(&name))
    }
}
