//! Scheduled jobs: the `/v1/schedules` routes, and the timetable that queues a
//! schedule's job each time its cron falls due.
//!
//! A schedule stores its next run time. The timetable sleeps until the earliest
//! one (or until a schedule changes), then fires every due schedule through
//! [`JobStore::fire_schedule`], which decides in one transaction whether the run
//! starts a job or is skipped (the previous one still queued or running, under
//! the `skip` overlap policy). Runs that fell due while no server was running are
//! found when the server starts and, per schedule, dropped or run once.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;

use super::api::{
    JobList, NewSchedule, Problem, ScheduleChange, ScheduleList, ScheduleView, SubmitJob,
};
use super::cron::CronSchedule;
use super::problem::ApiError;
use super::routes::{ApiQuery, json_body, page_limit};
use super::store::{Firing, MissedRunPolicy, NewJob, ScheduleRecord};
use super::{Service, now_ms};
use crate::engine::new_job_id;

/// Longest the timetable sleeps without looking at the store again.
const MAX_SLEEP_MS: i64 = 60_000;

/// Pause after the store failed to fire schedules.
const RETRY_AFTER_ERROR_MS: i64 = 1_000;

impl Service {
    /// Fires schedules as they fall due, until the task is aborted.
    pub(super) async fn timetable(self: Arc<Self>) {
        let mut starting = true;
        loop {
            let now = now_ms();
            // After a store error, wait a while rather than retry at once: a
            // run that stays due would otherwise spin this loop.
            let mut least = 0;
            if let Err(e) = self.fire_due(now, starting) {
                tracing::error!("cannot fire schedules: {e}");
                least = RETRY_AFTER_ERROR_MS;
            }
            starting = false;
            let next = match self.store.next_fire_time() {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!("cannot read schedules: {e}");
                    None
                }
            };
            let wait = next
                .map_or(MAX_SLEEP_MS, |at| (at - now_ms()).clamp(0, MAX_SLEEP_MS))
                .max(least);
            let changed = self.schedules_changed.notified();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait as u64)) => {}
                _ = changed => {}
            }
        }
    }

    /// Fires every schedule due at `now`. When the server is `starting`, due
    /// runs were missed while it was down: each schedule's `missed` policy says
    /// whether one job runs for them.
    pub(super) fn fire_due(&self, now: i64, starting: bool) -> Result<(), super::StoreError> {
        for schedule in self.store.due_schedules(now)? {
            let Some(due) = schedule.next_fire_at_ms else {
                continue;
            };
            let next = match CronSchedule::parse(&schedule.cron, &schedule.time_zone) {
                Ok(cron) => cron.next_after(now),
                Err(e) => {
                    tracing::error!(schedule = schedule.id, "stored schedule unusable: {e}");
                    None
                }
            };
            let run = !starting || schedule.missed == MissedRunPolicy::RunOnce;
            let sql = schedule.template["sql"].as_str().unwrap_or_default();
            let id = new_job_id();
            let job = NewJob {
                sql: sql.to_string(),
                request: run_request(&schedule.template, due, &id),
                id,
                schedule_id: Some(schedule.id.clone()),
            };
            let max_queued = self.config.limits.max_queued;
            match self
                .store
                .fire_schedule(&schedule.id, due, next, run, &job, now, max_queued)?
            {
                Firing::Started(job) => {
                    tracing::info!(schedule = schedule.id, job = job.id, "schedule fired");
                    self.wake.notify_one();
                }
                Firing::SkippedOverlap => tracing::info!(
                    schedule = schedule.id,
                    "run skipped: the schedule's previous job is still queued or running"
                ),
                Firing::SkippedQueueFull => tracing::warn!(
                    schedule = schedule.id,
                    "run skipped: {max_queued} jobs are queued, the most the server queues"
                ),
                Firing::DroppedMissed => tracing::info!(
                    schedule = schedule.id,
                    missed_at_ms = due,
                    "run missed while no server ran; dropped (missed: skip)"
                ),
                Firing::Stale => {}
            }
        }
        Ok(())
    }

    /// Checks a schedule's job as a submission, with its output (if any) as
    /// the folder its runs' subfolders go in; returns the template to store
    /// (URLs normalised).
    async fn check_template(&self, job: &SubmitJob) -> Result<serde_json::Value, ApiError> {
        let id = new_job_id();
        let mut run = job.clone();
        if let Some(output) = &job.output {
            run.output = Some(format!("{}/{}", output.trim_end_matches('/'), id));
        }
        let request = self.check_job(&run, &id).await?;
        let mut template = job.clone();
        for (table, spec) in template.tables.iter_mut().zip(&request.tables) {
            if table.url.is_some() {
                table.url = Some(spec.url.clone());
            }
        }
        if let (Some(_), Some(run_output)) = (&template.output, &request.output) {
            let folder = run_output
                .trim_end_matches('/')
                .strip_suffix(id.as_str())
                .unwrap_or(run_output)
                .trim_end_matches('/');
            template.output = Some(format!("{folder}/"));
        }
        to_json(&template)
    }

    /// A cron as given, refused if it does not parse or runs more often than
    /// the server allows.
    fn checked_cron(&self, expression: &str, time_zone: &str) -> Result<CronSchedule, ApiError> {
        let cron = parse_cron(expression, time_zone)?;
        if let Some(gap) = cron.shortest_gap(now_ms(), 200) {
            self.config
                .limits
                .check_interval(expression, gap)
                .map_err(ApiError::from)?;
        }
        Ok(cron)
    }

    async fn create_schedule(&self, new: NewSchedule) -> Result<ScheduleView, ApiError> {
        let cron = self.checked_cron(&new.cron, &new.time_zone)?;
        let template = self.check_template(&new.job).await?;
        let now = now_ms();
        let record = ScheduleRecord {
            id: new_job_id(),
            name: new.name,
            cron: new.cron,
            time_zone: new.time_zone,
            template,
            enabled: new.enabled,
            overlap: new.overlap,
            missed: new.missed,
            next_fire_at_ms: if new.enabled {
                cron.next_after(now)
            } else {
                None
            },
            last_fired_at_ms: None,
            skipped_runs: 0,
            last_skipped_at_ms: None,
            created_at_ms: now,
            revision: 0,
        };
        self.store
            .insert_schedule(&record)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        self.schedules_changed.notify_one();
        schedule_view(record)
    }

    /// Applies a change to a schedule, compare-and-set: if the timetable fired
    /// it (or another edit landed) since it was read, it is read again and the
    /// change applied anew, so no edit writes back a stale next run time.
    async fn change_schedule(
        &self,
        id: &str,
        change: ScheduleChange,
    ) -> Result<ScheduleView, ApiError> {
        let template = match &change.job {
            Some(job) => Some(self.check_template(job).await?),
            None => None,
        };
        for _ in 0..10 {
            let mut record = self.find_schedule(id)?;
            if let Some(template) = &template {
                record.template = template.clone();
            }
            self.apply_change(&mut record, &change)?;
            if self
                .store
                .update_schedule(&record)
                .map_err(|e| ApiError::internal(e.to_string()))?
            {
                self.schedules_changed.notify_one();
                record.revision += 1;
                return schedule_view(record);
            }
        }
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "schedule busy",
            format!("schedule '{id}' kept changing while this change was applied; try again"),
        ))
    }

    /// The record as `change` leaves it, its next run recomputed if its
    /// timing changed.
    fn apply_change(
        &self,
        record: &mut ScheduleRecord,
        change: &ScheduleChange,
    ) -> Result<(), ApiError> {
        let change = change.clone();
        // A cron stored before the interval limit does not block other edits.
        let new_timing = change.cron.is_some() || change.time_zone.is_some();
        let retimed = change.cron.is_some()
            || change.time_zone.is_some()
            || change.enabled.is_some_and(|on| on != record.enabled);
        if let Some(name) = change.name {
            record.name = Some(name);
        }
        if let Some(cron) = change.cron {
            record.cron = cron;
        }
        if let Some(zone) = change.time_zone {
            record.time_zone = zone;
        }
        if let Some(enabled) = change.enabled {
            record.enabled = enabled;
        }
        if let Some(overlap) = change.overlap {
            record.overlap = overlap;
        }
        if let Some(missed) = change.missed {
            record.missed = missed;
        }
        let cron = if new_timing {
            self.checked_cron(&record.cron, &record.time_zone)?
        } else {
            parse_cron(&record.cron, &record.time_zone)?
        };
        if !record.enabled {
            record.next_fire_at_ms = None;
        } else if retimed {
            // Runs missed while disabled are not made up for.
            record.next_fire_at_ms = cron.next_after(now_ms());
        }
        Ok(())
    }

    fn find_schedule(&self, id: &str) -> Result<ScheduleRecord, ApiError> {
        self.store
            .schedule(id)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| unknown_schedule(id))
    }
}

