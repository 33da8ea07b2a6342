//! `squall serve`: the HTTP job API on the chosen backend, jobs kept in
//! `DATA_DIR/squall.db`.
//!
//! Settings come from flags, then environment variables, then an optional TOML
//! file (`--config`), then defaults, in that order of precedence; API tokens
//! from all three are accepted together. The file is read strictly: an unknown
//! key or a value of the wrong type stops the server before it starts, naming
//! the key and the line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use squall_engine::{AccessPolicy, Engine, Prices};
use squall_service::core::MetricsAccess;
use squall_service::{
    DEFAULT_RETENTION, HttpLimits, JobStore, Limits, Service, ServiceConfig, router,
    serve as serve_http,
};

use super::error::{CliError, Result};

use super::backend::{BackendArgs, BackendKind, PreferArg};
use super::limits::{Bounds, LimitArgs, TaskMemory};
use super::principals::{PrincipalFile, ServerFolders};
use super::units;
use squall_engine::scheduler::ExchangeMode;

/// Defaults of the settings below.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_RUNNING: usize = 4;
/// How long a stopping server waits for its jobs' tasks to stop.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file of settings (flags and environment variables win over it).
    #[arg(long, value_name = "FILE", env = "SQUALL_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SQUALL_LISTEN")]
    listen: Option<String>,
    /// Also serve Arrow Flight SQL (gRPC) on this address, for ADBC, JDBC and
    /// BI tools: the same tokens, principals and limits as the HTTP API.
    #[arg(long, value_name = "ADDR", env = "SQUALL_FLIGHT_LISTEN")]
    flight_listen: Option<String>,
    /// Folder for the job store (squall.db) and, on the local backend, work files and results.
    #[arg(long, value_name = "DIR", env = "SQUALL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// An API token clients send as `Authorization: Bearer TOKEN` (repeatable);
    /// SQUALL_TOKENS adds comma-separated ones, the config file's `tokens` more.
    #[arg(long = "token", value_name = "TOKEN")]
    tokens: Vec<String>,
    /// Jobs running at once; later ones wait in submission order [default: 4].
    #[arg(long, env = "SQUALL_MAX_RUNNING")]
    max_running: Option<usize>,
    /// How jobs' reduce stages read shuffles unless a job says (auto, direct,
    /// two-level; `options.exchange`) [default: auto].
    #[arg(long, value_name = "MODE", value_parser = super::tasks::parse_exchange)]
    exchange: Option<ExchangeMode>,
    /// A URL prefix callers' tables and outputs may name: s3://bucket/prefix/,
    /// file:///data/ or a path (repeatable; SQUALL_ALLOW adds comma-separated
    /// ones, the config file's `allow` more). Without any, callers read nothing
    /// and write only under the server's results folder.
    #[arg(long = "allow", value_name = "PREFIX")]
    allow: Vec<String>,
    /// Delete finished jobs, their attempts and default results after this long
    /// (`forever` keeps them) [default: 30d].
    #[arg(long, value_name = "DURATION", env = "SQUALL_RETAIN_JOBS")]
    retain_jobs: Option<String>,
    /// /metrics answers only a caller sending this token (a scraper's own;
    /// or `metrics_token` in the config file) [default: /metrics is open].
    #[arg(long, value_name = "TOKEN", env = "SQUALL_METRICS_TOKEN")]
    metrics_token: Option<String>,
    /// /metrics answers only a caller sending an API token.
    #[arg(long, conflicts_with = "metrics_token")]
    metrics_private: bool,
    /// Where a job's trace is seen when spans are exported (OTEL_EXPORTER_OTLP_ENDPOINT):
    /// a URL with {trace_id} in it, e.g. http://jaeger:16686/trace/{trace_id};
    /// the job view and the console link to it.
    #[arg(long, value_name = "TEMPLATE", env = "SQUALL_TRACE_URL")]
    trace_url: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    backend: BackendArgs,
}

