//! The CLI client of `squall serve`: `submit`, `jobs`, `job`, `result`,
//! `cancel`, `tables ...` and `schedules ...`, against `--server` with `--token`
//! (or SQUALL_SERVER and SQUALL_TOKEN).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use squall_engine::TableSpec;
use squall_engine::tables::{CSV_OPTION_KEYS, table_arguments};
use squall_service::JobState;
use squall_service::api::{
    JobOptions, JobView, KeyFiltersOption, MissedRunPolicy, NewSchedule, Order, OverlapPolicy,
    PlacementOption, PutTable, ScheduleChange, SubmitJob, TableRef,
};
use squall_service::client::ApiClient;

use super::error::{CliError, Result};

use super::output::write_result;
use super::query::Format;
use super::units;
use super::views::{
    one_line, print_job, print_jobs, print_rows, print_schedule, print_table, time,
};

/// Where the server is and the token to show it.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the Squall server.
    #[arg(long, env = "SQUALL_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// API token (one of the server's --token values).
    #[arg(long, env = "SQUALL_TOKEN", hide_env_values = true)]
    token: String,
}

impl ServerArgs {
    fn client(&self) -> Result<ApiClient> {
        Ok(ApiClient::new(&self.server, &self.token)?)
    }
}

/// A job to submit, now or at each run of a schedule.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    sql: super::query::SqlArgs,
    /// A table: NAME=URL or NAME:FORMAT=URL (a local path is sent as an
    /// absolute file:// URL), or NAME alone for a catalog table.
    #[arg(long = "table", value_name = "NAME=URL")]
    tables: Vec<String>,
    /// A table's Hive partition columns: [TABLE=]COLUMN[:TYPE],... (as
    /// `squall run --partition`).
    #[arg(long = "partition", value_name = "[TABLE=]COLUMNS")]
    partitions: Vec<String>,
    /// A CSV table's options: [TABLE=]delimiter=;,header=false,quote=',escape=\,null=NA
    /// (as `squall run --csv`).
    #[arg(long = "csv", value_name = "[TABLE=]OPTIONS")]
    csv: Vec<String>,
    /// Keep the result under this URL (default: the server's results folder).
    #[arg(long, value_name = "URL")]
    output: Option<String>,
    /// Width of hash shuffles (default: the server's).
    #[arg(long)]
    shuffle_partitions: Option<usize>,
    /// Tasks of the job running at once (default: the backend's limit).
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// Refuse the job when its tables' files add up to more than this (10GB, ...).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    scan_limit: Option<u64>,
    /// Stop the job when it has run this long (90s, 15m, 2h; whole seconds).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    deadline: Option<Duration>,
    /// Never start backup copies of straggling tasks.
    #[arg(long)]
    no_backups: bool,
    /// How reduce stages read shuffles: auto, direct or two-level
    /// [default: the server's].
    #[arg(long, value_name = "MODE", value_parser = super::tasks::parse_exchange)]
    exchange: Option<squall_engine::scheduler::ExchangeMode>,
    /// Never send a slow read a second time.
    #[arg(long)]
    no_hedging: bool,
    /// Where the job's stages run on a server with backend auto: auto (each
    /// where it finishes sooner), local or lambda [default: auto].
    #[arg(long, value_name = "PLACE", value_parser = parse_placement)]
    placement: Option<PlacementOption>,
    /// When a stage feeding one side of a join waits for the keys of the
    /// other side and drops the rows they cannot match: off, auto (where the
    /// wait costs at most four times the stage's own scan) or always
    /// [default: auto].
    #[arg(long, value_name = "WHEN", value_parser = parse_key_filters)]
    key_filters: Option<KeyFiltersOption>,
    /// Do not push a broadcast join's build-side keys into its probe side's
    /// scan (see `squall run --no-join-filters`).
    #[arg(long)]
    no_join_filters: bool,
    /// Stop the job once its estimated cost passes this many US dollars.
    #[arg(long, value_name = "USD", value_parser = units::parse_usd)]
    cost_limit: Option<f64>,
    /// A label for chargeback and listing: KEY=VALUE (repeat for more).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