/// The request a run of a schedule submits: its template, with an output
/// folder (if any) made the run's own subfolder, named by the time the run fell
/// due (UTC) and the job: `{output}/20261203T020000Z-{job id}/`.
fn run_request(template: &serde_json::Value, due_ms: i64, job_id: &str) -> serde_json::Value {
    let mut request = template.clone();
    if let Some(output) = template.get("output").and_then(|o| o.as_str()) {
        let due = chrono::DateTime::from_timestamp_millis(due_ms)
            .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|| due_ms.to_string());
        request["output"] =
            serde_json::Value::String(format!("{}/{due}-{job_id}/", output.trim_end_matches('/')));
    }
    request
}

fn parse_cron(expression: &str, time_zone: &str) -> Result<CronSchedule, ApiError> {
    CronSchedule::parse(expression, time_zone)
        .map_err(|detail| ApiError::new(StatusCode::BAD_REQUEST, "bad cron", detail))
}

fn to_json(job: &SubmitJob) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(job).map_err(|e| ApiError::internal(e.to_string()))
}

fn unknown_schedule(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown schedule",
        format!("no schedule '{id}'"),
    )
}

fn schedule_view(record: ScheduleRecord) -> Result<ScheduleView, ApiError> {
    let job: SubmitJob = serde_json::from_value(record.template).map_err(|e| {
        ApiError::internal(format!(
            "schedule {} holds an unreadable job: {e}",
            record.id
        ))
    })?;
    let description = CronSchedule::parse(&record.cron, &record.time_zone)
        .map(|c| c.describe())
        .unwrap_or_default();
    Ok(ScheduleView {
        id: record.id,
        name: record.name,
        cron: record.cron,
        time_zone: record.time_zone,
        description,
        job,
        enabled: record.enabled,
        overlap: record.overlap,
        missed: record.missed,
        next_run_at_ms: record.next_fire_at_ms,
        last_run_at_ms: record.last_fired_at_ms,
        skipped_runs: record.skipped_runs,
        last_skipped_at_ms: record.last_skipped_at_ms,
        created_at_ms: record.created_at_ms,
    })
}

