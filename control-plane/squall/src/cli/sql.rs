//! `squall sql`: ad-hoc SQL at a prompt (history, statements over several
//! lines until `;`), from `-c`, from `-f FILE` or from standard input. Tables
//! come from `--table`, a local catalog file (`--catalog`), or a quoted URL
//! or path in `FROM`. `EXPLAIN` prints a query's stage plan; `EXPLAIN
//! ANALYZE` runs it and prints each stage as it ran (tasks, where, attempts,
//! rows, bytes, time) and where its CPU went by operator. Ctrl-C cancels the
//! running statement (at the prompt: back to the prompt; otherwise the
//! command ends with 130).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Deserialize;
use squall_engine::planner::statements::{Statement, statements, url_tables};
use squall_engine::scheduler::{StageStats, TaskOptions};
use squall_engine::tables::{set_csv_options, set_partitions};
use squall_engine::{Engine, JobRequest, JobResult, JobRun, PlanOptions, Stop, TableSpec};
use squall_executor::human_bytes;

use super::backend::BackendArgs;
use super::error::{CliError, Result};
use super::output::write_result;
use super::query::{Format, PlanKnobs, TableArgs};
use super::tasks::TaskArgs;

#[derive(Debug, Args)]
pub(super) struct ShellArgs {
    #[command(flatten)]
    tables: TableArgs,
    /// A local catalog: a TOML file of `[tables.NAME]` entries, each with a
    /// `url` (a path relative to the file's folder, or a URL) and optionally
    /// `format`, `partitions` and `csv` (as --partition and --csv take them).
    #[arg(long, value_name = "FILE", env = "SQUALL_CATALOG")]
    catalog: Option<PathBuf>,
    /// Run these statements (separated by `;`) and end.
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SQL",
        conflicts_with = "file"
    )]
    command: Option<String>,
    /// Run the statements in FILE (`-`: standard input) and end.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    plan: PlanKnobs,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    tasks: TaskArgs,
}

pub(super) async fn sql(args: ShellArgs) -> Result<()> {
    let mut tables = args.tables.specs()?;
    if let Some(path) = &args.catalog {
        tables.extend(catalog_tables(path)?);
    }
    let session = Session {
        engine: args.backend.engine().await?,
        tables,
        plan: args.plan.plan_options(args.backend.parallelism()),
        tasks: args.tasks.options(args.backend.max_stage_concurrency)?,
        format: args.format,
    };
    let text = match (&args.command, &args.file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => Some(read_stdin()?),
        (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(CliError::io(
            format!("cannot read SQL file {}", path.display()),
        ))?),
        (None, None) if !std::io::stdin().is_terminal() => Some(read_stdin()?),
        (None, None) => None,
    };
    match text {
        Some(text) => session.run_text(&text, false).await,
        None => session.interactive().await,
    }
}

fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(CliError::io("cannot read SQL from standard input"))?;
    Ok(text)
}

/// A local catalog file's tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    tables: BTreeMap<String, CatalogEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogEntry {
    url: String,
    format: Option<String>,
    partitions: Option<String>,
    csv: Option<String>,
}

/// The tables of the catalog file at `path`; a relative path in it is
/// relative to the file's folder.
fn catalog_tables(path: &Path) -> Result<Vec<TableSpec>> {
    let text = std::fs::read_to_string(path).map_err(CliError::io(format!(
        "cannot read catalog {}",
        path.display()
    )))?;
    let file: CatalogFile = toml::from_str(&text).map_err(|e| {
        CliError::InvalidArgument(format!("catalog {}: {}", path.display(), e.message()))
    })?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut tables = Vec::new();
    for (name, entry) in file.tables {
        let url = if entry.url.contains("://") || Path::new(&entry.url).is_absolute() {
            entry.url.clone()
        } else {
            folder.join(&entry.url).to_string_lossy().to_string()
        };
        let format = entry.format.as_deref().map(str::parse).transpose()?;
        let mut spec = vec![TableSpec::checked(&name, &url, format)?];
        if let Some(p) = &entry.partitions {
            set_partitions(&mut spec, std::slice::from_ref(p))?;
        }
        if let Some(c) = &entry.csv {
            set_csv_options(&mut spec, std::slice::from_ref(c))?;
        }
        tables.extend(spec);
    }
    Ok(tables)
}

struct Session {
    engine: Engine,
    tables: Vec<TableSpec>,
    plan: PlanOptions,
    tasks: TaskOptions,
    format: Format,
}

impl Session {
    /// Runs the statements of `text` in order, stopping at the first error.
    async fn run_text(&self, text: &str, interactive: bool) -> Result<()> {
        for statement in statements(text)? {
            self.run(&statement, interactive).await?;
        }
        Ok(())
    }

    async fn run(&self, statement: &Statement, interactive: bool) -> Result<()> {
        match statement {
            Statement::Query(sql) => {
                let request = self.request(sql)?;
                let result = self.run_job(&request, interactive).await?;
                let batches = match &result.batches {
                    Some(batches) => batches.clone(),
                    None => squall_engine::read_result(&self.engine.stores, &result.files).await?,
                };
                let mut out = std::io::stdout().lock();
                write_result(&mut out, &result.schema, &batches, self.format.into())
            }
            Statement::Explain {
                analyze: false,
                query,
            } => {
                let request = self.request(query)?;
                let planned = squall_engine::plan_job(
                    &request.sql,
                    &request.tables,
                    &request.plan,
                    self.engine.stores.clone(),
                    "work://job",
                    "work://job/result",
                )
                .await?;
                print!("{}", planned.dag.display(&[]));
                Ok(())
            }
            Statement::Explain {
                analyze: true,
                query,
            } => {
                let request = self.request(query)?;
                let started = Instant::now();
                let result = self.run_job(&request, interactive).await?;
                print!("{}", analyzed(&result, started.elapsed()));
                Ok(())
            }
        }
    }