fn parse_placement(text: &str) -> std::result::Result<PlacementOption, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("'{text}' is not auto, local or lambda"))
}

fn parse_key_filters(text: &str) -> std::result::Result<KeyFiltersOption, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("'{text}' is not off, auto or always"))
}

fn parse_label(text: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not KEY=VALUE"))?;
    Ok((key.to_string(), value.to_string()))
}

impl JobArgs {
    fn job(&self) -> Result<SubmitJob> {
        let sql = self.sql.read()?;
        let mut tables = self
            .tables
            .iter()
            .map(|t| table_ref(t))
            .collect::<Result<Vec<_>>>()?;
        // Checked here as `squall run` checks them; sent as given.
        let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for (index, columns) in table_arguments("--partition", &names, &self.partitions, &[])? {
            squall_engine::hive::parse_columns(columns)?;
            tables[index].partitions = Some(columns.to_string());
        }
        for (index, options) in table_arguments("--csv", &names, &self.csv, CSV_OPTION_KEYS)? {
            squall_engine::formats::CsvOptions::parse(options)?;
            tables[index].csv = Some(options.to_string());
        }
        Ok(SubmitJob {
            sql,
            tables,
            output: self.output.as_deref().map(absolute).transpose()?,
            options: JobOptions {
                shuffle_partitions: self.shuffle_partitions,
                max_concurrency: self.max_concurrency,
                scan_limit_bytes: self.scan_limit,
                deadline_seconds: self.deadline.map(|d| d.as_secs().max(1)),
                backup_tasks: self.no_backups.then_some(false),
                cost_limit_usd: self.cost_limit,
                exchange: self.exchange,
                hedged_reads: self.no_hedging.then_some(false),
                placement: self.placement,
                key_filters: self.key_filters,
                join_filters: self.no_join_filters.then_some(false),
            },
            labels: self.labels.iter().cloned().collect(),
            client_request_token: None,
            wait_timeout: None,
        })
    }
}

/// `NAME` (a catalog table) or `NAME[:FORMAT]=URL`.
fn table_ref(text: &str) -> Result<TableRef> {
    if !text.contains('=') {
        // Checked like a table spec's name.
        let spec: TableSpec = format!("{text}=catalog").parse()?;
        return Ok(TableRef {
            name: spec.name,
            url: None,
            format: None,
            partitions: None,
            csv: None,
        });
    }
    let spec: TableSpec = text.parse()?;
    Ok(TableRef {
        name: spec.name,
        url: Some(absolute(&spec.url)?),
        format: spec.format.map(|f| f.to_string()),
        partitions: None,
        csv: None,
    })
}

/// A location as the server takes it: a URL as given, a local path made an
/// absolute `file://` URL (the server refuses relative paths; the client's
/// working directory is what a path on its command line means).
fn absolute(location: &str) -> Result<String> {
    Ok(squall_engine::tables::to_url(location)?.to_string())
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    job: JobArgs,
    /// Follow the job with progress bars until it ends, then print its result.
    #[arg(long)]
    watch: bool,
    /// How to print the result (with --watch).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Submitting again with the same token (say, a retry after a timeout)
    /// gives the first job rather than a second one.
    #[arg(long, value_name = "TOKEN")]
    client_request_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Only jobs in this state (queued, running, succeeded, failed, cancelled).
    #[arg(long)]
    state: Option<String>,
    /// Only jobs with this label: KEY:VALUE (team:data).
    #[arg(long, value_name = "KEY:VALUE")]
    label: Option<String>,
    /// Jobs per page.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Oldest first (submission order) instead of newest first.
    #[arg(long)]
    oldest_first: bool,
    /// Start past this cursor (the `next` a previous page printed, same order).
    #[arg(long)]
    after: Option<i64>,
}

