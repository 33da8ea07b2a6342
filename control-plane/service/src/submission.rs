//! Taking a job in: its request checked against its principal's access
//! policy and limits and planned (so what would fail at once is refused now),
//! its output claimed, and queued, unless the server's queue or the
//! principal's share of it is full.

use std::time::Duration;

use crate::api::{Accepted, JobState, PlacementOption, SubmitJob, TableRef};
use crate::core::Service;
use crate::errors::ServiceError;
use crate::limits::PRINCIPAL_LABEL;
use crate::principals::Principal;
use crate::store::{JobRecord, NewJob, QueueRefusal, now_ms};
use squall_engine::access::{Access, AccessPolicy};
use squall_engine::backend::Place;
use squall_engine::engine::{JobRequest, new_job_id};
use squall_engine::error::SquallError;
use squall_engine::planner::{PlanOptions, Widen};
use squall_engine::scheduler::{Exchange, Speculation, TaskOptions};
use squall_engine::tables::{TableGuard, TableSpec};
use squall_executor::Hedging;

impl Service {
    /// A job's table as the engine takes it: a catalog table looked up where
    /// no URL is given, the URL checked against `access`.
    fn table_of(&self, access: &AccessPolicy, t: &TableRef) -> Result<TableSpec, ServiceError> {
        let given = TableExtras {
            partitions: t.partitions.clone(),
            csv: t.csv.clone(),
        };
        let (url, format, extras) = match &t.url {
            Some(url) => (url.clone(), t.format.clone(), given),
            None => {
                let found = self
                    .store
                    .table(&t.name)?
                    .ok_or_else(|| SquallError::Table {
                        table: t.name.clone(),
                        message: "no URL given and no catalog table of that name".into(),
                    })?;
                let kept = TableExtras::of_catalog(&found.options);
                (found.url, found.format, given.or(kept))
            }
        };
        let url = access.check(&format!("table '{}'", t.name), &url, Access::Read)?;
        Ok(table_spec(
            &t.name,
            url.as_str(),
            format.as_deref(),
            &extras,
        )?)
    }

    /// The engine's request for a submission of `caller` that runs as job
    /// `job_id`: its URLs normalised and checked against the caller's access
    /// policy, its options against the caller's limits, catalog tables looked up.
    pub(super) fn request(
        &self,
        caller: &Principal,
        submitted: &SubmitJob,
        job_id: &str,
    ) -> Result<JobRequest, ServiceError> {
        let access = caller.access(&self.config.access);
        let limits = &caller.limits(&self.config.limits);
        limits.check_sql(&submitted.sql)?;
        let tables = submitted
            .tables
            .iter()
            .map(|t| self.table_of(access, t))
            .collect::<Result<Vec<_>, ServiceError>>()?;
        let mut request = JobRequest::new(submitted.sql.clone(), tables);
        let (output, local_output) = self.outputs(access, submitted, job_id)?;
        request.output = Some(output);
        request.local_output = local_output;
        let options = &submitted.options;
        request.plan = PlanOptions {
            shuffle_partitions: match options.shuffle_partitions {
                Some(n) => limits.count(
                    "options.shuffle_partitions",
                    n,
                    limits.max_shuffle_partitions,
                )?,
                None => self
                    .config
                    .shuffle_partitions
                    .min(limits.max_shuffle_partitions),
            },
            guard: TableGuard {
                max_files: Some(limits.max_table_files),
                access: Some(access.clone()),
            },
            // No width asked for: it grows with the tables, within the limit.
            widen: options.shuffle_partitions.is_none().then(|| Widen {
                max_partitions: limits.max_shuffle_partitions,
                ..Widen::default()
            }),
            key_filters: options.key_filters.map(Into::into).unwrap_or_default(),
            join_filters: options.join_filters.unwrap_or(true),
            ..PlanOptions::default()
        };
        request.tasks = TaskOptions {
            max_concurrency: match options.max_concurrency {
                Some(n) => {
                    Some(limits.count("options.max_concurrency", n, limits.max_concurrency)?)
                }
                None => Some(limits.max_concurrency),
            },
            max_stage_concurrency: self.config.max_stage_concurrency,
            max_result_bytes: limits.max_result_bytes,
            memory_limit_bytes: self.config.task_memory,
            max_memory_limit_bytes: self.config.task_memory_max,
            speculation: match options.backup_tasks {
                Some(false) => Speculation::disabled(),
                _ => Speculation::default(),
            },
            exchange: Exchange {
                mode: options.exchange.unwrap_or(self.config.exchange),
                ..Exchange::default()
            },
            hedging: match options.hedged_reads {
                Some(false) => Hedging::off(),
                _ => Hedging::on(),
            },
            place: match options.placement {
                None | Some(PlacementOption::Auto) => None,
                Some(PlacementOption::Local) => Some(Place::Local),
                Some(PlacementOption::Lambda) => Some(Place::Lambda),
            },
            ..TaskOptions::default()
        };
        request.scan_limit_bytes = Some(limits.scan_limit(options.scan_limit_bytes)?);
        request.deadline = Some(limits.deadline(options.deadline_seconds)?);
        request.cost_limit_usd = limits.cost_limit(options.cost_limit_usd)?;
        limits.check_labels(&submitted.labels)?;
        Ok(request)
    }

