//! The `squall` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of stdout goes
    // away (`squall jobs | head`) instead of panicking in println!.
    // SAFETY: setting a signal disposition before any other thread uses signals.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SQUALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: DataFusion's messages sometimes span several.
            let message: Vec<String> = e
                .to_string()
                .lines()
                .map(|l| l.trim().to_string())
                .collect();
            eprintln!("error: {}", message.join(" "));
            ExitCode::from(e.exit_code())
        }
    }
}