#[derive(Debug, Args)]
pub struct JobArgsById {
    #[command(flatten)]
    server: ServerArgs,
    /// The job's id.
    id: String,
    /// Follow the job with progress bars until it ends.
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Args)]
pub struct ResultArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The job's id.
    id: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Print at most this many rows (default: all).
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The job's id.
    id: String,
}

#[derive(Debug, Args)]
pub struct TablesArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: TablesCommand,
}

#[derive(Debug, Subcommand)]
enum TablesCommand {
    /// List the catalog's tables.
    List,
    /// A table's URL, format and columns.
    Show { name: String },
    /// Add or replace a table (its files are read for the schema first).
    Put {
        name: String,
        url: String,
        /// parquet, csv or json (default: from the files' extensions).
        #[arg(long)]
        format: Option<String>,
        /// Hive partition columns, outermost folder first: COLUMN[:TYPE],...
        /// (default: those its key=value folders show).
        #[arg(long, value_name = "COLUMNS")]
        partition: Option<String>,
        /// A CSV table's dialect: delimiter=;,header=false,quote=',escape=\,null=NA
        #[arg(long, value_name = "OPTIONS")]
        csv: Option<String>,
    },
    /// Remove a table from the catalog (its files stay).
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: SchedulesCommand,
}

#[derive(Debug, Subcommand)]
enum SchedulesCommand {
    /// List schedules.
    List,
    /// One schedule.
    Show { id: String },
    /// Run a job at the times a cron expression names.
    Create(Box<CreateSchedule>),
    /// Start firing again (runs missed while disabled are not made up for).
    Enable { id: String },
    /// Stop firing (jobs already started go on).
    Disable { id: String },
    /// Remove a schedule (its jobs stay).
    Delete { id: String },
    /// The jobs a schedule started.
    Runs {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Oldest first instead of the latest run first.
        #[arg(long)]
        oldest_first: bool,
        #[arg(long)]
        after: Option<i64>,
    },
}

#[derive(Debug, Args)]
struct CreateSchedule {
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first.
    #[arg(long)]
    cron: String,
    /// IANA time zone the cron is read in.
    #[arg(long, default_value = "UTC")]
    time_zone: String,
    #[arg(long)]
    name: Option<String>,
    /// While the previous run's job is queued or running: skip or allow.
    #[arg(long, default_value = "skip", value_parser = parse_overlap)]
    overlap: OverlapPolicy,
    /// Runs missed while no server ran: skip, or run_once when the server starts.
    #[arg(long, default_value = "skip", value_parser = parse_missed)]
    missed: MissedRunPolicy,
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    #[command(flatten)]
    job: JobArgs,
}

fn parse_overlap(text: &str) -> std::result::Result<OverlapPolicy, String> {
    serde_json::from_value(serde_json::Value::String(text.into()))
        .map_err(|_| format!("'{text}' is not an overlap policy (skip, allow)"))
}

fn parse_missed(text: &str) -> std::result::Result<MissedRunPolicy, String> {
    serde_json::from_value(serde_json::Value::String(text.into()))
        .map_err(|_| format!("'{text}' is not a missed-run policy (skip, run_once)"))
}

pub async fn submit(args: SubmitArgs) -> Result<()> {
    let client = args.server.client()?;
    let mut job = args.job.job()?;
    job.client_request_token = args.client_request_token;
    let accepted = client.submit(&job).await?;
    if !args.watch {
        println!("{}", accepted.id);
        return Ok(());
    }
    eprintln!("job {} {}", accepted.id, accepted.state.as_str());
    let view = watch(&client, &accepted.id).await?;
    finished(&view)?;
    print_result(&client, &view.id, args.format, None).await
}