    /// Where a job's result goes: the output it names, checked, or its
    /// default folder under the results root and, for a job kept wholly
    /// here, on this disk.
    fn outputs(
        &self,
        access: &AccessPolicy,
        submitted: &SubmitJob,
        job_id: &str,
    ) -> Result<(String, Option<String>), ServiceError> {
        Ok(match &submitted.output {
            Some(output) => (
                access.check("the output", output, Access::Write)?.into(),
                None,
            ),
            None => {
                let (remote, here) = self.config.default_result(job_id);
                (squall_engine::urls::to_url(&remote)?.into(), here)
            }
        })
    }

    /// Checks a submission of `caller` by planning it (URLs, SQL, tables,
    /// limits), claims the output it names, then queues it.
    /// Queues a submission; a client token of an earlier submission of the
    /// caller answers with that job instead (`true`: it did).
    pub(crate) async fn submit(
        &self,
        caller: &Principal,
        submitted: SubmitJob,
    ) -> Result<(Accepted, bool), ServiceError> {
        let token = submitted.client_request_token.clone();
        let token = token.as_deref();
        if let Some(token) = token {
            check_token(token)?;
            if let Some(first) = self.store.job_by_token(&caller.name, token)? {
                return Ok((replayed(first, token, &submitted.sql)?, true));
            }
        }
        let id = new_job_id();
        self.check_room(caller)?;
        let submitted = with_default_labels(caller, submitted)?;
        let request = self.check_job(caller, &submitted, &id).await?;
        // What runs is what was checked: the URLs as normalised.
        let mut stored = submitted.clone();
        stored.wait_timeout = None;
        normalise_urls(&mut stored, &request);
        if let Some(output) = &stored.output {
            self.engine.claim_output(output, &id).await?;
        }
        let body = serde_json::to_value(&stored).map_err(|source| ServiceError::Encode {
            what: "the submission".into(),
            source,
        })?;
        let new = NewJob {
            id: id.clone(),
            sql: stored.sql,
            request: body,
            schedule_id: None,
            principal: caller.name.clone(),
            client_token: token.map(str::to_string),
        };
        let inserted = self.store.insert_queued(
            &new,
            now_ms(),
            self.config.limits.max_queued,
            caller.max_queued,
        );
        let job = match inserted {
            Ok(Ok(job)) => job,
            refused => {
                if let Some(output) = &stored.output {
                    self.engine.release_output(output, &id).await;
                }
                return Err(match refused {
                    Err(e) => e.into(),
                    // The same token submitted at the same time: the first won.
                    Ok(Err(QueueRefusal::Duplicate)) => {
                        let token = token.unwrap_or_default();
                        let first = self.store.job_by_token(&caller.name, token)?;
                        if let Some(first) = first {
                            return Ok((replayed(first, token, &submitted.sql)?, true));
                        }
                        self.queue_full()
                    }
                    Ok(Err(QueueRefusal::Principal)) => self.principal_queue_full(caller),
                    Ok(_) => self.queue_full(),
                });
            }
        };
        self.wake.notify_one();
        Ok((accepted(&job), false))
    }