impl std::fmt::Debug for ServeArgs {
    /// Tokens are counted, never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("tokens", &format_args!("{} (hidden)", self.tokens.len()))
            .field("max_running", &self.max_running)
            .field("allow", &self.allow)
            .field("retain_jobs", &self.retain_jobs)
            .field("metrics_private", &self.metrics_private)
            .field("limits", &self.limits)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The config file: the same settings as the flags.
///
/// ```toml
/// listen = "0.0.0.0:8080"
/// data_dir = "/var/lib/squall"
/// tokens = ["change-me"]
/// max_running = 8
/// exchange = "auto"              # or "direct", "two-level"
/// trace_url = "http://jaeger:16686/trace/{trace_id}"
///
/// [backend]
/// kind = "lambda"
/// function = "squall-executor"
/// work_dir = "s3://my-bucket/squall-work"
/// max_concurrency = 500
///
/// [prices]                       # default: us-east-1 list prices
/// lambda_gb_second_arm64 = 0.0000133334
/// ```
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<String>,
    flight_listen: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    tokens: Vec<String>,
    max_running: Option<usize>,
    exchange: Option<ExchangeMode>,
    trace_url: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    retain_jobs: Option<String>,
    /// Who may call, beyond the tokens of the admin principal.
    #[serde(default)]
    principals: Vec<PrincipalFile>,
    metrics_token: Option<String>,
    #[serde(default)]
    metrics_private: bool,
    #[serde(default)]
    limits: LimitArgs,
    #[serde(default)]
    backend: BackendFile,
    /// What job costs are estimated at (see `squall_engine::cost`).
    #[serde(default)]
    prices: Prices,
}

impl std::fmt::Debug for ConfigFile {
    /// Tokens are counted, never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFile")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("tokens", &format_args!("{} (hidden)", self.tokens.len()))
            .field("max_running", &self.max_running)
            .field("allow", &self.allow)
            .field("retain_jobs", &self.retain_jobs)
            .field("principals", &self.principals)
            .field("metrics_private", &self.metrics_private)
            .field("limits", &self.limits)
            .field("backend", &self.backend)
            .field("prices", &self.prices)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    kind: Option<BackendKind>,
    executors: Option<usize>,
    function: Option<String>,
    qualifier: Option<String>,
    #[serde(default)]
    memory_qualifiers: Vec<String>,
    lambda_endpoint: Option<String>,
    max_concurrency: Option<usize>,
    max_stage_concurrency: Option<usize>,
    invocation_timeout: Option<u64>,
    work_dir: Option<String>,
    local_executors: Option<usize>,
    function_count: Option<usize>,
    /// A size, as on the command line ("256MiB").
    burst_above: Option<String>,
    prefer: Option<PreferArg>,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
            context: format!("cannot read config file {}", path.display()),
            source,
        })?;
        toml::from_str(&text).map_err(|e| {
            // toml's message spans lines (a snippet of the file): keep its first.
            let message = e.to_string();
            let place = message
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("TOML parse error at ")
                .to_string();
            let detail = message
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with("TOML") && !l.contains('|'))
                .unwrap_or_default()
                .to_string();
            CliError::InvalidArgument(format!("config file {}, {place}: {detail}", path.display()))
        })
    }
}

/// The settings with flags, environment and file merged.
struct Settings {
    listen: String,
    flight_listen: Option<String>,
    data_dir: PathBuf,
    tokens: Vec<String>,
    principals: Vec<PrincipalFile>,
    metrics: MetricsAccess,
    max_running: usize,
    exchange: ExchangeMode,
    trace_url: Option<String>,
    allow: Vec<String>,
    retain_jobs: Option<Duration>,
    /// Flags over the config file's `[limits]`.
    limits: LimitArgs,
    backend: BackendArgs,
    prices: Prices,
}

