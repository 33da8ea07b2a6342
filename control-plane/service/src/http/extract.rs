//! What handlers take from a request: a JSON body (413 over the limit, 400
//! naming what is wrong), a query string (400 as problem+json, not axum's
//! plain text), a page size within bounds, and the bearer token.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use crate::core::Service;

/// Largest request body (a job is SQL and table URLs).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Counts each job submission (`POST /v1/jobs`) by the status it was
/// answered with, whatever refused it: the token, the body, a queue, the SQL.
pub(super) async fn admission(
    State(service): State<Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    let submits = request.method() == axum::http::Method::POST
        && request
            .uri()
            .path()
            .trim_end_matches('/')
            .ends_with("/jobs");
    let response = next.run(request).await;
    if submits {
        service.metrics.submission(response.status().as_u16());
    }
    response
}

/// What every `/v1` request goes through after its token is checked: its
/// body read whole within the body timeout (408 past it, 413 over
/// [`MAX_BODY_BYTES`]), its handler run to its end on a task of its own (a
/// client that goes away or times out never stops a change half-made), its
/// answer given within the request timeout (503 past it) and marked
/// `Cache-Control: no-store` (answers carry tokens' data).
pub(super) async fn bounded(
    State(service): State<Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    let limits = service.config.http;
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(
        limits.body_timeout,
        http_body_util::BodyExt::collect(limited),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "unreadable body",
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            )
            .into_response();
        }
        Ok(Err(e)) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable body",
                format!("the body could not be read: {e}"),
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body too slow",
                format!(
                    "the body did not arrive within {} s",
                    limits.body_timeout.as_secs_f64()
                ),
            )
            .into_response();
        }
    };
    let request = Request::from_parts(parts, axum::body::Body::from(bytes));
    let handler = tokio::spawn(next.run(request));
    let mut response = match tokio::time::timeout(limits.request_timeout, handler).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            ApiError::internal(format!("the request's handler failed: {e}")).into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request timed out",
            format!(
                "no answer within {} s; what the request changes is still done",
                limits.request_timeout.as_secs_f64()
            ),
        )
        .into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Finds the caller by its bearer token and hands its [`Principal`] to the
/// handler (as a request extension); 401 without a valid token.
pub(super) async fn authorize(
    State(service): State<Arc<Service>>,
    mut request: Request,
    next: Next,
) -> Response {
    match bearer(request.headers()).and_then(|t| service.caller(t)) {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => unauthorized(),
    }
}

/// The bearer token of a request, if it sends one.
pub(super) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer t` is `Bearer t`.
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// 401, asking for a bearer token.
pub(super) fn unauthorized() -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send a valid API token as `Authorization: Bearer TOKEN`".into(),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
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