    /// Job `id` as it ended, if it ends within `wait`: its state, its error
    /// or its first page of rows. None when it is still queued or running.
    pub(crate) async fn wait_for_end(
        &self,
        caller: &Principal,
        id: &str,
        wait: Duration,
    ) -> Result<Option<Accepted>, ServiceError> {
        let deadline = tokio::time::Instant::now() + wait;
        let Some(job) = self.final_job(caller, id, Some(deadline)).await? else {
            return Ok(None);
        };
        let result = match job.state {
            JobState::Succeeded => Some(self.result_page(caller, id, 0, 1000, false).await?),
            _ => None,
        };
        Ok(Some(Accepted {
            error: job.error.clone(),
            result,
            ..accepted(&job)
        }))
    }

    /// Job `id` once it has ended (polled, 5 ms apart at first, 100 ms at
    /// most); None if `deadline` comes first.
    pub(crate) async fn final_job(
        &self,
        caller: &Principal,
        id: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<JobRecord>, ServiceError> {
        let mut pause = Duration::from_millis(5);
        loop {
            let job = self.owned_job(caller, id)?;
            if job.state.is_final() {
                return Ok(Some(job));
            }
            let now = tokio::time::Instant::now();
            let wake = match deadline {
                Some(deadline) if now >= deadline => return Ok(None),
                Some(deadline) => (now + pause).min(deadline),
                None => now + pause,
            };
            tokio::time::sleep_until(wake).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Refused while the queue, or the caller's share of it, is full.
    fn check_room(&self, caller: &Principal) -> Result<(), ServiceError> {
        let queued = self.store.count_jobs(JobState::Queued)?;
        if queued >= self.config.limits.max_queued as u64 {
            return Err(self.queue_full());
        }
        if let Some(max) = caller.max_queued {
            let own = self.store.count_by_principal(JobState::Queued)?;
            if own.get(&caller.name).copied().unwrap_or(0) >= max as u64 {
                return Err(self.principal_queue_full(caller));
            }
        }
        Ok(())
    }

    fn queue_full(&self) -> ServiceError {
        ServiceError::QueueFull {
            max: self.config.limits.max_queued,
            retry_after: Duration::from_secs(30),
        }
    }

    fn principal_queue_full(&self, caller: &Principal) -> ServiceError {
        ServiceError::PrincipalQueueFull {
            principal: caller.name.clone(),
            max: caller.max_queued.unwrap_or(self.config.limits.max_queued),
            retry_after: Duration::from_secs(30),
        }
    }

    /// Refuses a job that would fail at once: a URL outside the allowed
    /// prefixes, an option over its limit, bad SQL, unknown tables, tables the
    /// backend's executors cannot reach, a scan over its limit. Returns the
    /// request as it would run.
    pub(super) async fn check_job(
        &self,
        caller: &Principal,
        submitted: &SubmitJob,
        job_id: &str,
    ) -> Result<JobRequest, ServiceError> {
        let request = self.request(caller, submitted, job_id)?;
        self.engine.check(&request).await?;
        Ok(request)
    }
}

/// `submitted` with the caller's default labels for the keys it does not
/// set, and labelled with the caller's name; refused if it claims another's.
pub(super) fn with_default_labels(
    caller: &Principal,
    mut submitted: SubmitJob,
) -> Result<SubmitJob, ServiceError> {
    for (key, value) in &caller.default_labels {
        submitted
            .labels
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    match submitted.labels.get(PRINCIPAL_LABEL) {
        Some(named) if *named != caller.name => {
            return Err(SquallError::InvalidArgument(format!(
                "label '{PRINCIPAL_LABEL}' is set by the server to the submitting principal \
                 ('{}'), not '{named}'",
                caller.name
            ))
            .into());
        }
        _ => {
            submitted
                .labels
                .insert(PRINCIPAL_LABEL.into(), caller.name.clone());
        }
    }
    Ok(submitted)
}

/// Puts the URLs `request` runs with (normalised) into the submission kept in
/// the store.
fn normalise_urls(submitted: &mut SubmitJob, request: &JobRequest) {
    for (table, spec) in submitted.tables.iter_mut().zip(&request.tables) {
        if table.url.is_some() {
            table.url = Some(spec.url.clone());
        }
    }
    if submitted.output.is_some() {
        submitted.output = request.output.clone();
    }
}

/// Longest client request token.
const MAX_TOKEN: usize = 128;

/// Refuses a client token that is not 1 to [`MAX_TOKEN`] of `A-Z a-z 0-9 . _ : -`.
fn check_token(token: &str) -> Result<(), ServiceError> {
    let valid = !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if valid {
        return Ok(());
    }
    let shown: String = token.chars().take(MAX_TOKEN).collect();
    Err(SquallError::InvalidArgument(format!(
        "client_request_token '{}' must be 1 to {MAX_TOKEN} letters, digits and . _ : -",
        shown.escape_default()
    ))
    .into())
}

/// The answer to a resubmission with the token of `first`: that job, if its
/// SQL is the same.
fn replayed(first: JobRecord, token: &str, sql: &str) -> Result<Accepted, ServiceError> {
    if first.sql != sql {
        return Err(ServiceError::TokenReused {
            token: token.to_string(),
            id: first.id,
        });
    }
    Ok(accepted(&first))
}

fn accepted(job: &JobRecord) -> Accepted {
    Accepted {
        id: job.id.clone(),
        state: job.state,
        error: None,
        result: None,
    }
}

/// A table's Hive partition columns and CSV dialect as given
/// (`year:int,month:int`, `delimiter=;`); a catalog table keeps them in its
/// options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableExtras {
    pub partitions: Option<String>,
    pub csv: Option<String>,
}

impl TableExtras {
    pub fn of_catalog(options: &serde_json::Value) -> Self {
        let text = |key: &str| {
            options
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Self {
            partitions: text("partitions"),
            csv: text("csv"),
        }
    }

    pub fn to_options(&self) -> serde_json::Value {
        let mut options = serde_json::Map::new();
        if let Some(p) = &self.partitions {
            options.insert("partitions".into(), p.clone().into());
        }
        if let Some(c) = &self.csv {
            options.insert("csv".into(), c.clone().into());
        }
        options.into()
    }

    /// Each of these given, else `other`'s.
    fn or(self, other: Self) -> Self {
        Self {
            partitions: self.partitions.or(other.partitions),
            csv: self.csv.or(other.csv),
        }
    }
}

/// A table spec from its parts, with the CLI's checks of name, format, URL,
/// partition columns and CSV dialect.
pub(super) fn table_spec(
    name: &str,
    url: &str,
    format: Option<&str>,
    extras: &TableExtras,
) -> Result<TableSpec, SquallError> {
    let format = format.map(str::parse).transpose()?;
    let mut spec = TableSpec::checked(name, url, format)?;
    let table_err = |e: SquallError| SquallError::Table {
        table: name.to_string(),
        message: e.to_string(),
    };
    if let Some(partitions) = &extras.partitions {
        spec.partitions = Some(squall_engine::hive::parse_columns(partitions).map_err(table_err)?);
    }
    if let Some(csv) = &extras.csv {
        spec.csv = Some(squall_engine::formats::CsvOptions::parse(csv).map_err(table_err)?);
    }
    Ok(spec)
}
