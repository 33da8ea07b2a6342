//! The `squall` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use squall_executor::telemetry::{self, Traces};

#[tokio::main]
async fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of stdout goes
    // away (`squall jobs | head`) instead of panicking in println!.
    // SAFETY: setting a signal disposition before any other thread uses signals.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    // Spans go to the OTLP endpoint the OTEL_* variables name, if any.
    let telemetry = telemetry::init("warn", args.log_format, "squall", Traces::Start);
    let ran = cli::run(args).await;
    telemetry.shutdown().await;
    match ran {
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
