//! The HTTP surface of `squall serve`: the router (built here, in one
//! function), the extractors and bearer-token check (`extract`), errors as
//! problem+json (`problem`), one handler file per resource (`jobs`, `tables`,
//! `schedules`, `operations`), and the OpenAPI document built from the
//! handlers' annotations, and the web console's files (`console`). Handlers call the service and turn its domain
//! errors into statuses; nothing below this layer speaks HTTP.
//!
//! Every error, including a malformed query string or an unknown route or
//! method, is answered as `application/problem+json`.

mod console;
mod extract;
mod jobs;
mod operations;
mod problem;

/// The HTTP status the API answers `error` with (other transports map it).
pub(crate) fn problem_status(error: crate::errors::ServiceError) -> u16 {
    problem::ApiError::from(error).status().as_u16()
}
mod schedules;
mod serve;
mod tables;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use utoipa::OpenApi;

use super::core::Service;
pub use extract::MAX_BODY_BYTES;
use extract::{admission, authorize, bounded};
pub use problem::ApiError;
pub use serve::serve;

/// The router: the console (`/`, `/console/...`), `/healthz`, `/metrics` and
/// `/openapi.json` open, everything under `/v1` behind a bearer token.
pub fn router(service: Arc<Service>) -> Router {
    let v1 = Router::new()
        .route("/jobs", get(jobs::list_jobs).post(jobs::submit_job))
        .route("/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/jobs/{id}/result", get(jobs::get_result))
        .route("/jobs/{id}/attempts", get(jobs::get_attempts))
        .route("/jobs/{id}/plan", get(jobs::get_plan))
        .route("/jobs/{id}/files/{index}", get(jobs::get_result_file))
        .route("/tables", get(tables::list_tables))
        .route(
            "/tables/{name}",
            get(tables::get_table)
                .put(tables::put_table)
                .delete(tables::delete_table),
        )
        .route(
            "/schedules",
            get(schedules::list_schedules).post(schedules::create_schedule),
        )
        .route(
            "/schedules/{id}",
            get(schedules::get_schedule)
                .patch(schedules::change_schedule)
                .delete(schedules::delete_schedule),
        )
        .route("/schedules/{id}/runs", get(schedules::schedule_runs))
        .route("/whoami", get(operations::whoami))
        .route_layer(middleware::from_fn_with_state(service.clone(), bounded))
        .route_layer(middleware::from_fn_with_state(service.clone(), authorize))
        .route_layer(middleware::from_fn_with_state(service.clone(), admission));
    Router::new()
        .nest("/v1", v1)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route("/healthz", get(operations::healthz))
        .route("/metrics", get(operations::metrics))
        .route("/openapi.json", get(operations::openapi))
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
        jobs::submit_job,
        jobs::list_jobs,
        jobs::get_job,
        jobs::cancel_job,
        jobs::get_result,
        jobs::get_attempts,
        jobs::get_plan,
        jobs::get_result_file,
        tables::list_tables,
        tables::get_table,
        tables::put_table,
        tables::delete_table,
        schedules::create_schedule,
        schedules::list_schedules,
        schedules::get_schedule,
        schedules::change_schedule,
        schedules::delete_schedule,
        schedules::schedule_runs,
        operations::healthz,
        operations::metrics,
        operations::whoami,
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