impl std::fmt::Debug for Settings {
    /// Tokens are counted, never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("tokens", &format_args!("{} (hidden)", self.tokens.len()))
            .field("max_running", &self.max_running)
            .field("allow", &self.allow)
            .field("retain_jobs", &self.retain_jobs)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// `--retain-jobs`: a duration, or `forever`.
fn parse_retention(text: Option<String>) -> Result<Option<Duration>> {
    match text.as_deref().map(str::trim) {
        None => Ok(Some(DEFAULT_RETENTION)),
        Some("forever") => Ok(None),
        Some(text) => units::parse_duration(text)
            .map(Some)
            .map_err(|e| CliError::InvalidArgument(format!("--retain-jobs: {e} (or 'forever')"))),
    }
}

impl Settings {
    fn resolve(args: ServeArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        };
        let data_dir = args.data_dir.or(file.data_dir).ok_or_else(|| {
            CliError::InvalidArgument(
                "give --data-dir DIR (or SQUALL_DATA_DIR, or data_dir in the config file)".into(),
            )
        })?;
        let mut tokens = args.tokens;
        if let Ok(more) = std::env::var("SQUALL_TOKENS") {
            tokens.extend(more.split(',').map(str::to_string));
        }
        tokens.extend(file.tokens);
        let tokens = tokens
            .into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        let metrics = match (
            args.metrics_token.or(file.metrics_token),
            args.metrics_private || file.metrics_private,
        ) {
            (Some(token), _) if !token.trim().is_empty() => {
                MetricsAccess::Token(token.trim().to_string())
            }
            (_, true) => MetricsAccess::ApiTokens,
            _ => MetricsAccess::Open,
        };
        let flags = args.backend;
        let from_file = file.backend;
        let mut backend = BackendArgs {
            backend: flags.backend.or(from_file.kind),
            executors: flags.executors.or(from_file.executors),
            function: flags.function.or(from_file.function),
            qualifier: flags.qualifier.or(from_file.qualifier),
            memory_qualifier: if flags.memory_qualifier.is_empty() {
                from_file.memory_qualifiers
            } else {
                flags.memory_qualifier
            },
            lambda_endpoint: flags.lambda_endpoint.or(from_file.lambda_endpoint),
            max_concurrency: flags.max_concurrency.or(from_file.max_concurrency),
            max_stage_concurrency: flags
                .max_stage_concurrency
                .or(from_file.max_stage_concurrency),
            invocation_timeout: flags.invocation_timeout.or(from_file.invocation_timeout),
            work_dir: flags.work_dir.or(from_file.work_dir),
            local_executors: flags.local_executors.or(from_file.local_executors),
            function_count: flags.function_count.or(from_file.function_count),
            burst_above: match (flags.burst_above, from_file.burst_above) {
                (Some(bytes), _) => Some(bytes),
                (None, Some(size)) => Some(super::units::parse_size(&size).map_err(|e| {
                    CliError::InvalidArgument(format!("config file: backend.burst_above: {e}"))
                })?),
                (None, None) => None,
            },
            prefer: flags.prefer.or(from_file.prefer),
        };
        if backend.work_dir.is_none() {
            backend.work_dir = Some(data_dir.join("work").to_string_lossy().to_string());
        }
        let mut allow = args.allow;
        if let Ok(more) = std::env::var("SQUALL_ALLOW") {
            allow.extend(more.split(',').map(str::to_string));
        }
        allow.extend(file.allow);
        allow.retain(|a| !a.trim().is_empty());
        Ok(Self {
            allow,
            retain_jobs: parse_retention(args.retain_jobs.or(file.retain_jobs))?,
            limits: args.limits.over(file.limits),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.into()),
            flight_listen: args.flight_listen.or(file.flight_listen),
            data_dir,
            tokens,
            principals: file.principals,
            metrics,
            max_running: args
                .max_running
                .or(file.max_running)
                .unwrap_or(DEFAULT_MAX_RUNNING),
            exchange: args.exchange.or(file.exchange).unwrap_or_default(),
            trace_url: check_trace_url(args.trace_url.or(file.trace_url))?,
            backend,
            prices: file.prices,
        })
    }
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let mut settings = Settings::resolve(args)?;
    // Every setting is checked before anything is written to disk.
    if settings.tokens.is_empty() && settings.principals.is_empty() {
        return Err(CliError::InvalidArgument(
            "the service needs at least one API token (--token, SQUALL_TOKENS, or \
             [[principals]] in the config file)"
                .into(),
        ));
    }
    settings.prices.validate()?;
    let executors = match settings.backend.kind() {
        BackendKind::Local | BackendKind::Auto => Some(settings.backend.parallelism()),
        BackendKind::Lambda => None,
    };
    let memory = settings.limits.task_memory(executors)?;
    let mut engine = settings.backend.engine_within(memory.server).await?;
    engine.prices = settings.prices.clone();
    if engine.local_work_root.is_some() {
        // Jobs that stay wholly here keep their files beside the job store,
        // where a restarted server resumes them.
        let local = settings.data_dir.join("work-local");
        engine.local_work_root = Some(
            squall_engine::tables::to_url(&local.to_string_lossy())?
                .as_str()
                .trim_end_matches('/')
                .to_string(),
        );
    }
    let Bounds {
        limits,
        http,
        planning,
    } = settings
        .limits
        .resolve(Limits::for_backend(engine.backend.max_concurrency()))?;
    let engine = engine.with_planning(planning)?;
    let (config, allowed) = service_config(&mut settings, &engine, limits, http, &memory)?;
    // Every setting is checked before anything is written to disk.
    config.validate()?;
    std::fs::create_dir_all(&settings.data_dir).map_err(CliError::io(format!(
        "cannot create {}",
        settings.data_dir.display()
    )))?;
    // One server per data dir: held until the process ends.
    let _lock = lock_data_dir(&settings.data_dir)?;
    let store = JobStore::open(&settings.data_dir.join("squall.db"))?;
    let service = Service::new(engine, Arc::new(store), config)?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(CliError::io(format!(
            "cannot listen on {}",
            settings.listen
        )))?;
    let dispatcher = service.start();
    eprintln!(
        "squall serve: listening on http://{} (jobs in {}, {} backend; callers may use {})",
        settings.listen,
        settings.data_dir.join("squall.db").display(),
        match settings.backend.kind() {
            BackendKind::Local => "local",
            BackendKind::Lambda => "lambda",
            BackendKind::Auto => "auto (in-process and lambda)",
        },
        if allowed.is_empty() {
            "no tables: see --allow".to_string()
        } else {
            allowed.join(", ")
        }
    );
    // One stop signal for both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        let _ = stop.send(true);
    });
    let when_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let flight = match &settings.flight_listen {
        Some(address) => {
            Some(start_flight(address, &service, when_stopped(stopped.clone())).await?)
        }
        None => None,
    };
    let served = serve_http(
        listener,
        router(service.clone()),
        http,
        when_stopped(stopped),
    )
    .await;
    if let Some(flight) = flight {
        let _ = flight.await;
    }
    eprintln!("squall serve: stopping; running jobs resume when a server starts on this data dir");
    service.shutdown(SHUTDOWN_WAIT).await;
    dispatcher.abort();
    served.map_err(CliError::io("the HTTP server stopped"))
}

