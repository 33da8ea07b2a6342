//! Operations routes, open without a token: liveness, Prometheus metrics,
//! and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::ApiDoc;
use super::problem::ApiError;
use crate::service::core::Service;

/// Liveness (open).
#[utoipa::path(
    get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Serving", body = String, content_type = "text/plain"))
)]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics (open): jobs by state, tasks, retries, backups, bytes,
/// task durations, and the backend's throttles and in-flight limit.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub(super) async fn metrics(State(service): State<Arc<Service>>) -> Result<Response, ApiError> {
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