    /// The job of `sql`, over the session's tables and those it names by URL.
    fn request(&self, sql: &str) -> Result<JobRequest> {
        let (sql, by_url) = url_tables(sql, &self.tables)?;
        let mut tables = self.tables.clone();
        tables.extend(by_url);
        let request = JobRequest {
            plan: self.plan.clone(),
            tasks: self.tasks.clone(),
            ..JobRequest::new(sql, tables)
        };
        Ok(request)
    }

    /// Runs `request`; Ctrl-C meanwhile cancels it.
    async fn run_job(&self, request: &JobRequest, interactive: bool) -> Result<JobResult> {
        let (tell, stop) = tokio::sync::watch::channel(Stop::Run);
        let watcher = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: stopping the statement");
                let _ = tell.send(Stop::Cancel);
                if !interactive && tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let run = JobRun {
            stop: Some(stop),
            ..JobRun::default()
        };
        let result = self.engine.run_as(request, run).await;
        watcher.abort();
        Ok(result?)
    }

    /// The prompt: statements over lines until `;`; `\q`, `quit` or Ctrl-D
    /// ends it, Ctrl-C drops the statement being typed.
    async fn interactive(&self) -> Result<()> {
        use rustyline::error::ReadlineError;
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| CliError::InvalidArgument(format!("cannot start the prompt: {e}")))?;
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".squall_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        eprintln!("squall sql: end statements with ';', \\q to quit");
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                "squall> "
            } else {
                "     -> "
            };
            let line = tokio::task::block_in_place(|| editor.readline(prompt));
            match line {
                Ok(line) => {
                    let trimmed = line.trim();
                    if buffer.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
                        break;
                    }
                    if buffer.is_empty() && trimmed.is_empty() {
                        continue;
                    }
                    buffer.push_str(&line);
                    buffer.push('\n');
                    if !trimmed.ends_with(';') {
                        continue;
                    }
                    let _ = editor.add_history_entry(buffer.trim());
                    if let Err(e) = self.run_text(&buffer, true).await {
                        eprintln!("error: {}", one_line(&e.to_string()));
                    }
                    buffer.clear();
                }
                Err(ReadlineError::Interrupted) => buffer.clear(),
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    return Err(CliError::InvalidArgument(format!("the prompt failed: {e}")));
                }
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(())
    }
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// Operators shown per stage, the most CPU first.
const TOP_OPERATORS: usize = 5;

/// `EXPLAIN ANALYZE`'s text: each stage (and combine step) as it ran, and
/// the job's totals.
fn analyzed(result: &JobResult, took: std::time::Duration) -> String {
    let mut stages: Vec<(String, &StageStats)> = Vec::new();
    for stage in &result.stages {
        for step in &stage.combine_steps {
            stages.push((format!("{} (combine)", step.stage), step));
        }
        stages.push((stage.stage.to_string(), stage));
    }
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|(id, s)| {
            vec![
                id.clone(),
                s.tasks.to_string(),
                place(s),
                s.attempts.to_string(),
                s.rows_in.to_string(),
                s.rows_out.to_string(),
                human_bytes(s.bytes_in),
                human_bytes(s.bytes_scanned),
                human_bytes(s.bytes_out),
                format!("{:.3} s", s.elapsed_ms as f64 / 1000.0),
            ]
        })
        .collect();
    let mut out = super::views::rows_text(
        &[
            "STAGE", "TASKS", "WHERE", "ATTEMPTS", "ROWS IN", "ROWS OUT", "READ", "SCANNED",
            "WROTE", "TIME",
        ],
        &rows,
    );
    out.push('\n');
    for (id, s) in &stages {
        let mut cpu: Vec<(&String, &u64)> = s.cpu_us.iter().collect();
        cpu.sort_by(|a, b| b.1.cmp(a.1));
        let shown: Vec<String> = cpu
            .iter()
            .take(TOP_OPERATORS)
            .map(|(name, us)| {
                let output = match s.operator_output.get(*name) {
                    Some((rows, 0)) => format!(" {rows} rows"),
                    Some((rows, bytes)) => format!(" {rows} rows {}", human_bytes(*bytes)),
                    None => String::new(),
                };
                format!("{name} {:.3} s{output}", **us as f64 / 1e6)
            })
            .collect();
        out.push_str(&format!("stage {id} CPU: {}\n", shown.join(", ")));
    }
    let total = &result.cost.total;
    out.push_str(&format!(
        "\n{} rows in {:.3} s; {} scanned, {} requests\n",
        result.rows,
        took.as_secs_f64(),
        human_bytes(total.bytes_scanned),
        total.requests.total(),
    ));
    out
}

/// Where a stage's tasks ran: `local N`, `lambda N` or both.
fn place(stage: &StageStats) -> String {
    match (stage.local_tasks, stage.lambda_tasks) {
        (local, 0) => format!("local {local}"),
        (0, lambda) => format!("lambda {lambda}"),
        (local, lambda) => format!("local {local}, lambda {lambda}"),
    }
}