/// Serves Arrow Flight SQL on `address` until `shutdown` resolves.
async fn start_flight(
    address: &str,
    service: &Arc<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(CliError::io(format!("cannot listen on {address}")))?;
    eprintln!("squall serve: Arrow Flight SQL on grpc://{address}");
    let service = service.clone();
    Ok(tokio::spawn(async move {
        if let Err(e) = squall_service::flight::serve_flight(listener, service, shutdown).await {
            tracing::error!("the Flight SQL server stopped: {e}");
        }
    }))
}

/// The service's configuration from the settings (its tokens and principals
/// taken out of them), and the URL prefixes callers may use.
fn service_config(
    settings: &mut Settings,
    engine: &Engine,
    limits: Limits,
    http: HttpLimits,
    memory: &TaskMemory,
) -> Result<(ServiceConfig, Vec<String>)> {
    let results_root = format!("{}/results", engine.work_root);
    let data_dir = std::path::absolute(&settings.data_dir).map_err(CliError::io(format!(
        "cannot resolve {}",
        settings.data_dir.display()
    )))?;
    // Callers may name the allowed prefixes, write results, and never touch
    // the server's own folders (its store, its work files).
    let deny = [
        data_dir.to_string_lossy().to_string(),
        engine.work_root.clone(),
    ];
    let access = AccessPolicy::new(&settings.allow, std::slice::from_ref(&results_root), &deny)?;
    let folders = ServerFolders {
        results_root: &results_root,
        deny: &deny,
    };
    let principals = std::mem::take(&mut settings.principals)
        .into_iter()
        .map(|p| p.principal(&folders))
        .collect::<Result<Vec<_>>>()?;
    let mut config = ServiceConfig::new(
        std::mem::take(&mut settings.tokens),
        results_root.clone(),
        engine,
    );
    config.principals.extend(principals);
    config.metrics = settings.metrics.clone();
    config.max_running = settings.max_running;
    config.exchange = settings.exchange;
    config.trace_url = settings.trace_url.clone();
    config.shuffle_partitions = settings.backend.parallelism();
    config.max_stage_concurrency = settings.backend.max_stage_concurrency;
    config.limits = limits;
    config.retain_jobs = settings.retain_jobs;
    config.http = http;
    config.task_memory = memory.first;
    config.task_memory_max = memory.max;
    let allowed = access.allowed();
    config.access = Arc::new(access);
    Ok((config, allowed))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Takes `DATA_DIR/squall.lock` for this process (an exclusive lock the
/// system drops when the process ends, however it ends) and writes our PID in
/// it; refuses if another process holds it, naming that process.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = data_dir.join("squall.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(CliError::io(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(CliError::DataDirInUse {
                dir: data_dir.display().to_string(),
                holder: holder.trim().to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(CliError::Io {
                context: format!("cannot lock {}", path.display()),
                source,
            });
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(CliError::io(format!("cannot write {}", path.display())))?;
    Ok(file)
}

/// A price table from a TOML file with the keys of the config's `[prices]`
/// (those left out keep their defaults), checked.
pub fn read_prices(path: &Path) -> Result<Prices> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        context: format!("cannot read price table {}", path.display()),
        source,
    })?;
    let prices: Prices = toml::from_str(&text).map_err(|e| {
        let first = e.to_string().lines().last().unwrap_or_default().to_string();
        CliError::InvalidArgument(format!("price table {}: {first}", path.display()))
    })?;
    prices.validate()?;
    Ok(prices)
}

