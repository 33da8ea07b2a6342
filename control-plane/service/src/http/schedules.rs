//! `/v1/schedules`: create, list, get, change, delete; a schedule's runs.

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::extract::{ApiQuery, json_body, page_limit};
use super::problem::ApiError;
use crate::api::{JobList, NewSchedule, Problem, ScheduleChange, ScheduleList, ScheduleView};
use crate::core::Service;
use crate::principals::Principal;

/// Create a schedule; its job is checked as a submission would be.
#[utoipa::path(
    post, path = "/v1/schedules", tag = "schedules",
    request_body = NewSchedule,
    responses(
        (status = 201, description = "Created", body = ScheduleView, links(
            ("GetSchedule" = (operation_id = "get_schedule", parameters(("id" = "$response.body#/id")))),
            ("ChangeSchedule" = (operation_id = "change_schedule", parameters(("id" = "$response.body#/id")))),
            ("DeleteSchedule" = (operation_id = "delete_schedule", parameters(("id" = "$response.body#/id")))),
            ("ScheduleRuns" = (operation_id = "schedule_runs", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "Bad cron, time zone, job or body; runs closer than the server allows; an option over its limit", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A table or output of the job outside the prefixes the server allows", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_schedule(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, axum::Json<ScheduleView>), ApiError> {
    let new: NewSchedule = json_body(body, "a schedule")?;
    let view = service.create_schedule(&caller, new).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SchedulePage {
    /// The `next` of the previous page.
    after: Option<String>,
    /// Schedules per page (1 to 1000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Schedules oldest first, a page at a time (a user's own only).
#[utoipa::path(
    get, path = "/v1/schedules", tag = "schedules",
    params(SchedulePage),
    responses(
        (status = 200, description = "A page of schedules", body = ScheduleList),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_schedules(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    ApiQuery(page): ApiQuery<SchedulePage>,
) -> Result<axum::Json<ScheduleList>, ApiError> {
    let limit = page_limit(page.limit, 100, 1000)?;
    Ok(axum::Json(service.schedules(
        &caller,
        page.after.as_deref(),
        limit,
    )?))
}

/// One schedule.
#[utoipa::path(
    get, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_schedule(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    Ok(axum::Json(service.schedule(&caller, &id)?))
}

/// Change a schedule: any of name, cron, time zone, job, enabled, policies.
#[utoipa::path(
    patch, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "Schedule id")),
    request_body = ScheduleChange,
    responses(
        (status = 200, description = "Changed", body = ScheduleView),
        (status = 400, description = "Bad cron, time zone, job or body; runs closer than the server allows; an option over its limit", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A table or output of the job outside the prefixes the server allows", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The schedule kept changing while the change was applied", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn change_schedule(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let change: ScheduleChange = json_body(body, "a schedule change")?;
    Ok(axum::Json(
        service.change_schedule(&caller, &id, change).await?,
    ))
}

/// Removes a schedule; jobs it started stay (and keep running).
#[utoipa::path(
    delete, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn delete_schedule(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.delete_schedule(&caller, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// `newest` (the default: the latest run first) or `oldest`.
    #[param(value_type = Option<String>, pattern = "^(newest|oldest)$")]
    order: Option<String>,
    /// The `next` of the previous page (in the same order).
    after: Option<i64>,
    /// Jobs per page (1 to 1000; default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The jobs a schedule started, newest first unless asked otherwise, paged
/// like `GET /v1/jobs`.
#[utoipa::path(
    get, path = "/v1/schedules/{id}/runs", tag = "schedules",
    params(("id" = String, Path, description = "Schedule id"), RunsQuery),
    responses(
        (status = 200, description = "A page of the schedule's jobs", body = JobList),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn schedule_runs(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    let limit = page_limit(query.limit, 50, 1000)?;
    let order = super::jobs::parse_order(query.order.as_deref())?;
    Ok(axum::Json(service.schedule_runs(
        &caller,
        &id,
        order,
        query.after,
        limit,
    )?))
}
