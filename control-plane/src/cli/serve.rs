//! `squall serve`: the HTTP job API on the chosen backend, jobs kept in
//! `DATA_DIR/squall.db`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use squall_control_plane::service::{JobStore, Service, ServiceConfig, router};
use squall_control_plane::{Result, SquallError};

use super::backend::BackendArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Folder for the job store (squall.db) and, on the local backend, work files and results.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// An API token clients send as `Authorization: Bearer TOKEN` (repeatable);
    /// SQUALL_TOKENS adds comma-separated ones.
    #[arg(long = "token", value_name = "TOKEN")]
    tokens: Vec<String>,
    /// Jobs running at once; later ones wait in submission order.
    #[arg(long, default_value_t = 4)]
    max_running: usize,
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn serve(mut args: ServeArgs) -> Result<()> {
    let io = |context: String| move |source| SquallError::Io { context, source };
    std::fs::create_dir_all(&args.data_dir)
        .map_err(io(format!("cannot create {}", args.data_dir.display())))?;
    if args.backend.work_dir.is_none() {
        args.backend.work_dir = Some(args.data_dir.join("work").to_string_lossy().to_string());
    }
    let mut tokens = args.tokens.clone();
    if let Ok(more) = std::env::var("SQUALL_TOKENS") {
        tokens.extend(
            more.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        );
    }
    let engine = args.backend.engine().await?;
    let store = JobStore::open(&args.data_dir.join("squall.db"))
        .map_err(|source| SquallError::Store { source })?;
    let config = ServiceConfig {
        tokens,
        max_running: args.max_running,
        results_root: format!("{}/results", engine.work_root),
        shuffle_partitions: args.backend.parallelism(),
    };
    let service = Service::new(engine, Arc::new(store), config)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(io(format!("cannot listen on {}", args.listen)))?;
    let dispatcher = service.start();
    eprintln!(
        "squall serve: listening on http://{} (jobs in {})",
        args.listen,
        args.data_dir.join("squall.db").display()
    );
    let served = axum::serve(listener, router(service)).await;
    dispatcher.abort();
    served.map_err(io("the HTTP server stopped".into()))
}