pub async fn jobs(args: JobsArgs) -> Result<()> {
    let state = match args.state.as_deref() {
        None => None,
        Some(text) => Some(JobState::parse_named(text).map_err(CliError::InvalidArgument)?),
    };
    let list = args
        .server
        .client()?
        .jobs(
            state,
            args.label.as_deref(),
            order(args.oldest_first),
            args.after,
            args.limit.max(1),
        )
        .await?;
    print_jobs(&list.jobs, list.next)
}

fn order(oldest_first: bool) -> Order {
    if oldest_first {
        Order::Oldest
    } else {
        Order::Newest
    }
}

pub async fn job(args: JobArgsById) -> Result<()> {
    let client = args.server.client()?;
    let view = if args.watch {
        watch(&client, &args.id).await?
    } else {
        client.job(&args.id).await?
    };
    print_job(&view);
    let failed = client.attempts(&view.id, true).await?.attempts;
    if !failed.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = failed
            .iter()
            .map(|a| {
                vec![
                    a.stage.to_string(),
                    a.task.to_string(),
                    a.attempt.to_string(),
                    format!("{:.1}s", a.elapsed_ms as f64 / 1000.0),
                    one_line(a.message.as_deref().unwrap_or_default(), 100),
                ]
            })
            .collect();
        print_rows(&["STAGE", "TASK", "ATTEMPT", "TOOK", "FAILED WITH"], &rows);
    }
    if args.watch {
        finished(&view)?;
    }
    Ok(())
}

pub async fn result(args: ResultArgs) -> Result<()> {
    let client = args.server.client()?;
    print_result(&client, &args.id, args.format, args.limit).await
}

pub async fn cancel(args: CancelArgs) -> Result<()> {
    let view = args.server.client()?.cancel(&args.id).await?;
    println!("job {} {}", view.id, view.state.as_str());
    Ok(())
}

pub async fn tables(args: TablesArgs) -> Result<()> {
    let client = args.server.client()?;
    match args.command {
        TablesCommand::List => {
            let list = client.tables().await?;
            let rows: Vec<Vec<String>> = list
                .tables
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.url.clone(),
                        t.format.clone().unwrap_or_else(|| "-".into()),
                        t.columns.len().to_string(),
                    ]
                })
                .collect();
            print_rows(&["NAME", "URL", "FORMAT", "COLUMNS"], &rows);
        }
        TablesCommand::Show { name } => print_table(&client.table(&name).await?),
        TablesCommand::Put {
            name,
            url,
            format,
            partition,
            csv,
        } => {
            let url = absolute(&url)?;
            let put = PutTable {
                url,
                format,
                partitions: partition,
                csv,
            };
            let view = client.put_table(&name, &put).await?;
            print_table(&view);
        }
        TablesCommand::Delete { name } => {
            client.delete_table(&name).await?;
            println!("table {name} deleted");
        }
    }
    Ok(())
}

pub async fn schedules(args: SchedulesArgs) -> Result<()> {
    let client = args.server.client()?;
    match args.command {
        SchedulesCommand::List => {
            let list = client.schedules().await?;
            let rows: Vec<Vec<String>> = list
                .schedules
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.name.clone().unwrap_or_default(),
                        format!("{} ({})", s.cron, s.time_zone),
                        if s.enabled { "yes" } else { "no" }.into(),
                        s.next_run_at_ms.map(time).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_rows(&["ID", "NAME", "CRON", "ENABLED", "NEXT RUN"], &rows);
        }
        SchedulesCommand::Show { id } => print_schedule(&client.schedule(&id).await?),
        SchedulesCommand::Create(create) => {
            let view = client
                .create_schedule(&NewSchedule {
                    name: create.name,
                    cron: create.cron,
                    time_zone: create.time_zone,
                    job: create.job.job()?,
                    enabled: !create.disabled,
                    overlap: create.overlap,
                    missed: create.missed,
                })
                .await?;
            print_schedule(&view);
        }
        SchedulesCommand::Enable { id } => set_enabled(&client, &id, true).await?,
        SchedulesCommand::Disable { id } => set_enabled(&client, &id, false).await?,
        SchedulesCommand::Delete { id } => {
            client.delete_schedule(&id).await?;
            println!("schedule {id} deleted");
        }
        SchedulesCommand::Runs {
            id,
            limit,
            oldest_first,
            after,
        } => {
            let list = client
                .schedule_runs(&id, order(oldest_first), after, limit.max(1))
                .await?;
            print_jobs(&list.jobs, list.next)?;
        }
    }
    Ok(())
}