/// The schedule routes, mounted under `/v1` behind the token check.
pub(super) fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/schedules", get(list_schedules).post(create_schedule))
        .route(
            "/schedules/{id}",
            get(get_schedule)
                .patch(change_schedule)
                .delete(delete_schedule),
        )
        .route("/schedules/{id}/runs", get(schedule_runs))
}

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
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, axum::Json<ScheduleView>), ApiError> {
    let new: NewSchedule = json_body(body, "a schedule")?;
    let view = service.create_schedule(new).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// All schedules, oldest first.
#[utoipa::path(
    get, path = "/v1/schedules", tag = "schedules",
    responses(
        (status = 200, description = "All schedules", body = ScheduleList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_schedules(
    State(service): State<Arc<Service>>,
) -> Result<axum::Json<ScheduleList>, ApiError> {
    let schedules = service
        .store
        .schedules()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .map(schedule_view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(ScheduleList { schedules }))
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
    Path(id): Path<String>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    Ok(axum::Json(schedule_view(service.find_schedule(&id)?)?))
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
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let change: ScheduleChange = json_body(body, "a schedule change")?;
    Ok(axum::Json(service.change_schedule(&id, change).await?))
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
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let deleted = service
        .store
        .delete_schedule(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if !deleted {
        return Err(unknown_schedule(&id));
    }
    service.schedules_changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// The `next` of the previous page.
    after: Option<i64>,
    /// Jobs per page (1 to 1000; default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The jobs a schedule started, oldest first, paged like `GET /v1/jobs`.
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
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    service.find_schedule(&id)?;
    let limit = page_limit(query.limit, 50, 1000)?;
    let (jobs, next) = service
        .store
        .list_schedule_jobs(&id, query.after, limit)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(service.job_list(jobs, next)?))
}
