//! Operations routes, open without a token: liveness, Prometheus metrics,
//! and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::ApiDoc;
use super::problem::ApiError;
use crate::api::{Problem, WhoAmI};
use crate::core::{MetricsAccess, Service};
use crate::principals::Principal;

/// Liveness (open).
#[utoipa::path(
    get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Serving", body = String, content_type = "text/plain"))
)]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics (open unless the server asks for a token): jobs by state, tasks, retries, backups, bytes,
/// task durations, and the backend's throttles and in-flight limit.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub(super) async fn metrics(
    State(service): State<Arc<Service>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let allowed = match &service.config().metrics {
        MetricsAccess::Open => true,
        MetricsAccess::ApiTokens => super::extract::bearer(&headers)
            .and_then(|t| service.caller(t))
            .is_some(),
        MetricsAccess::Token(known) => super::extract::bearer(&headers).is_some_and(|t| {
            use subtle::ConstantTimeEq;
            bool::from(known.as_bytes().ct_eq(t.as_bytes()))
        }),
    };
    if !allowed {
        return Ok(super::extract::unauthorized());
    }
    let text = service
        .metrics
        .render(&service.store, service.engine.backend.flow())?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

/// The API as OpenAPI 3.1 (open).
pub(super) async fn openapi() -> Response {
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

/// Who the token belongs to: the principal's name, role and bounds.
#[utoipa::path(
    get, path = "/v1/whoami", tag = "operations",
    responses(
        (status = 200, description = "The caller", body = WhoAmI),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn whoami(
    State(service): State<Arc<Service>>,
    axum::Extension(caller): axum::Extension<Arc<Principal>>,
) -> axum::Json<WhoAmI> {
    let config = service.config();
    let limits = caller.limits(&config.limits);
    axum::Json(WhoAmI {
        name: caller.name.clone(),
        role: caller.role,
        max_running: caller.max_running,
        max_queued: caller.max_queued,
        max_schedules: caller.max_schedules,
        default_deadline_seconds: limits.default_deadline.as_secs(),
        max_deadline_seconds: limits.max_deadline.as_secs(),
        default_scan_limit_bytes: limits.default_scan_limit_bytes,
        max_scan_limit_bytes: limits.max_scan_limit_bytes,
        allowed: caller.access(&config.access).allowed(),
    })
}
