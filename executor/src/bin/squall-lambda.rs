//! `squall-lambda`: the executor as an AWS Lambda function (provided.al2023).
//!
//! Everything is built once per cold start from the environment: object stores
//! (S3 from the standard AWS variables), the spill directory, the memory cap from
//! the function's configured memory. Each invocation is one task attempt; see
//! `squall_executor::lambda` for the payloads.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use squall_executor::StoreRegistry;
use squall_executor::lambda::{
    FunctionConfig, Invocation, InvocationError, InvocationResponse, LambdaExecutor,
    check_runtime_variables,
};
use squall_executor::telemetry::{self, LogFormat, Traces};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Logs as SQUALL_LOG_FORMAT (or the function's own log format) says;
    // spans to the OTLP endpoint the OTEL_* variables name, if one is set.
    let format = LogFormat::from_env().unwrap_or_else(|e| {
        eprintln!("error: SQUALL_LOG_FORMAT: {e}");
        std::process::exit(2);
    });
    let telemetry = telemetry::init("info", format, "squall-executor", Traces::Continue);
    if let Err(e) = check_runtime_variables(|name| std::env::var(name).ok()) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let config = FunctionConfig::from_env()?;
    let executor = LambdaExecutor::new(Arc::new(StoreRegistry::new()), config);
    let (executor, telemetry) = (&executor, &telemetry);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Invocation>| async move {
            // The error's Lambda `errorType` says whether a retry can help.
            let response: Result<InvocationResponse, InvocationError> =
                executor.handle(event.payload).await;
            // The process may be frozen once it answers: its spans go first.
            telemetry.flush().await;
            response
        },
    ))
    .await
}