/// A `--trace-url` template: an http(s) URL with `{trace_id}` in it.
fn check_trace_url(template: Option<String>) -> Result<Option<String>> {
    let Some(template) = template else {
        return Ok(None);
    };
    let web = template.starts_with("http://") || template.starts_with("https://");
    if !web || !template.contains("{trace_id}") || template.len() > 2048 {
        return Err(CliError::InvalidArgument(format!(
            "--trace-url must be an http(s) URL with {{trace_id}} in it \
             (e.g. http://jaeger:16686/trace/{{trace_id}}), not '{template}'"
        )));
    }
    Ok(Some(template))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_strictly() {
        let file: ConfigFile = toml::from_str(
            "listen = \"0.0.0.0:9\"\ntokens = [\"a\"]\n[backend]\nkind = \"lambda\"\nfunction = \"f\"\n",
        )
        .unwrap();
        assert_eq!(file.backend.kind, Some(BackendKind::Lambda));
        assert_eq!(file.tokens, ["a"]);
        let unknown = toml::from_str::<ConfigFile>("listen = \"x\"\nmax_runing = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("max_runing"), "{unknown}");
        let typed = toml::from_str::<ConfigFile>("max_running = \"many\"\n").unwrap_err();
        assert!(typed.to_string().contains("max_running"), "{typed}");
        let kind = toml::from_str::<ConfigFile>("[backend]\nkind = \"k8s\"\n").unwrap_err();
        assert!(kind.to_string().contains("k8s"), "{kind}");
    }
}