async fn set_enabled(client: &ApiClient, id: &str, enabled: bool) -> Result<()> {
    let change = ScheduleChange {
        enabled: Some(enabled),
        ..ScheduleChange::default()
    };
    print_schedule(&client.change_schedule(id, &change).await?);
    Ok(())
}

/// Polls a job until it ends: one bar per stage on a terminal, a line per
/// change of state otherwise.
async fn watch(client: &ApiClient, id: &str) -> Result<JobView> {
    let bars = std::io::stderr()
        .is_terminal()
        .then(|| StageBars::new(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())));
    let mut last_state = None;
    loop {
        let view = client.job(id).await?;
        if let Some(bars) = &bars {
            bars.show(&view);
        } else if last_state != Some(view.state) {
            eprintln!("job {id} {}", view.state.as_str());
        }
        last_state = Some(view.state);
        if view.state.is_final() {
            if let Some(bars) = bars {
                bars.finish();
            }
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A job's stage bars, kept between polls.
struct StageBars {
    multi: MultiProgress,
    stages: std::sync::Mutex<Vec<(u32, ProgressBar)>>,
}

impl StageBars {
    fn new(multi: MultiProgress) -> Arc<Self> {
        Arc::new(Self {
            multi,
            stages: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn show(&self, view: &JobView) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        for stage in &view.stages {
            let bar = match stages.iter().find(|(id, _)| *id == stage.stage) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self.multi.add(ProgressBar::new(stage.tasks as u64));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>9} [{bar:30}] {pos}/{len} tasks {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(format!("stage {}", stage.stage));
                    stages.push((stage.stage, bar.clone()));
                    bar
                }
            };
            bar.set_length(stage.tasks as u64);
            bar.set_position(stage.done as u64);
            let mut message = format!(
                "{} scanned, {} written",
                indicatif::HumanBytes(stage.bytes_scanned),
                indicatif::HumanBytes(stage.bytes_written)
            );
            if stage.running > 0 {
                message.push_str(&format!(", {} running", stage.running));
            }
            if stage.retried > 0 {
                message.push_str(&format!(", {} retried", stage.retried));
            }
            if stage.backups > 0 {
                message.push_str(&format!(
                    ", {} backups ({} won)",
                    stage.backups, stage.backup_wins
                ));
            }
            bar.set_message(message);
            if stage.finished_at_ms.is_some() && !bar.is_finished() {
                bar.finish();
            }
        }
    }

    fn finish(&self) {
        let _ = self.multi.clear();
    }
}

/// Ok for a succeeded job; otherwise an error that says how it ended.
fn finished(view: &JobView) -> Result<()> {
    match view.state {
        JobState::Succeeded => Ok(()),
        state => Err(CliError::Job {
            id: view.id.clone(),
            state: state.as_str().into(),
            message: view.error.clone().unwrap_or_default(),
        }),
    }
}

/// Prints a job's result as `squall run` would, read as an Arrow stream.
async fn print_result(
    client: &ApiClient,
    id: &str,
    format: Format,
    limit: Option<u64>,
) -> Result<()> {
    let (schema, batches) = client.result_batches(id, limit).await?;
    write_result(
        &mut std::io::stdout().lock(),
        &schema,
        &batches,
        format.into(),
    )
}
