//! Schedules: creating and changing them, their job template checked like a
//! submission (URLs normalised; a fixed output becomes the folder of the runs'
//! own subfolders), their cron against the server's minimum interval. Edits
//! are compare-and-set against the timetable's firings.

use crate::api::{
    JobList, NewSchedule, Order, ScheduleChange, ScheduleList, ScheduleView, SubmitJob,
};
use crate::core::Service;
use crate::cron::CronSchedule;
use crate::errors::ServiceError;
use crate::principals::Principal;
use crate::store::{ScheduleRecord, now_ms};
use crate::submission::with_default_labels;
use squall_engine::engine::new_job_id;
use squall_engine::error::SquallError;

impl Service {
    /// Schedules oldest first, a page at a time (a user's own only).
    pub(crate) fn schedules(
        &self,
        caller: &Principal,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScheduleList, ServiceError> {
        let principal = (!caller.is_admin()).then_some(caller.name.as_str());
        let (records, next) = self.store.schedules(principal, after, limit)?;
        let schedules = records
            .into_iter()
            .map(schedule_view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ScheduleList { schedules, next })
    }

    /// One schedule.
    pub(crate) fn schedule(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<ScheduleView, ServiceError> {
        schedule_view(self.find_schedule(caller, id)?)
    }

    /// Removes a schedule; the jobs it started stay (and keep running).
    pub(crate) fn delete_schedule(&self, caller: &Principal, id: &str) -> Result<(), ServiceError> {
        self.find_schedule(caller, id)?;
        if !self.store.delete_schedule(id)? {
            return Err(ServiceError::UnknownSchedule { id: id.to_string() });
        }
        self.schedules_changed.notify_one();
        Ok(())
    }

    /// A page of the jobs a schedule started, in `order`.
    pub(crate) fn schedule_runs(
        &self,
        caller: &Principal,
        id: &str,
        order: Order,
        after: Option<i64>,
        limit: usize,
    ) -> Result<JobList, ServiceError> {
        self.find_schedule(caller, id)?;
        let (jobs, next) = self.store.list_schedule_jobs(id, order, after, limit)?;
        self.job_list(jobs, next)
    }

    /// Checks a schedule's job as a submission, with its output (if any) as
    /// the folder its runs' subfolders go in; returns the template to store
    /// (URLs normalised).
    async fn check_template(
        &self,
        caller: &Principal,
        job: &SubmitJob,
    ) -> Result<serde_json::Value, ServiceError> {
        let once = [
            ("client_request_token", job.client_request_token.is_some()),
            ("wait_timeout", job.wait_timeout.is_some()),
        ];
        if let Some((field, _)) = once.iter().find(|(_, given)| *given) {
            return Err(SquallError::InvalidArgument(format!(
                "a schedule's job has no {field}: it is for one submission, and a \
                 schedule starts many"
            ))
            .into());
        }
        let id = new_job_id();
        let job = &with_default_labels(caller, job.clone())?;
        let mut run = job.clone();
        if let Some(output) = &job.output {
            run.output = Some(format!("{}/{}", output.trim_end_matches('/'), id));
        }
        let request = self.check_job(caller, &run, &id).await?;
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
    fn checked_cron(
        &self,
        expression: &str,
        time_zone: &str,
    ) -> Result<CronSchedule, ServiceError> {
        let cron = parse_cron(expression, time_zone)?;
        if let Some(gap) = cron.shortest_gap(now_ms(), 200) {
            self.config.limits.check_interval(expression, gap)?;
        }
        Ok(cron)
    }

    pub(crate) async fn create_schedule(
        &self,
        caller: &Principal,
        new: NewSchedule,
    ) -> Result<ScheduleView, ServiceError> {
        let cron = self.checked_cron(&new.cron, &new.time_zone)?;
        let template = self.check_template(caller, &new.job).await?;
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
            principal: caller.name.clone(),
        };
        let max = self.config.limits.max_schedules;
        if !self
            .store
            .insert_schedule(&record, max, caller.max_schedules)?
        {
            let own = caller.max_schedules.filter(|own| *own < max);
            return Err(ServiceError::TooMany {
                what: match own {
                    Some(_) => format!("schedules of principal '{}'", caller.name),
                    None => "schedules".into(),
                },
                max: own.unwrap_or(max),
            });
        }
        self.schedules_changed.notify_one();
        schedule_view(record)
    }

    /// Applies a change to a schedule, compare-and-set: if the timetable fired
    /// it (or another edit landed) since it was read, it is read again and the
    /// change applied anew, so no edit writes back a stale next run time.
    pub(crate) async fn change_schedule(
        &self,
        caller: &Principal,
        id: &str,
        change: ScheduleChange,
    ) -> Result<ScheduleView, ServiceError> {
        let owner = self.find_schedule(caller, id)?.principal;
        // The runs are the owner's: checked as the owner's submissions.
        let owner = self.principal_named(&owner, || format!("schedule {id}"))?;
        let template = match &change.job {
            Some(job) => Some(self.check_template(&owner, job).await?),
            None => None,
        };
        for _ in 0..10 {
            let mut record = self.find_schedule(caller, id)?;
            if let Some(template) = &template {
                record.template = template.clone();
            }
            self.apply_change(&mut record, &change)?;
            if self.store.update_schedule(&record)? {
                self.schedules_changed.notify_one();
                record.revision += 1;
                return schedule_view(record);
            }
        }
        Err(ServiceError::ScheduleBusy { id: id.to_string() })
    }

    /// The record as `change` leaves it, its next run recomputed if its
    /// timing changed.
    fn apply_change(
        &self,
        record: &mut ScheduleRecord,
        change: &ScheduleChange,
    ) -> Result<(), ServiceError> {
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

    /// Schedule `id`, if `caller` may see it; one it may not see is not found.
    fn find_schedule(&self, caller: &Principal, id: &str) -> Result<ScheduleRecord, ServiceError> {
        match self.store.schedule(id)? {
            Some(schedule) if caller.owns(&schedule.principal) => Ok(schedule),
            _ => Err(ServiceError::UnknownSchedule { id: id.to_string() }),
        }
    }
}

fn parse_cron(expression: &str, time_zone: &str) -> Result<CronSchedule, ServiceError> {
    CronSchedule::parse(expression, time_zone).map_err(|detail| ServiceError::BadCron { detail })
}

fn to_json(job: &SubmitJob) -> Result<serde_json::Value, ServiceError> {
    serde_json::to_value(job).map_err(|source| ServiceError::Encode {
        what: "the schedule's job".into(),
        source,
    })
}

/// A schedule as the API shows it.
fn schedule_view(record: ScheduleRecord) -> Result<ScheduleView, ServiceError> {
    let job: SubmitJob =
        serde_json::from_value(record.template).map_err(|source| ServiceError::Corrupt {
            what: format!("job of schedule {}", record.id),
            source,
        })?;
    let description = CronSchedule::parse(&record.cron, &record.time_zone)
        .map(|c| c.describe())
        .unwrap_or_default();
    Ok(ScheduleView {
        id: record.id,
        principal: record.principal,
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
