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

use clap::Args;
use serde::Deserialize;
use squall_control_plane::service::{JobStore, Service, ServiceConfig, router};
use squall_control_plane::{Result, SquallError};

use super::backend::{BackendArgs, BackendKind};

/// Defaults of the settings below.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_RUNNING: usize = 4;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of settings (flags and environment variables win over it).
    #[arg(long, value_name = "FILE", env = "SQUALL_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SQUALL_LISTEN")]
    listen: Option<String>,
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
    #[command(flatten)]
    backend: BackendArgs,
}

/// The config file: the same settings as the flags.
///
/// ```toml
/// listen = "0.0.0.0:8080"
/// data_dir = "/var/lib/squall"
/// tokens = ["change-me"]
/// max_running = 8
///
/// [backend]
/// kind = "lambda"
/// function = "squall-executor"
/// work_dir = "s3://my-bucket/squall-work"
/// max_concurrency = 500
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    tokens: Vec<String>,
    max_running: Option<usize>,
    #[serde(default)]
    backend: BackendFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    kind: Option<BackendKind>,
    executors: Option<usize>,
    function: Option<String>,
    qualifier: Option<String>,
    lambda_endpoint: Option<String>,
    max_concurrency: Option<usize>,
    max_stage_concurrency: Option<usize>,
    invocation_timeout: Option<u64>,
    work_dir: Option<String>,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| SquallError::Io {
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
            SquallError::InvalidArgument(format!(
                "config file {}, {place}: {detail}",
                path.display()
            ))
        })
    }
}

/// The settings with flags, environment and file merged.
#[derive(Debug)]
struct Settings {
    listen: String,
    data_dir: PathBuf,
    tokens: Vec<String>,
    max_running: usize,
    backend: BackendArgs,
}

impl Settings {
    fn resolve(args: ServeArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        };
        let data_dir = args.data_dir.or(file.data_dir).ok_or_else(|| {
            SquallError::InvalidArgument(
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
        let flags = args.backend;
        let from_file = file.backend;
        let mut backend = BackendArgs {
            backend: flags.backend.or(from_file.kind),
            executors: flags.executors.or(from_file.executors),
            function: flags.function.or(from_file.function),
            qualifier: flags.qualifier.or(from_file.qualifier),
            lambda_endpoint: flags.lambda_endpoint.or(from_file.lambda_endpoint),
            max_concurrency: flags.max_concurrency.or(from_file.max_concurrency),
            max_stage_concurrency: flags
                .max_stage_concurrency
                .or(from_file.max_stage_concurrency),
            invocation_timeout: flags.invocation_timeout.or(from_file.invocation_timeout),
            work_dir: flags.work_dir.or(from_file.work_dir),
        };
        if backend.work_dir.is_none() {
            backend.work_dir = Some(data_dir.join("work").to_string_lossy().to_string());
        }
        Ok(Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.into()),
            data_dir,
            tokens,
            max_running: args
                .max_running
                .or(file.max_running)
                .unwrap_or(DEFAULT_MAX_RUNNING),
            backend,
        })
    }
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let settings = Settings::resolve(args)?;
    let io = |context: String| move |source| SquallError::Io { context, source };
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(io(format!("cannot create {}", settings.data_dir.display())))?;
    let engine = settings.backend.engine().await?;
    let store = JobStore::open(&settings.data_dir.join("squall.db"))
        .map_err(|source| SquallError::Store { source })?;
    let config = ServiceConfig {
        tokens: settings.tokens,
        max_running: settings.max_running,
        results_root: format!("{}/results", engine.work_root),
        shuffle_partitions: settings.backend.parallelism(),
    };
    let service = Service::new(engine, Arc::new(store), config)?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(io(format!("cannot listen on {}", settings.listen)))?;
    let dispatcher = service.start();
    eprintln!(
        "squall serve: listening on http://{} (jobs in {}, {} backend)",
        settings.listen,
        settings.data_dir.join("squall.db").display(),
        match settings.backend.kind() {
            BackendKind::Local => "local",
            BackendKind::Lambda => "lambda",
        }
    );
    let served = axum::serve(listener, router(service)).await;
    dispatcher.abort();
    served.map_err(io("the HTTP server stopped".into()))
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
